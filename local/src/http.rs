//! The HTTP proxy on the shared port: `CONNECT host:port` tunnels, absolute-form requests
//! (`GET http://host/path`) are forwarded with keep-alive (see [`crate::forward`]), and a plain
//! path (`GET /proxy.pac`) goes to [`crate::resources`]. Message heads are parsed by
//! `warren_common::proto::http`; this module reads them under deadlines and answers failures
//! with a status and a one-line body:
//!
//! ```text
//! 400 malformed request, or a path the proxy does not serve     (then close)
//! 403 the remote's ACL denies the target
//! 407 local.users is set and Proxy-Authorization: Basic is missing or wrong
//! 408 the request head did not arrive within local.handshake_timeout
//! 431 request head over 64 KiB or 128 fields
//! 502 refused, unreachable, no such name, bad answer from the origin, remote unreachable
//! 504 the target (remote.connect_timeout) or the remote (local.connect_timeout) timed out
//! ```

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use warren_common::config::{LocalConfig, User};
use warren_common::proto::address::Address;
use warren_common::proto::http::{basic_credentials, RequestHead, ResponseHead, Target, FIELD_HEAD_SIZE};
use warren_common::proto::socks5::{ReplyCode, UserPassRequest};
use warren_common::proto::{decode_prefix, Decode, DecodeError};

use crate::connect::{open_watching, Connection, OpenFailure};
use crate::forward::{forward, Next, Upstream};

/// How long a refused client gets to read the answer before the socket is dropped.
const LINGER: Duration = Duration::from_secs(2);
/// Bytes asked of the socket per read.
pub const READ_SIZE: usize = 64 * 1024;

/// Why an HTTP message (head or body) was not read or forwarded.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    /// A socket failed.
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// The peer closed before the message was complete.
    #[error("connection closed mid-message")]
    Closed,
    /// Bytes that are not valid HTTP/1.x.
    #[error("malformed message: {0}")]
    Malformed(DecodeError),
    /// The phase's deadline passed.
    #[error("timed out")]
    TimedOut,
}

/// Runs `fut` under `limit`; running out is [`HttpError::TimedOut`].
pub async fn within<T>(limit: Duration, fut: impl Future<Output = Result<T, HttpError>>) -> Result<T, HttpError> {
    tokio::time::timeout(limit, fut)
        .await
        .unwrap_or(Err(HttpError::TimedOut))
}

/// Reads one message head, pulling bytes until it is complete; bytes after it stay in `buf`.
pub async fn read_head<T: Decode, R: AsyncRead + Unpin>(reader: &mut R, buf: &mut BytesMut) -> Result<T, HttpError> {
    loop {
        match decode_prefix::<T>(buf) {
            Ok((head, used)) => {
                buf.advance(used);
                return Ok(head);
            }
            Err(DecodeError::Incomplete) => {}
            Err(e) => return Err(HttpError::Malformed(e)),
        }
        buf.reserve(READ_SIZE);
        if reader.read_buf(buf).await? == 0 {
            return Err(HttpError::Closed);
        }
    }
}

/// A complete response warren-local makes itself: `status reason`, a one-line plain-text body,
/// and `Connection: close`.
pub fn canned(status: u16, reason: &str, message: &str, extra: &[(&str, &str)]) -> Vec<u8> {
    let body = format!("{status} {reason}: {message}\n");
    let mut head = ResponseHead::new(status, reason);
    head.headers.push("Content-Type", "text/plain; charset=utf-8");
    head.headers.push("Content-Length", body.len().to_string());
    head.headers.push("Connection", "close");
    for (name, value) in extra {
        head.headers.push(name, *value);
    }
    let mut out = Vec::with_capacity(256);
    head.encode(&mut out);
    out.extend_from_slice(body.as_bytes());
    out
}

/// The status for a tunnel that did not open.
pub fn failure_status(failure: &OpenFailure) -> (u16, &'static str) {
    match failure {
        OpenFailure::TimedOut => (504, "Gateway Timeout"),
        _ => match failure.reply_code() {
            ReplyCode::NotAllowed => (403, "Forbidden"),
            ReplyCode::TtlExpired => (504, "Gateway Timeout"),
            _ => (502, "Bad Gateway"),
        },
    }
}

/// The one-line explanation of a tunnel failure for a response body.
pub fn failure_message(failure: &OpenFailure) -> String {
    match failure {
        OpenFailure::Failed(crate::tunnel::OpenError::Blocked) => {
            "blocked by warren-local's routing rules (local.routes)".to_owned()
        }
        OpenFailure::Failed(e) if e.is_about_target() => e.reply_code().describe().to_owned(),
        OpenFailure::Failed(_) => "the tunnel to warren-remote failed (see warren-local's log)".to_owned(),
        OpenFailure::TimedOut => "warren-remote did not answer in time (see warren-local's log)".to_owned(),
        OpenFailure::ClientLeft => failure.to_string(),
    }
}

