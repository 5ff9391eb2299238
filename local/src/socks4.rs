//! SOCKS4 and SOCKS4a clients on the shared port. Message formats live in
//! `warren_common::proto::socks4`; this module reads the request, refuses what warren cannot
//! do (with reply 0x5B, then a close), and carries a CONNECT through the tunnel.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use warren_common::config::LocalConfig;
use warren_common::proto::address::Address;
use warren_common::proto::socks4::{Command, Reply, ReplyCode, Request};
use warren_common::proto::socks5::ReplyCode as Socks5Code;
use warren_common::proto::{decode_prefix, DecodeError};

use crate::connect::{open_watching, Connection, OpenFailure};

/// A request is at most 8 + 256 + 256 bytes; more without a complete one is not SOCKS4.
const MAX_REQUEST: usize = 1024;

/// Why a SOCKS4 request was not read.
#[derive(Debug, thiserror::Error)]
pub enum Socks4Error {
    /// The socket failed.
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// The client closed before finishing its request.
    #[error("client closed during the request")]
    Closed,
    /// Bytes that are not a valid SOCKS4 request.
    #[error("malformed request: {0}")]
    Malformed(DecodeError),
}

async fn read_request(stream: &mut TcpStream, buf: &mut BytesMut) -> Result<Request, Socks4Error> {
    loop {
        match decode_prefix::<Request>(buf) {
            Ok((request, used)) => {
                buf.advance(used);
                return Ok(request);
            }
            Err(DecodeError::Incomplete) if buf.len() < MAX_REQUEST => {}
            Err(DecodeError::Incomplete) => return Err(Socks4Error::Malformed(DecodeError::BadField("length"))),
            Err(e) => return Err(Socks4Error::Malformed(e)),
        }
        if stream.read_buf(buf).await? == 0 {
            return Err(Socks4Error::Closed);
        }
    }
}

async fn send_reply(stream: &mut TcpStream, reply: Reply) -> std::io::Result<()> {
    let mut out = Vec::with_capacity(8);
    reply.encode(&mut out);
    stream.write_all(&out).await
}

/// BIND's two replies in SOCKS4 form: 0x5A with the address (the listening socket, then the
/// peer), or 0x5B for any failure. SOCKS4 has only IPv4 addresses; others are sent as 0.0.0.0,
/// which tells the client to use the proxy's own address.
fn bind_replies(_stage: crate::bind::BindStage, code: Socks5Code, address: &Address) -> Vec<u8> {
    let code = if code == Socks5Code::Succeeded {
        ReplyCode::Granted
    } else {
        ReplyCode::Rejected
    };
    let mut out = Vec::with_capacity(8);
    Reply::with_address(code, address).encode(&mut out);
    out
}

/// Serves one SOCKS4/4a client whose first byte was 0x04.
pub async fn handle(mut client: TcpStream, peer: SocketAddr, config: Arc<LocalConfig>) {
    let started = Instant::now();
    let mut buf = BytesMut::with_capacity(512);
    let request = match tokio::time::timeout(config.timeouts.handshake, read_request(&mut client, &mut buf)).await {
        Ok(Ok(request)) => request,
        Ok(Err(Socks4Error::Malformed(e))) => {
            tracing::debug!(%peer, "SOCKS4 request refused: {e}");
            let _ = send_reply(&mut client, Reply::new(ReplyCode::Rejected)).await;
            return;
        }
        Ok(Err(e)) => {
            tracing::debug!(%peer, "SOCKS4 request not read: {e}");
            return;
        }
        Err(_) => {
            tracing::debug!(%peer, "SOCKS4 request timed out");
            let _ = send_reply(&mut client, Reply::new(ReplyCode::Rejected)).await;
            return;
        }
    };
    let target = request.target;
    let userid = String::from_utf8_lossy(&request.userid).into_owned();
    if !config.users.is_empty() {
        tracing::info!(%peer, %target, %userid, "SOCKS4 refused: users are configured and SOCKS4 cannot carry a password");
        let _ = send_reply(&mut client, Reply::new(ReplyCode::Rejected)).await;
        return;
    }
    match request.command {
        Command::Connect => {}
        Command::Bind => {
            tracing::info!(%peer, %target, %userid, "SOCKS4 BIND");
            let initial = buf.split();
            crate::bind::bind(client, peer, &config, target, &initial, bind_replies).await;
            return;
        }
    }

    let initial = buf.split();
    let mut early = BytesMut::new();
    let (bound, tunnel) = match open_watching(&mut client, &mut early, &config, &peer, &target, &initial).await {
        Ok(opened) => opened,
        Err(OpenFailure::ClientLeft) => return,
        Err(_) => {
            let _ = send_reply(&mut client, Reply::new(ReplyCode::Rejected)).await;
            return;
        }
    };
    if send_reply(&mut client, Reply::with_address(ReplyCode::Granted, &bound))
        .await
        .is_err()
    {
        return;
    }
    tracing::debug!(%peer, %target, %userid, "SOCKS4 CONNECT granted");
    let connection = Connection {
        peer,
        target: &target,
        protocol: "socks4",
        started,
    };
    connection
        .relay_to_end(client, tunnel, early, initial.len(), config.timeouts.idle)
        .await;
}
