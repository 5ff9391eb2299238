//! Resources warren-local serves itself, on its proxy port, to plain HTTP requests whose target
//! is a path (origin-form, `GET /proxy.pac`) rather than a URL to fetch through the tunnel.
//! Such requests need no proxy login, so nothing served here may be secret.
//!
//! ```text
//! /proxy.pac   application/x-ns-proxy-autoconfig   FindProxyForURL from local.routes
//! other        400 (a path alone is not a proxy request)
//! ```

use std::net::SocketAddr;
use warren_common::proto::Encode;

use warren_common::config::local_routes::LocalAction;
use warren_common::pac::{self, PacAction};
use warren_common::proto::http::{RequestHead, ResponseHead};
use warren_common::route::Router;

use super::response::canned;

/// The PAC file's content type (what browsers expect).
pub const PAC_CONTENT_TYPE: &str = "application/x-ns-proxy-autoconfig";

/// The complete response (closing the connection) to a request for `path` (with any query) on
/// the proxy itself. `listen` is the address the client reached us on, which the PAC names as
/// the proxy; a HEAD request gets the head alone.
pub fn answer(head: &RequestHead, path: &str, router: &Router<LocalAction>, listen: SocketAddr) -> Vec<u8> {
    let Some((content_type, body)) = serve(path, router, listen) else {
        tracing::debug!(%path, "HTTP request for a path, not a URL: refused");
        let message = "this is a proxy: ask for an absolute URL (GET http://host/path) or use CONNECT";
        return canned(400, "Bad Request", message, &[]);
    };
    let mut response = ResponseHead::new(200, "OK");
    response
        .headers
        .push("Date", httpdate::fmt_http_date(std::time::SystemTime::now()));
    response.headers.push("Content-Type", content_type);
    response.headers.push("Content-Length", body.len().to_string());
    response.headers.push("Connection", "close");
    let mut out = Vec::with_capacity(256 + body.len());
    response.encode(&mut out);
    if head.method != "HEAD" {
        out.extend_from_slice(&body);
    }
    out
}

/// The resource at `path` as (content type, body), or `None`.
fn serve(path: &str, router: &Router<LocalAction>, listen: SocketAddr) -> Option<(&'static str, Vec<u8>)> {
    let path = path.split_once('?').map_or(path, |(p, _)| p);
    match path {
        "/proxy.pac" => Some((PAC_CONTENT_TYPE, proxy_pac(router, listen).into_bytes())),
        _ => None,
    }
}

/// The PAC file: `direct` rules go direct; `proxy` and `block` rules go to the local, which
/// applies its full rules again (so `block` is refused there and the PAC never widens access).
fn proxy_pac(router: &Router<LocalAction>, listen: SocketAddr) -> String {
    let classify = |action: &LocalAction| match action {
        LocalAction::Direct => PacAction::Direct,
        LocalAction::Block | LocalAction::Proxy(_) => PacAction::Local,
    };
    pac::generate(router, classify, &listen.to_string())
}
