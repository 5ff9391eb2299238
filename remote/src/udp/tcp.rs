//! UDP-over-TCP on the remote: one tunnel stream per association carrying
//! [`DatagramFrame`]s. Its NAT entry (see [`nat`](super::nat)) is one outbound UDP socket per
//! address family, so the association's table size is bounded by the remote's connection cap.
//!
//! ```text
//!            ┌─ reader: tunnel → frames → route + ACL → NAT sockets ─────────┐
//! tunnel ────┤                                                               ├─ one task
//!            └─ writer: queue (QUEUE frames) → tunnel ◀─ NAT sockets' answers┘
//! ```
//!
//! Reading and writing the tunnel never wait on each other: the reader hands answers to a
//! bounded queue and drops them (counted) when it is full, and the writer drains the queue on
//! its own. Two ends that each wait for the other to read can therefore never both stop (UDP
//! may lose datagrams under overload; it must not wedge). The association ends at once when
//! the tunnel ends, when nothing moves for `idle_timeout`, or on shutdown (a datagram
//! association has nothing in flight worth the shutdown grace).

use std::net::SocketAddr;
use std::time::Duration;

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;
use warren_common::proto::address::Address;
use warren_common::proto::udp::DatagramFrame;
use warren_common::proto::{decode_prefix, DecodeError};

use super::nat::{recv, segments, Nat};
use crate::respond::{Connection, Reply, Request};
use crate::shared::{Party, Shared};

/// Answers queued for the tunnel writer before new ones are dropped.
const QUEUE: usize = 128;
/// The writer coalesces queued frames into writes of about this many bytes.
const BATCH: usize = 32 * 1024;
/// How long the end-of-stream chunk may take to leave once the association is over.
const CLOSE_GRACE: Duration = Duration::from_secs(2);

/// What one association moved.
#[derive(Default)]
struct Counts {
    sent: u64,
    received: u64,
    dropped: u64,
}

/// Serves one authenticated UDP-over-TCP request: one association per tunnel stream.
pub async fn serve<S>(mut request: Request, stream: S, shared: &Shared)
where
    S: Connection,
{
    // The lines users read name the connection themselves (see accept.rs on spans).
    let peer = request.origin.peer();
    let user = match &request.party {
        Party::User(user) => Some(user.clone()),
        _ => None,
    };
    let inbound = BytesMut::from(&request.take_initial_data()[..]);
    let Some(tunnel) = request.answer(stream, Reply::GRANTED, &[]).await else {
        return;
    };
    let (reader, mut writer) = tokio::io::split(tunnel);
    let (queue, answers) = mpsc::channel(QUEUE);
    let mut counts = Counts::default();
    let end = tokio::select! {
        end = relay(reader, inbound, &queue, shared, user, &mut counts) => end,
        end = write_frames(&mut writer, answers) => end,
        () = shared.shutdown.cancelled() => "shutdown".to_owned(),
    };
    // Bounded: a local that stopped reading must not keep this association (and its sockets).
    let _ = tokio::time::timeout(CLOSE_GRACE, writer.shutdown()).await;
    tracing::info!(%peer, datagrams_sent = counts.sent, datagrams_received = counts.received,
        dropped = counts.dropped, %end, "UDP association finished");
}

/// The reader half: frames from the tunnel go out through the NAT, answers from the NAT go to
/// `queue`. Returns why the association ended.
async fn relay<R>(
    mut tunnel: R,
    mut inbound: BytesMut,
    queue: &mpsc::Sender<Vec<u8>>,
    shared: &Shared,
    user: Option<std::sync::Arc<warren_common::config::remote_users::RemoteUser>>,
    counts: &mut Counts,
) -> String
where
    R: AsyncRead + Unpin,
{
    let config = &*shared.config();
    let mut nat = Nat::default();
    nat.user = user;
    let (mut buf4, mut buf6) = (vec![0u8; 65536], vec![0u8; 65536]);
    let idle = tokio::time::sleep(config.timeouts.idle);
    tokio::pin!(idle);
    loop {
        loop {
            match decode_prefix::<DatagramFrame>(&inbound) {
                Ok((frame, used)) => {
                    inbound.advance(used);
                    if nat.forward(&frame.address, &frame.data, shared).await {
                        counts.sent += 1;
                    }
                }
                Err(DecodeError::Incomplete) => break,
                Err(e) => return format!("malformed datagram frame: {e}"),
            }
        }
        // The frames of one read leave together (one GSO send per run for one destination).
        nat.flush().await;
        let reply = tokio::select! {
            read = tunnel.read_buf(&mut inbound) => match read {
                Ok(0) => return "local closed".to_owned(),
                Ok(_) => None,
                Err(e) => return format!("tunnel error: {e}"),
            },
            r = recv(&nat.v4, &mut buf4) => r.ok().map(|meta| (meta, true)),
            r = recv(&nat.v6, &mut buf6) => r.ok().map(|meta| (meta, false)),
            answer = nat.agents.recv() => {
                idle.as_mut().reset(tokio::time::Instant::now() + config.timeouts.idle);
                let mut frame = Vec::with_capacity(answer.data.len() + 32);
                if DatagramFrame::encode_parts(&answer.address, &answer.data, &mut frame).is_some() {
                    match queue.try_send(frame) {
                        Ok(()) => counts.received += 1,
                        Err(mpsc::error::TrySendError::Full(_)) => counts.dropped += 1,
                        Err(mpsc::error::TrySendError::Closed(_)) => return "tunnel error".to_owned(),
                    }
                }
                continue;
            }
            () = &mut idle => return "idle".to_owned(),
        };
        idle.as_mut().reset(tokio::time::Instant::now() + config.timeouts.idle);
        let Some((meta, v4)) = reply.filter(|(meta, _)| nat.answer_allowed(meta.addr)) else {
            continue;
        };
        let from = Address::Ip(SocketAddr::new(meta.addr.ip().to_canonical(), meta.addr.port()));
        // One read may be a GRO run of several datagrams from `from`.
        for data in segments(if v4 { &mut buf4 } else { &mut buf6 }, &meta) {
            let mut frame = Vec::with_capacity(data.len() + 32);
            if DatagramFrame::encode_parts(&from, data, &mut frame).is_none() {
                continue; // too large for a frame
            }
            match queue.try_send(frame) {
                Ok(()) => counts.received += 1,
                Err(mpsc::error::TrySendError::Full(_)) => counts.dropped += 1,
                Err(mpsc::error::TrySendError::Closed(_)) => return "tunnel error".to_owned(),
            }
        }
    }
}

/// The writer half: writes queued frames to the tunnel, several per write when they pile up.
/// Returns only when the tunnel fails (the reader ends the association otherwise).
async fn write_frames<W>(tunnel: &mut W, mut frames: mpsc::Receiver<Vec<u8>>) -> String
where
    W: AsyncWrite + Unpin,
{
    let mut batch = Vec::with_capacity(BATCH);
    while let Some(frame) = frames.recv().await {
        batch.clear();
        batch.extend_from_slice(&frame);
        while batch.len() < BATCH {
            match frames.try_recv() {
                Ok(more) => batch.extend_from_slice(&more),
                Err(_) => break,
            }
        }
        if let Err(e) = tunnel.write_all(&batch).await {
            return format!("tunnel error: {e}");
        }
        if frames.is_empty() {
            if let Err(e) = tunnel.flush().await {
                return format!("tunnel error: {e}");
            }
        }
    }
    std::future::pending().await
}
