//! The HTTP proxy front end: a client whose first byte was a letter or a line end. One request
//! head after another (keep-alive) is read under deadlines and sent to its room:
//!
//! ```text
//! CONNECT host:port          → connect.rs   the session opens, answers 200, relays (ends the loop)
//! GET http://host/path …     → forward.rs   forwarded with keep-alive, then the next head
//! GET /proxy.pac             → resource.rs  served by the proxy itself (then close)
//! OPTIONS *                  → rules.rs     answered by the proxy itself (then close)
//! ```
//!
//! rules.rs holds what RFC 9110/9112 ask of an intermediary (Host, framing, Max-Forwards, Via,
//! hop-by-hop fields); docs/HTTP.md is the table of those rules and their tests.
//!
//! Refusals (written with a lingering close, see `session::answer_and_close`):
//!
//! ```text
//! 400 malformed request, no or several Host fields, ambiguous framing, or a path the proxy
//!     does not serve
//! 414 request line over 64 KiB
//! 407 local.users is set and Proxy-Authorization: Basic is missing or wrong
//! 408 the request head did not arrive within local.handshake_timeout
//! 431 request head over 64 KiB or 128 fields
//! 403/502/504 the outbound did not open (response.rs has the table)
//! ```

mod connect;
mod forward;
mod resource;
mod response;
mod rules;
mod wire;

use bytes::BytesMut;
use tokio::net::TcpStream;
use warren_common::config::{LocalConfig, User};
use warren_common::proto::http::{
    basic_credentials, redact_userinfo, RequestHead, Target, FIELD_HEAD_SIZE, FIELD_TARGET_SIZE,
};
use warren_common::proto::DecodeError;

use self::forward::{Next, Upstream};
use self::response::canned;
use self::wire::{read_head, within, HttpError};
use crate::auth::check_login;
use crate::outbound::Outbounds;
use crate::session::answer_and_close;

/// Whether the request may use the proxy: always without users, else it must carry a Basic
/// credential for one of them.
fn authorized(users: &[User], head: &RequestHead) -> bool {
    if users.is_empty() {
        return true;
    }
    let Some((username, password)) = head.headers.get("proxy-authorization").and_then(basic_credentials) else {
        return false;
    };
    check_login(users, &username, &password)
}

/// Serves one HTTP client: request after request until one ends the connection; then the
/// tunnel of the last forwarded request, if still open, is closed with its end-of-stream chunk.
pub async fn serve(client: TcpStream, config: &LocalConfig, outbounds: &Outbounds) {
    let mut upstream: Option<Upstream> = None;
    serve_requests(client, config, outbounds, &mut upstream).await;
    forward::close(&mut upstream, outbounds.idle());
}

/// The request loop of [`serve`]; `upstream` is the tunnel kept open between requests.
async fn serve_requests(
    mut client: TcpStream,
    config: &LocalConfig,
    outbounds: &Outbounds,
    upstream: &mut Option<Upstream>,
) {
    let mut buf = BytesMut::with_capacity(4096);
    let mut first = true;
    loop {
        // The first head must arrive within the handshake timeout; later ones (keep-alive)
        // within the idle timeout.
        let wait = if first {
            config.timeouts.handshake
        } else {
            config.timeouts.idle
        };
        let head: RequestHead = match within(wait, read_head(&mut client, &mut buf)).await {
            Ok(head) => head,
            Err(HttpError::Malformed(e)) => {
                tracing::debug!("HTTP request refused: {e}");
                let (status, reason) = match e {
                    DecodeError::BadField(FIELD_HEAD_SIZE) => (431, "Request Header Fields Too Large"),
                    DecodeError::BadField(FIELD_TARGET_SIZE) => (414, "URI Too Long"),
                    _ => (400, "Bad Request"),
                };
                answer_and_close(&mut client, &canned(status, reason, &e.to_string(), &[])).await;
                return;
            }
            Err(HttpError::TimedOut) if first || !buf.is_empty() => {
                tracing::debug!("HTTP request head timed out");
                let answer = canned(408, "Request Timeout", "the request head did not arrive in time", &[]);
                answer_and_close(&mut client, &answer).await;
                return;
            }
            Err(e) => {
                tracing::debug!("HTTP connection ends: {e}");
                return;
            }
        };
        first = false;
        if let Err(refusal) = rules::check_host(&head) {
            tracing::debug!(method = %head.method, "HTTP request refused: {}", refusal.2);
            answer_and_close(&mut client, &rules::refusal(&refusal)).await;
            return;
        }
        let target = match head.parse_target() {
            Ok(target) => target,
            Err(e) => {
                // A target with userinfo is refused; its password must not reach the log.
                let shown = redact_userinfo(&head.target);
                tracing::debug!(method = %head.method, target = %shown, "HTTP request refused: {e}");
                let answer = canned(400, "Bad Request", &format!("unsupported request target: {e}"), &[]);
                answer_and_close(&mut client, &answer).await;
                return;
            }
        };
        if !matches!(target, Target::Origin(_)) && !authorized(&config.users, &head) {
            tracing::info!(peer = %outbounds.peer(), method = %head.method, "HTTP proxy request refused: missing or wrong Proxy-Authorization");
            let challenge = [("Proxy-Authenticate", "Basic realm=\"warren\"")];
            let answer = canned(
                407,
                "Proxy Authentication Required",
                "log in to use this proxy",
                &challenge,
            );
            answer_and_close(&mut client, &answer).await;
            return;
        }
        match target {
            Target::Asterisk => return answer_and_close(&mut client, &rules::options_asterisk()).await,
            Target::Origin(path) => {
                let listen = client.local_addr().unwrap_or(config.listen);
                let answer = resource::answer(&head, &path, &config.routing.router, listen);
                return answer_and_close(&mut client, &answer).await;
            }
            Target::Tunnel(target) => {
                forward::close(upstream, outbounds.idle());
                return connect::serve(client, buf, outbounds, target).await;
            }
            Target::Forward {
                address,
                authority,
                path,
            } => {
                let request = forward::Request {
                    head,
                    address,
                    authority,
                    path,
                };
                match forward::forward(&mut client, &mut buf, upstream, outbounds, request).await {
                    Next::KeepAlive => {}
                    Next::Close => return,
                }
            }
        }
    }
}
