//! UDP-over-TCP on the remote: one tunnel stream per association carrying
//! [`DatagramFrame`]s. Its NAT entry (see [`nat`](super::nat)) is one outbound UDP socket per
//! address family, so the association's table size is bounded by the remote's connection cap;
//! the association ends when the stream ends or stays idle for `idle_timeout`.

use std::net::SocketAddr;

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use warren_common::proto::address::Address;
use warren_common::proto::udp::DatagramFrame;
use warren_common::proto::{decode_prefix, DecodeError};

use super::nat::{recv, Nat};
use crate::respond::{Connection, Reply, Request};
use crate::shared::Shared;

/// UDP-over-TCP: one association per tunnel stream.
/// Serves one authenticated UDP-over-TCP request.
pub async fn serve<S>(mut request: Request, stream: S, shared: &Shared)
where
    S: Connection,
{
    // The lines users read name the connection themselves (see accept.rs on spans).
    let peer = request.origin.peer();
    let config = &shared.config;
    let mut inbound = BytesMut::from(&request.take_initial_data()[..]);
    let Some(mut tunnel) = request.answer(stream, Reply::GRANTED, &[]).await else {
        return;
    };
    let mut nat = Nat::default();
    let (mut buf4, mut buf6) = (vec![0u8; 65536], vec![0u8; 65536]);
    let mut out = Vec::with_capacity(65536);
    let (mut sent, mut received) = (0u64, 0u64);
    let idle = tokio::time::sleep(config.timeouts.idle);
    tokio::pin!(idle);
    let end = 'outer: loop {
        loop {
            match decode_prefix::<DatagramFrame>(&inbound) {
                Ok((frame, used)) => {
                    inbound.advance(used);
                    if let Some(to) = nat.destination(&frame.address, config).await {
                        if nat.send(to, &frame.data).await {
                            sent += 1;
                        }
                    }
                }
                Err(DecodeError::Incomplete) => break,
                Err(e) => break 'outer format!("malformed datagram frame: {e}"),
            }
        }
        let reply = tokio::select! {
            read = tunnel.read_buf(&mut inbound) => match read {
                Ok(0) => break "local closed".to_owned(),
                Ok(_) => None,
                Err(e) => break format!("tunnel error: {e}"),
            },
            r = recv(&nat.v4, &mut buf4) => r.ok().map(|(n, from)| (from, &buf4[..n])),
            r = recv(&nat.v6, &mut buf6) => r.ok().map(|(n, from)| (from, &buf6[..n])),
            () = &mut idle => break "idle".to_owned(),
        };
        idle.as_mut().reset(tokio::time::Instant::now() + config.timeouts.idle);
        if let Some((from, data)) = reply.filter(|(from, _)| nat.answer_allowed(*from)) {
            let from = SocketAddr::new(from.ip().to_canonical(), from.port());
            out.clear();
            if DatagramFrame::encode_parts(&Address::Ip(from), data, &mut out).is_some() {
                if tunnel.write_all(&out).await.is_err() || tunnel.flush().await.is_err() {
                    break "tunnel error".to_owned();
                }
                received += 1;
            }
        }
    };
    let _ = tunnel.shutdown().await;
    tracing::info!(%peer, datagrams_sent = sent, datagrams_received = received, %end, "UDP association finished");
}
