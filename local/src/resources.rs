//! Resources warren-local serves itself, on its proxy port, to plain HTTP requests whose target
//! is a path (origin-form, `GET /proxy.pac`) rather than a URL to fetch through the tunnel.
//! Such requests need no proxy login, so nothing served here may be secret.
//!
//! ```text
//! /proxy.pac   application/x-ns-proxy-autoconfig   FindProxyForURL from local.routes
//! ```

use std::net::SocketAddr;

use warren_common::config::local_routes::LocalAction;
use warren_common::config::LocalConfig;
use warren_common::pac::{self, PacAction};

/// The PAC file's content type (what browsers expect).
pub const PAC_CONTENT_TYPE: &str = "application/x-ns-proxy-autoconfig";

/// The resource at `path` (with any query) as (content type, body), or `None`: the client then
/// gets 400, since a path alone is not a proxy request. `listen` is the address the client
/// reached us on, which the PAC names as the proxy.
pub fn serve(path: &str, config: &LocalConfig, listen: SocketAddr) -> Option<(&'static str, Vec<u8>)> {
    let path = path.split_once('?').map_or(path, |(p, _)| p);
    match path {
        "/proxy.pac" => Some((PAC_CONTENT_TYPE, proxy_pac(config, listen).into_bytes())),
        _ => None,
    }
}

/// The PAC file: `direct` rules go direct; `proxy` and `block` rules go to the local, which
/// applies its full rules again (so `block` is refused there and the PAC never widens access).
pub fn proxy_pac(config: &LocalConfig, listen: SocketAddr) -> String {
    let classify = |action: &LocalAction| match action {
        LocalAction::Direct => PacAction::Direct,
        LocalAction::Block | LocalAction::Proxy(_) => PacAction::Local,
    };
    pac::generate(&config.routing.router, classify, &listen.to_string())
}
