//! The SOCKS5 front end (RFC 1928): a client whose first byte was 0x05.
//!
//! ```text
//! handshake (handshake.rs, under local.handshake_timeout: methods, login, request)
//!   CONNECT        → session::connect       open → reply (VER=5 | REP | RSV | BND) → relay
//!   BIND           → session::bind::bind    two replies, then relay
//!   UDP ASSOCIATE  → session::udp::associate
//! ```
//!
//! Every reply is a SOCKS5 reply (RFC 1928 §6) whose REP is the outbound's status: the remote's
//! answer about the target, 0x02 for a route that blocks it, 0x01 when the way there failed.

mod handshake;

use std::time::Instant;
use warren_common::proto::Encode;

use tokio::net::TcpStream;
use warren_common::config::LocalConfig;
use warren_common::framed::Framed;
use warren_common::proto::address::Address;
use warren_common::proto::socks5::{Command, Reply};
use warren_common::proto::status::Status;

use crate::outbound::{OpenError, Outbounds};
use crate::session::bind::{self, BindStage};
use crate::session::{self, udp, Answer, Connect};

/// Serves one SOCKS5 client: its handshake, then its command to the end.
pub async fn serve(mut client: TcpStream, config: &LocalConfig, outbounds: &Outbounds) {
    let started = Instant::now();
    let mut conn = Framed::new(&mut client, handshake::LIMITS);
    // The handshake's states are boxed and freed once it is done, so the connection's task does
    // not stay as large as they are for its whole (mostly idle) life.
    let handshake = Box::pin(handshake::negotiate(&mut conn, &config.users));
    let request = match tokio::time::timeout(config.timeouts.handshake, handshake).await {
        Ok(Ok(request)) => request,
        Ok(Err(e)) => {
            tracing::debug!("SOCKS5 handshake failed: {e}");
            return;
        }
        Err(_) => {
            tracing::debug!("SOCKS5 handshake timed out");
            return;
        }
    };
    // Bytes the client sent after its request (pipelining) go first to the target.
    let (_, initial) = conn.into_parts();
    let target = request.target;
    match request.command {
        Command::Connect => {
            let request = Connect {
                target,
                initial,
                started,
            };
            session::connect(client, outbounds, request, Socks5).await;
        }
        Command::Bind => Box::pin(bind::bind(client, outbounds, target, &initial, Socks5)).await,
        Command::UdpAssociate => Box::pin(udp::associate(client, outbounds, target)).await,
    }
}

/// SOCKS5's reply format, for CONNECT and BIND alike.
struct Socks5;

impl Socks5 {
    /// A reply (RFC 1928 §6): REP `code`, BND `bound`.
    fn reply(code: Status, bound: &Address) -> Vec<u8> {
        let mut out = Vec::with_capacity(22);
        Reply {
            code: code.socks5(),
            bound: bound.clone(),
        }
        .encode(&mut out);
        out
    }
}

impl Answer for Socks5 {
    const PROTOCOL: &'static str = "socks5";

    fn granted(&self, bound: &Address) -> Vec<u8> {
        Socks5::reply(Status::Succeeded, bound)
    }

    fn refused(&self, error: &OpenError) -> Vec<u8> {
        Socks5::reply(error.status(), &Address::UNSPECIFIED)
    }
}

impl bind::BindReplies for Socks5 {
    fn encode(&self, _stage: BindStage, code: Status, address: &Address) -> Vec<u8> {
        Socks5::reply(code, address)
    }
}
