//! A CONNECT from any front end (SOCKS5, SOCKS4, HTTP CONNECT and forwarding): opening the way
//! out while watching the client (a client that leaves abandons the attempt at once, and the
//! remote then abandons its outbound connect; bytes it sends meanwhile are kept for after the
//! reply), then the relay to the end and the connection's one log line.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use warren_common::config::LocalConfig;
use warren_common::proto::address::Address;
use warren_common::proto::header::RequestHeader;
use warren_common::proto::socks5::ReplyCode;
use warren_common::relay::relay;
use warren_common::time::unix_now;

use crate::outbound::{self, Outbound};
use crate::tunnel::OpenError;

/// Why no tunnel is open for a request (already logged when this is returned).
#[derive(Debug, thiserror::Error)]
pub enum OpenFailure {
    /// The client closed or failed while the tunnel was being opened; nothing to answer.
    #[error("client left before the tunnel opened")]
    ClientLeft,
    /// The route blocks the target, or the way there failed, or the target was refused.
    #[error("{0}")]
    Failed(#[from] OpenError),
    /// No answer within `local.connect_timeout`.
    #[error("the remote did not answer in time")]
    TimedOut,
}

impl OpenFailure {
    /// The SOCKS5-style code for this failure (the tunnel's status when the remote refused).
    pub fn reply_code(&self) -> ReplyCode {
        match self {
            OpenFailure::Failed(e) => e.reply_code(),
            _ => ReplyCode::GeneralFailure,
        }
    }
}

/// Opens the outbound to `target` (as routed) carrying `initial` first, within the connect timeout,
/// reading whatever the client sends meanwhile into `early` (up to the early-data limit).
/// Returns the remote's bound address and the open tunnel; failures are logged here.
pub async fn open_watching(
    client: &mut TcpStream,
    early: &mut BytesMut,
    config: &LocalConfig,
    peer: &SocketAddr,
    target: &Address,
    initial: &[u8],
) -> Result<(Address, Outbound), OpenFailure> {
    let open = outbound::open(config, RequestHeader::connect(target.clone(), unix_now()), initial);
    tokio::pin!(open);
    let limit = early.len() + crate::EARLY_DATA_LIMIT;
    let opened = loop {
        tokio::select! {
            result = &mut open => break result,
            read = client.read_buf(early), if early.len() < limit => match read {
                Ok(0) | Err(_) => {
                    tracing::info!(%peer, %target, "client left before the tunnel opened");
                    return Err(OpenFailure::ClientLeft);
                }
                Ok(_) => {}
            },
        }
    };
    match opened {
        Ok(opened) => Ok(opened),
        Err(failure) => {
            failure.log(peer, target);
            if failure.is_timeout() {
                Err(OpenFailure::TimedOut)
            } else {
                Err(OpenFailure::Failed(failure))
            }
        }
    }
}

/// One client's CONNECT, for the log line at its end.
pub struct Connection<'a> {
    pub peer: SocketAddr,
    pub target: &'a Address,
    /// "socks5", "socks4", "http-connect".
    pub protocol: &'static str,
    pub started: Instant,
}

impl Connection<'_> {
    /// After the success reply: the client's read-ahead goes into the tunnel, then the relay runs
    /// to its end and the connection is logged once. `sent_before` counts the client bytes that
    /// rode in the tunnel's first chunk.
    pub async fn relay_to_end(
        self,
        client: TcpStream,
        mut tunnel: Outbound,
        early: BytesMut,
        sent_before: usize,
        idle: Duration,
    ) {
        if !early.is_empty() && tunnel.write_all(&early).await.is_err() {
            return;
        }
        let sent_before = (sent_before + early.len()) as u64;
        drop(early);
        let outcome = relay(client, tunnel, idle).await;
        let Connection {
            peer,
            target,
            protocol,
            started,
        } = self;
        tracing::info!(
            %peer,
            %target,
            protocol,
            sent = outcome.sent + sent_before,
            received = outcome.received,
            duration_ms = started.elapsed().as_millis() as u64,
            end = %outcome.end,
            "connection finished"
        );
    }
}
