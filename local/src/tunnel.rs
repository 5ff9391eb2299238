//! Opening a tunnel connection to warren-remote for one request, and explaining failures in
//! the log in terms a user can act on.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::net::TcpStream;
use warren_common::config::LocalConfig;
use warren_common::proto::address::Address;
use warren_common::proto::header::{RequestHeader, TIMESTAMP_WINDOW_SECS};
use warren_common::proto::socks5::ReplyCode;
use warren_common::stream::EncryptedStream;
use warren_common::time::unix_now;
use warren_common::tunnel::{HandshakeError, PendingTunnel};

/// Why a tunnel did not open.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// The remote's address did not resolve or refused/failed the TCP connection.
    #[error("cannot reach the remote: {0}")]
    Unreachable(std::io::Error),
    /// The tunnel handshake failed.
    #[error("{0}")]
    Handshake(#[from] HandshakeError),
    /// The remote answered with a failure status.
    #[error("remote answered: {}", .0.describe())]
    Refused(ReplyCode),
}

impl OpenError {
    pub fn reply_code(&self) -> ReplyCode {
        match self {
            OpenError::Refused(code) => *code,
            _ => ReplyCode::GeneralFailure,
        }
    }

    pub fn log(&self, peer: &SocketAddr, target: &Address, remote: &str) {
        match self {
            OpenError::Refused(code) => {
                tracing::info!(%peer, %target, reply = *code as u8, "refused by the remote: {}", code.describe());
            }
            OpenError::Handshake(HandshakeError::Closed) => {
                tracing::warn!(
                    %peer, %target, %remote,
                    "the remote closed the connection without answering: it stays silent towards requests it \
                     cannot accept, so a wrong key or clocks more than {TIMESTAMP_WINDOW_SECS} s apart are the \
                     likely causes"
                );
            }
            OpenError::Handshake(HandshakeError::Unauthenticated) => {
                tracing::warn!(%peer, %target, %remote, "the remote's answer failed authentication: the two ends use different keys");
            }
            other => tracing::warn!(%peer, %target, %remote, "tunnel failed: {other}"),
        }
    }
}

/// Logs the hint for a remote that never answered.
pub fn log_silent_remote(peer: &SocketAddr, target: &Address, remote: &str, waited: Duration) {
    tracing::warn!(
        %peer, %target, %remote,
        "the remote did not answer within {:.1} s: it stays silent towards requests it cannot accept, so a \
         wrong key or clocks more than {TIMESTAMP_WINDOW_SECS} s apart are the likely causes (or the link is down)",
        waited.as_secs_f64()
    );
}

/// Dials the remote, sends the request, and waits for its answer. On success returns the bound
/// address for the SOCKS5 reply and the open tunnel.
pub async fn open(
    config: &LocalConfig,
    target: &Address,
    initial: &[u8],
) -> Result<(Address, EncryptedStream<TcpStream>), OpenError> {
    open_request(config, RequestHeader::connect(target.clone(), unix_now()), initial).await
}

/// [`open`] for any tunnel command (BIND, UDP-over-TCP).
pub async fn open_request(
    config: &LocalConfig,
    header: RequestHeader,
    initial: &[u8],
) -> Result<(Address, EncryptedStream<TcpStream>), OpenError> {
    let stream = TcpStream::connect(&config.remote)
        .await
        .map_err(OpenError::Unreachable)?;
    warren_common::net::tune(&stream);
    let pending = PendingTunnel::send_request(stream, &config.key, &header, initial).await?;
    let (response, tunnel) = pending.read_response().await?;
    let drift = warren_common::time::skew(response.timestamp, unix_now());
    if drift.unsigned_abs() > u128::from(TIMESTAMP_WINDOW_SECS / 2) {
        tracing::warn!(
            remote = %config.remote,
            "the remote's clock is {drift:+} s off ours; beyond ±{TIMESTAMP_WINDOW_SECS} s it will refuse every \
             request. Synchronise both clocks (NTP)"
        );
    }
    if response.status != ReplyCode::Succeeded {
        return Err(OpenError::Refused(response.status));
    }
    Ok((response.bound, tunnel))
}
