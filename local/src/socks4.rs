//! The SOCKS4 and SOCKS4a front end: a client whose first byte was 0x04. Message formats live
//! in `warren_common::proto::socks4`; this module reads the request, refuses what warren cannot
//! do (with reply 0x5B, then a close), and hands CONNECT and BIND to the session.
//!
//! ```text
//! request  VN=4 | CD | DSTPORT | DSTIP | USERID 0 [| HOST 0]   (under local.handshake_timeout)
//!   CONNECT → session::connect      reply VN=0 | CD=0x5A granted / 0x5B rejected | DSTPORT | DSTIP
//!   BIND    → session::bind::bind   two such replies
//! ```
//!
//! SOCKS4 carries no password, so with `local.users` set every request is refused.

use std::time::Instant;
use warren_common::proto::Encode;

use bytes::BytesMut;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use warren_common::config::LocalConfig;
use warren_common::framed::{read_message, FrameError, Limits};
use warren_common::proto::address::Address;
use warren_common::proto::socks4::{Command, Reply, Request};
use warren_common::proto::status::Status;

use crate::outbound::{OpenError, Outbounds};
use crate::session::bind::{self, BindStage};
use crate::session::{self, Answer, Connect};

/// A request is at most 8 + 256 + 256 bytes; more without a complete one is not SOCKS4.
const LIMITS: Limits = Limits { max: 1024, read: 1024 };

/// Serves one SOCKS4/4a client: its request, then its command to the end.
pub async fn serve(mut client: TcpStream, config: &LocalConfig, outbounds: &Outbounds) {
    let started = Instant::now();
    let mut buf = BytesMut::with_capacity(512);
    let read = read_message::<Request, _>(&mut client, &mut buf, LIMITS);
    let request = match tokio::time::timeout(config.timeouts.handshake, read).await {
        Ok(Ok(request)) => request,
        Ok(Err(FrameError::Malformed(e))) => {
            tracing::debug!("SOCKS4 request refused: malformed request: {e}");
            let _ = client.write_all(&Socks4::rejected()).await;
            return;
        }
        Ok(Err(FrameError::TooLong(_))) => {
            tracing::debug!("SOCKS4 request refused: malformed request: invalid value in field length");
            let _ = client.write_all(&Socks4::rejected()).await;
            return;
        }
        Ok(Err(FrameError::Closed)) => {
            tracing::debug!("SOCKS4 request not read: client closed during the request");
            return;
        }
        Ok(Err(e)) => {
            tracing::debug!("SOCKS4 request not read: {e}");
            return;
        }
        Err(_) => {
            tracing::debug!("SOCKS4 request timed out");
            let _ = client.write_all(&Socks4::rejected()).await;
            return;
        }
    };
    let target = request.target;
    let userid = String::from_utf8_lossy(&request.userid).into_owned();
    if !config.users.is_empty() {
        tracing::info!(peer = %outbounds.peer(), %target, %userid, "SOCKS4 refused: users are configured and SOCKS4 cannot carry a password");
        let _ = client.write_all(&Socks4::rejected()).await;
        return;
    }
    let initial = buf.split();
    match request.command {
        Command::Connect => {
            let request = Connect {
                target,
                initial,
                started,
            };
            let answer = Socks4 {
                userid,
                target: request.target.clone(),
            };
            session::connect(client, outbounds, request, answer).await;
        }
        Command::Bind => {
            tracing::info!(peer = %outbounds.peer(), %target, %userid, "SOCKS4 BIND");
            let replies = Socks4 {
                userid,
                target: target.clone(),
            };
            // Boxed (as in socks5.rs): BIND's states are the largest, and inline they would set
            // the size of every CONNECT's task for its whole life.
            Box::pin(bind::bind(client, outbounds, target, &initial, replies)).await;
        }
    }
}

/// SOCKS4's reply format, for CONNECT and BIND alike; the request's user id and target are
/// for the log.
struct Socks4 {
    userid: String,
    target: Address,
}

impl Socks4 {
    /// 0x5A (granted) for success, 0x5B (rejected) for any failure, with `address` if it is
    /// IPv4; others are sent as 0.0.0.0, which tells the client to use the proxy's own address.
    fn reply(status: Status, address: &Address) -> Vec<u8> {
        let mut out = Vec::with_capacity(8);
        Reply::with_address(status.socks4(), address).encode(&mut out);
        out
    }

    /// The refusal of a request that is not carried out.
    fn rejected() -> Vec<u8> {
        Socks4::reply(Status::GeneralFailure, &Address::UNSPECIFIED)
    }
}

impl Answer for Socks4 {
    const PROTOCOL: &'static str = "socks4";

    fn granted(&self, bound: &Address) -> Vec<u8> {
        tracing::debug!(target = %self.target, userid = %self.userid, "SOCKS4 CONNECT granted");
        Socks4::reply(Status::Succeeded, bound)
    }

    fn refused(&self, _error: &OpenError) -> Vec<u8> {
        Socks4::rejected()
    }
}

impl bind::BindReplies for Socks4 {
    fn encode(&self, _stage: BindStage, status: Status, address: &Address) -> Vec<u8> {
        Socks4::reply(status, address)
    }
}
