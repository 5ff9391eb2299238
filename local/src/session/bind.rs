//! BIND on the local: the listening socket opens on the remote. The tunnel response carries
//! BIND's first reply; the stream's first payload is a [`BindNotice`], BIND's second reply.
//!
//! The flow is protocol-neutral: the caller passes a [`BindReplies`] that encodes the two replies
//! in its client's protocol (SOCKS5 and SOCKS4 each plug their own format in).
//!
//! ```text
//! client ── BIND request ──▶ front end ──▶ bind(): tunnel request BIND ──▶ remote listens
//!        ◀── reply 1 (listening address) ── tunnel response
//!        ◀── reply 2 (the peer that connected) ── BindNotice, the stream's first payload
//!        ◀══ relay ══▶
//! ```

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use warren_common::proto::address::Address;
use warren_common::proto::bind::BindNotice;
use warren_common::proto::header::{Command, RequestHeader};
use warren_common::proto::status::Status;
use warren_common::proto::{decode_prefix, DecodeError};
use warren_common::relay::relay;
use warren_common::time::unix_now;

use super::EARLY_DATA_LIMIT;
use crate::outbound::Outbounds;

/// Which of BIND's two replies is being encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BindStage {
    /// The listening address the peer must connect to (or why there is none).
    First,
    /// The peer that connected (or why none did).
    Second,
}

/// Encodes BIND's replies in the client's protocol: `code` is a SOCKS5 reply code (a SOCKS4
/// implementation maps success to 90 and anything else to 91), `address` the listening address
/// (first) or the peer (second), [`Address::UNSPECIFIED`] on failure.
pub trait BindReplies {
    /// The reply for `stage`, as bytes to write to the client.
    fn encode(&self, stage: BindStage, code: Status, address: &Address) -> Vec<u8>;
}

/// Carries out a BIND for `client`, whose handshake is done and whose request named
/// `expected` as the peer. `initial` holds bytes the client sent after its request (they reach
/// the peer once it connects). Sends both replies through `replies`, then relays.
pub async fn bind(
    mut client: TcpStream,
    outbounds: &Outbounds,
    expected: Address,
    initial: &[u8],
    replies: impl BindReplies,
) {
    let header = RequestHeader::new(Command::Bind, expected.clone(), unix_now());
    let (listening, mut tunnel) = match outbounds.open(header, initial).await {
        Ok(opened) => opened,
        Err(failure) => {
            failure.log(outbounds.peer(), &expected);
            let reply = replies.encode(BindStage::First, failure.status(), &Address::UNSPECIFIED);
            let _ = client.write_all(&reply).await;
            return;
        }
    };
    let first = replies.encode(BindStage::First, Status::Succeeded, &listening);
    if client.write_all(&first).await.is_err() {
        return;
    }
    tracing::info!(peer = %outbounds.peer(), %expected, %listening, "BIND listening on the remote");

    // The remote answers within its own BIND timeout; ours only guards against a stuck stream.
    let mut from_tunnel = BytesMut::new();
    let mut early = BytesMut::new();
    let wait = tokio::time::sleep(outbounds.idle());
    tokio::pin!(wait);
    // As while a CONNECT opens: the client's FIN stops reading it, and is passed on to the peer
    // by the relay after the kept bytes; only an error abandons the wait.
    let mut half_closed = false;
    let notice = loop {
        match decode_prefix::<BindNotice>(&from_tunnel) {
            Ok((notice, used)) => {
                from_tunnel.advance(used);
                break notice;
            }
            Err(DecodeError::Incomplete) => {}
            Err(e) => {
                tracing::warn!(peer = %outbounds.peer(), %expected, "malformed BIND notice from the remote: {e}");
                let reply = replies.encode(BindStage::Second, Status::GeneralFailure, &Address::UNSPECIFIED);
                let _ = client.write_all(&reply).await;
                return;
            }
        }
        tokio::select! {
            read = tunnel.read_buf(&mut from_tunnel) => if matches!(read, Ok(0) | Err(_)) {
                let reply = replies.encode(BindStage::Second, Status::GeneralFailure, &Address::UNSPECIFIED);
                let _ = client.write_all(&reply).await;
                return;
            },
            read = client.read_buf(&mut early), if !half_closed && early.len() < EARLY_DATA_LIMIT => match read {
                Ok(0) => half_closed = true,
                Ok(_) => {}
                Err(_) => {
                    tracing::info!(peer = %outbounds.peer(), %expected, "client left while BIND was waiting");
                    return;
                }
            },
            () = &mut wait => {
                let reply = replies.encode(BindStage::Second, Status::TtlExpired, &Address::UNSPECIFIED);
                let _ = client.write_all(&reply).await;
                return;
            }
        }
    };
    let second = replies.encode(BindStage::Second, notice.status, &notice.peer);
    if client.write_all(&second).await.is_err() || notice.status != Status::Succeeded {
        tracing::info!(peer = %outbounds.peer(), %expected, from = %notice.peer, "BIND ended: {}", notice.status.describe());
        return;
    }
    if !from_tunnel.is_empty() && client.write_all(&from_tunnel).await.is_err() {
        return;
    }
    if !early.is_empty() && (tunnel.write_all(&early).await.is_err() || tunnel.flush().await.is_err()) {
        return;
    }
    let outcome = relay(client, tunnel, outbounds.idle()).await;
    warren_common::metrics::get().relayed(
        outcome.sent + early.len() as u64,
        outcome.received + from_tunnel.len() as u64,
    );
    tracing::info!(peer = %outbounds.peer(),
        %expected, from = %notice.peer,
        sent = outcome.sent + early.len() as u64,
        received = outcome.received + from_tunnel.len() as u64,
        end = %outcome.end,
        "BIND connection finished"
    );
}