/// Sends `answer`, half-closes, and reads (discarding) what the client still sends for a
/// moment, so the answer is not lost to a reset caused by unread request bytes.
pub async fn answer_and_close(client: &mut TcpStream, answer: &[u8]) {
    let _ = tokio::time::timeout(LINGER, async {
        client.write_all(answer).await?;
        client.shutdown().await?;
        let mut sink = [0u8; 4096];
        while client.read(&mut sink).await? > 0 {}
        Ok::<(), std::io::Error>(())
    })
    .await;
}

/// Whether the request may use the proxy: always without users, else it must carry a Basic
/// credential for one of them.
fn authorized(users: &[User], head: &RequestHead) -> bool {
    if users.is_empty() {
        return true;
    }
    let Some((username, password)) = head.headers.get("proxy-authorization").and_then(basic_credentials) else {
        return false;
    };
    crate::socks5::check_login(users, &UserPassRequest { username, password })
}

/// Serves one HTTP client whose first byte was an upper-case letter.
pub async fn handle(mut client: TcpStream, peer: SocketAddr, config: Arc<LocalConfig>) {
    let mut buf = BytesMut::with_capacity(4096);
    let mut upstream: Option<Upstream> = None;
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
                tracing::debug!(%peer, "HTTP request refused: {e}");
                let (status, reason) = match e {
                    DecodeError::BadField(FIELD_HEAD_SIZE) => (431, "Request Header Fields Too Large"),
                    _ => (400, "Bad Request"),
                };
                answer_and_close(&mut client, &canned(status, reason, &e.to_string(), &[])).await;
                return;
            }
            Err(HttpError::TimedOut) if first || !buf.is_empty() => {
                tracing::debug!(%peer, "HTTP request head timed out");
                let answer = canned(408, "Request Timeout", "the request head did not arrive in time", &[]);
                answer_and_close(&mut client, &answer).await;
                return;
            }
            Err(e) => {
                tracing::debug!(%peer, "HTTP connection ends: {e}");
                return;
            }
        };
        first = false;
        let target = match head.parse_target() {
            Ok(target) => target,
            Err(e) => {
                tracing::debug!(%peer, method = %head.method, target = %head.target, "HTTP request refused: {e}");
                let answer = canned(400, "Bad Request", &format!("unsupported request target: {e}"), &[]);
                answer_and_close(&mut client, &answer).await;
                return;
            }
        };
        if !matches!(target, Target::Origin(_)) && !authorized(&config.users, &head) {
            tracing::info!(%peer, method = %head.method, "HTTP proxy request refused: missing or wrong Proxy-Authorization");
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
            Target::Origin(path) => return serve_resource(&mut client, &peer, &head, &path, &config).await,
            Target::Tunnel(target) => return tunnel(client, buf, peer, &config, target).await,
            Target::Forward {
                address,
                authority,
                path,
            } => {
                let request = crate::forward::Request {
                    head,
                    address,
                    authority,
                    path,
                };
                match forward(&mut client, &mut buf, &mut upstream, &config, &peer, request).await {
                    Next::KeepAlive => {}
                    Next::Close => return,
                }
            }
        }
    }
}

/// A request for a path on the proxy itself: the resource hook's answer, or 400.
async fn serve_resource(
    client: &mut TcpStream,
    peer: &SocketAddr,
    head: &RequestHead,
    path: &str,
    config: &LocalConfig,
) {
    let listen = client.local_addr().unwrap_or(config.listen);
    let Some((content_type, body)) = crate::resources::serve(path, config, listen) else {
        tracing::debug!(%peer, %path, "HTTP request for a path, not a URL: refused");
        let message = "this is a proxy: ask for an absolute URL (GET http://host/path) or use CONNECT";
        answer_and_close(client, &canned(400, "Bad Request", message, &[])).await;
        return;
    };
    let mut response = ResponseHead::new(200, "OK");
    response.headers.push("Content-Type", content_type);
    response.headers.push("Content-Length", body.len().to_string());
    response.headers.push("Connection", "close");
    let mut out = Vec::with_capacity(256 + body.len());
    response.encode(&mut out);
    if head.method != "HEAD" {
        out.extend_from_slice(&body);
    }
    answer_and_close(client, &out).await;
}

/// `CONNECT host:port`: open the tunnel, answer 200, relay.
async fn tunnel(mut client: TcpStream, mut buf: BytesMut, peer: SocketAddr, config: &LocalConfig, target: Address) {
    let started = Instant::now();
    let initial = buf.split();
    let mut early = BytesMut::new();
    let (_bound, tunnel) = match open_watching(&mut client, &mut early, config, &peer, &target, &initial).await {
        Ok(opened) => opened,
        Err(OpenFailure::ClientLeft) => return,
        Err(failure) => {
            let (status, reason) = failure_status(&failure);
            answer_and_close(&mut client, &canned(status, reason, &failure_message(&failure), &[])).await;
            return;
        }
    };
    if client
        .write_all(b"HTTP/1.1 200 Connection established\r\n\r\n")
        .await
        .is_err()
    {
        return;
    }
    let connection = Connection {
        peer,
        target: &target,
        protocol: "http-connect",
        started,
    };
    connection
        .relay_to_end(client, tunnel, early, initial.len(), config.timeouts.idle)
        .await;
}
