//! Reaching one warren-remote: the TCP connection, the tunnel handshake over any stream (that
//! connection, or the previous hop's tunnel in a chain), and [`OpenError`], the errors of
//! opening an outbound, explained in the log in terms a user can act on.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use warren_common::config::local_routes::Endpoint;
use warren_common::proto::address::Address;
use warren_common::proto::header::{RequestHeader, TIMESTAMP_WINDOW_SECS};
use warren_common::proto::status::Status;
use warren_common::stream::EncryptedStream;
use warren_common::time::unix_now;
use warren_common::tunnel::{HandshakeError, PendingTunnel};

use super::upstream::UpstreamError;

/// Why no outbound opened for a request. Strings name the remote or chain concerned.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// The routing rules block the target.
    #[error("blocked by local.routes")]
    Blocked,
    /// The route cannot carry this command (BIND or UDP on a direct route or to a SOCKS5 upstream).
    #[error("{0}")]
    Unsupported(&'static str),
    /// A direct connection (route `direct`) failed.
    #[error("direct connection failed: {}", .0.describe())]
    Direct(Status),
    /// The remote's address did not resolve or refused/failed the TCP connection.
    #[error("cannot reach remote {0}: {1}")]
    Unreachable(String, std::io::Error),
    /// The tunnel handshake with a remote failed.
    #[error("tunnel to {0} failed: {1}")]
    Handshake(String, HandshakeError),
    /// A remote answered with a failure status for the target.
    #[error("{0} answered: {desc}", desc = .1.describe())]
    Refused(String, Status),
    /// A chain broke before its last hop answered about the target.
    #[error("chain {0}, hop {1}: {2}")]
    Chain(String, usize, Box<OpenError>),
    /// The upstream SOCKS5 server at the end of a chain failed or refused.
    #[error("upstream SOCKS5 server of chain {0}: {1}")]
    Upstream(String, UpstreamError),
    /// No answer within `local.connect_timeout`.
    #[error("{0} did not answer within {1:?}")]
    TimedOut(String, Duration),
}

impl OpenError {
    /// The request's outcome: the target's verdict when one was heard, general failure when
    /// the way there broke. Each front end answers it in its own protocol.
    pub fn status(&self) -> Status {
        match self {
            OpenError::Blocked => Status::NotAllowed,
            OpenError::Unsupported(_) => Status::CommandNotSupported,
            OpenError::Direct(code) | OpenError::Refused(_, code) => *code,
            OpenError::Upstream(_, UpstreamError::Replied(code)) => Status::from(*code),
            _ => Status::GeneralFailure,
        }
    }

    /// True when the failure is an answer about the target (trying another remote would not
    /// help); false when the way there failed, so the next remote of a failover list is tried.
    pub fn is_about_target(&self) -> bool {
        matches!(
            self,
            OpenError::Blocked
                | OpenError::Unsupported(_)
                | OpenError::Direct(_)
                | OpenError::Refused(..)
                | OpenError::Upstream(_, UpstreamError::Replied(_))
        )
    }

    /// Whether the failure is the deadline passing (HTTP answers 504 instead of 502).
    pub fn is_timeout(&self) -> bool {
        matches!(self, OpenError::TimedOut(..))
    }

    /// Logs the failure once, at the level it deserves: a refusal is information (`info`), a
    /// way out that broke is a problem to fix (`warn`, with the likely causes). The client's
    /// address is `peer`.
    pub fn log(&self, peer: SocketAddr, target: &Address) {
        let mut inner = self;
        while let OpenError::Chain(_, _, e) = inner {
            inner = e;
        }
        match inner {
            OpenError::Blocked | OpenError::Unsupported(_) | OpenError::Direct(_) | OpenError::Refused(..) => {
                tracing::info!(%peer, %target, reply = self.status().socks5() as u8, "refused: {self}");
            }
            OpenError::Upstream(_, UpstreamError::Replied(_)) => {
                tracing::info!(%peer, %target, reply = self.status().socks5() as u8, "refused: {self}");
            }
            OpenError::Handshake(_, HandshakeError::Closed) => {
                tracing::warn!(
                    %peer, %target,
                    "{self}: the remote closed the connection without answering: it stays silent towards requests \
                     it cannot accept, so a wrong key or clocks more than {TIMESTAMP_WINDOW_SECS} s apart are the \
                     likely causes"
                );
            }
            OpenError::Handshake(_, HandshakeError::Unauthenticated) => {
                tracing::warn!(%peer, %target, "{self}: the remote's answer failed authentication: the two ends use different keys");
            }
            OpenError::TimedOut(..) => {
                tracing::warn!(
                    %peer, %target,
                    "{self}: a remote stays silent towards requests it cannot accept, so a wrong key or clocks \
                     more than {TIMESTAMP_WINDOW_SECS} s apart are the likely causes (or the link is down)"
                );
            }
            _ => tracing::warn!(%peer, %target, "{self}"),
        }
    }
}

/// Opens the TCP connection to `remote` (resolving its name now, so DNS changes are followed).
pub async fn dial(remote: &Endpoint) -> Result<TcpStream, OpenError> {
    let stream = TcpStream::connect(&remote.address)
        .await
        .map_err(|e| OpenError::Unreachable(remote.name.clone(), e))?;
    warren_common::net::tune(&stream);
    Ok(stream)
}

/// Runs the tunnel handshake with `remote` over `stream`: sends `header` (with `initial` in
/// the same chunk) and waits for the answer. Returns the remote's status, its bound address and
/// the tunnel.
pub async fn handshake<S: AsyncRead + AsyncWrite + Unpin>(
    stream: S,
    remote: &Endpoint,
    header: &RequestHeader,
    initial: &[u8],
) -> Result<(Status, Address, EncryptedStream<S>), OpenError> {
    let failed = |e| OpenError::Handshake(remote.name.clone(), e);
    let pending = match &remote.user_key {
        Some(user) => PendingTunnel::send_request_as_user(stream, &remote.key, user, header, initial).await,
        None => PendingTunnel::send_request(stream, &remote.key, header, initial).await,
    }
    .map_err(failed)?;
    let (response, tunnel) = pending.read_response().await.map_err(failed)?;
    let drift = warren_common::time::skew(response.timestamp, unix_now());
    if drift.unsigned_abs() > u128::from(TIMESTAMP_WINDOW_SECS / 2) {
        tracing::warn!(
            remote = %remote.name,
            "the remote's clock is {drift:+} s off ours; beyond ±{TIMESTAMP_WINDOW_SECS} s it will refuse every \
             request. Synchronise both clocks (NTP)"
        );
    }
    Ok((response.status, response.bound, tunnel))
}
