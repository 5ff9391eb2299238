//! BIND on the local: the listening socket opens on the remote. The tunnel response carries
//! BIND's first reply; the stream's first payload is a [`BindNotice`], BIND's second reply.
//!
//! The flow is protocol-neutral: the caller passes a [`BindReplies`] that encodes the two replies
//! in its client's protocol (SOCKS5 here; SOCKS4 plugs its own format in).

use std::net::SocketAddr;

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use warren_common::config::LocalConfig;
use warren_common::proto::address::Address;
use warren_common::proto::bind::BindNotice;
use warren_common::proto::header::{Command, RequestHeader};
use warren_common::proto::socks5::{Reply, ReplyCode};
use warren_common::proto::{decode_prefix, DecodeError};
use warren_common::relay::relay;
use warren_common::time::unix_now;

use crate::outbound;

/// Most bytes buffered from the client while waiting for the peer.
const EARLY_LIMIT: usize = 64 * 1024;

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
    fn encode(&self, stage: BindStage, code: ReplyCode, address: &Address) -> Vec<u8>;
}

impl<F: Fn(BindStage, ReplyCode, &Address) -> Vec<u8>> BindReplies for F {
    fn encode(&self, stage: BindStage, code: ReplyCode, address: &Address) -> Vec<u8> {
        self(stage, code, address)
    }
}

/// SOCKS5 replies (RFC 1928 §6) for BIND.
pub fn socks5_replies(_stage: BindStage, code: ReplyCode, address: &Address) -> Vec<u8> {
    let mut out = Vec::with_capacity(22);
    Reply {
        code,
        bound: address.clone(),
    }
    .encode(&mut out);
    out
}

/// Carries out a BIND for `client`, whose handshake is done and whose request named
/// `expected` as the peer. `initial` holds bytes the client sent after its request (they reach
/// the peer once it connects). Sends both replies through `replies`, then relays.
pub async fn bind(
    mut client: TcpStream,
    peer: SocketAddr,
    config: &LocalConfig,
    expected: Address,
    initial: &[u8],
    replies: impl BindReplies,
) {
    let header = RequestHeader::new(Command::Bind, expected.clone(), unix_now());
    let (listening, mut tunnel) = match outbound::open(config, header, initial).await {
        Ok(opened) => opened,
        Err(failure) => {
            failure.log(&peer, &expected);
            let reply = replies.encode(BindStage::First, failure.reply_code(), &Address::UNSPECIFIED);
            let _ = client.write_all(&reply).await;
            return;
        }
    };
    let first = replies.encode(BindStage::First, ReplyCode::Succeeded, &listening);
    if client.write_all(&first).await.is_err() {
        return;
    }
    tracing::info!(%peer, %expected, %listening, "BIND listening on the remote");

    // The remote answers within its own BIND timeout; ours only guards against a stuck stream.
    let mut from_tunnel = BytesMut::new();
    let mut early = BytesMut::new();
    let wait = tokio::time::sleep(config.timeouts.idle);
    tokio::pin!(wait);
    let notice = loop {
        match decode_prefix::<BindNotice>(&from_tunnel) {
            Ok((notice, used)) => {
                from_tunnel.advance(used);
                break notice;
            }
            Err(DecodeError::Incomplete) => {}
            Err(e) => {
                tracing::warn!(%peer, %expected, "malformed BIND notice from the remote: {e}");
                let reply = replies.encode(BindStage::Second, ReplyCode::GeneralFailure, &Address::UNSPECIFIED);
                let _ = client.write_all(&reply).await;
                return;
            }
        }
        tokio::select! {
            read = tunnel.read_buf(&mut from_tunnel) => if matches!(read, Ok(0) | Err(_)) {
                let reply = replies.encode(BindStage::Second, ReplyCode::GeneralFailure, &Address::UNSPECIFIED);
                let _ = client.write_all(&reply).await;
                return;
            },
            read = client.read_buf(&mut early), if early.len() < EARLY_LIMIT => if matches!(read, Ok(0) | Err(_)) {
                tracing::info!(%peer, %expected, "client left while BIND was waiting");
                return;
            },
            () = &mut wait => {
                let reply = replies.encode(BindStage::Second, ReplyCode::TtlExpired, &Address::UNSPECIFIED);
                let _ = client.write_all(&reply).await;
                return;
            }
        }
    };
    let second = replies.encode(BindStage::Second, notice.status, &notice.peer);
    if client.write_all(&second).await.is_err() || notice.status != ReplyCode::Succeeded {
        tracing::info!(%peer, %expected, from = %notice.peer, "BIND ended: {}", notice.status.describe());
        return;
    }
    if !from_tunnel.is_empty() && client.write_all(&from_tunnel).await.is_err() {
        return;
    }
    if !early.is_empty() && (tunnel.write_all(&early).await.is_err() || tunnel.flush().await.is_err()) {
        return;
    }
    let outcome = relay(client, tunnel, config.timeouts.idle).await;
    tracing::info!(
        %peer, %expected, from = %notice.peer,
        sent = outcome.sent + early.len() as u64,
        received = outcome.received + from_tunnel.len() as u64,
        end = %outcome.end,
        "BIND connection finished"
    );
}
