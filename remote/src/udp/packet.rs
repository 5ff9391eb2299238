//! The encrypted UDP transport on the remote: one UDP socket on the listen address and port,
//! each packet a [`Packet`] sealed in a packet session (`udp_session.rs`: one per association
//! and direction); packets from locals open only under [`Purpose::UdpToRemote`] and ours are
//! sealed under [`Purpose::UdpToLocal`], so a packet we sent, sent back to us, does not open.
//! Anything that fails to open, falls outside the timestamp window, is stamped before this
//! remote started or repeats a packet number of its session is dropped silently. The NAT table maps each local packet socket (one per
//! association) to a task owning that association's outbound sockets; an entry ends when its
//! local sends an end-of-association packet (its sockets close at once), after `idle_timeout`
//! without traffic, and the table holds at most `max_connections` of them.
//!
//! ```text
//! local ──[SESSION | N | KIND 01 | TIMESTAMP | dest | DATA | TAG]──▶ here ──DATA──▶ dest
//! local ◀─[SESSION'| N'| KIND 01 | TIMESTAMP | src  | DATA | TAG]── here ◀─DATA── src
//! local ──[SESSION | N | KIND 02 | TIMESTAMP | TAG]──▶ here: entry and sockets dropped
//! ```

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::UdpSocket;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use warren_common::crypto::Purpose;
use warren_common::datagrams::{Batch, BatchSocket, RecvBatch};
use warren_common::proto::address::Address;
use warren_common::proto::decode_exact;
use warren_common::proto::udp::Packet;
use warren_common::time::unix_now;
use warren_common::udp_session::{PacketSealer, PacketSessions, Refusal};

use super::nat::{recv, segments, Nat};
use crate::shared::Shared;

/// Datagrams queued per association before new ones are dropped.
const QUEUE: usize = 256;

type Outbound = (Address, Vec<u8>);

/// Buffers one receive on the serve socket fills at most (64 KiB each: with GRO one may hold
/// about 50 packets of 1200 bytes). Four keep one receive within an association's [`QUEUE`]
/// and the serve loop's buffers at 256 KiB.
const RECV_BUFFERS: usize = 4;

/// Datagrams taken from the queue, or replies from one outbound socket, in one go at most (a
/// GSO send carries up to 64).
const BURST: usize = 64;

/// Serves encrypted UDP packets on `socket` until `shutdown` is cancelled. `started` is the
/// remote's start second: packets stamped earlier are refused (PROTOCOL.md §10).
/// Runs on the process's UDP thread ([`warren_common::udp_thread`]), and so does every
/// association it spawns: `socket` (non-blocking) is registered there.
pub async fn serve(socket: std::net::UdpSocket, shared: Arc<Shared>, started: u64, shutdown: CancellationToken) {
    let socket = match UdpSocket::from_std(socket).and_then(BatchSocket::new) {
        Ok(socket) => Arc::new(socket),
        Err(e) => {
            tracing::warn!("cannot register the UDP relay socket ({e}): encrypted UDP is unavailable");
            return;
        }
    };
    let mut entries = Entries {
        // Sessions outlive their NAT entries (until their packets' stamps expire, so a recorded
        // packet cannot reopen an entry): room for several per entry.
        sessions: PacketSessions::new(
            Purpose::UdpToRemote,
            shared.config().limits.max_connections.saturating_mul(4).max(1024),
            started,
        ),
        table: HashMap::new(),
        socket: socket.clone(),
        shared: shared.clone(),
    };
    // One receive takes up to RECV_BUFFERS buffers, each possibly several packets (GRO).
    let mut batch = RecvBatch::new(RECV_BUFFERS);
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            got = batch.recv(&socket) => if got.is_err() {
                continue;
            },
        };
        let now = unix_now();
        for (from, packet) in batch.datagrams() {
            entries.admit(packet, from, now);
        }
        // Let the associations send on what was just queued before reading more: on this one
        // thread, reading on would only overflow their queues.
        tokio::task::yield_now().await;
    }
}

/// The NAT table: one entry (a task and its queue) per local packet socket.
struct Entries {
    sessions: PacketSessions,
    table: HashMap<SocketAddr, mpsc::Sender<Outbound>>,
    socket: Arc<BatchSocket>,
    shared: Arc<Shared>,
}

impl Entries {
    /// Opens one packet from `from` and hands its datagram to that source's entry (opening
    /// one if needed), or ends the entry; anything else is dropped.
    fn admit(&mut self, packet: &mut [u8], from: SocketAddr, now: u64) {
        let config = &*self.shared.config();
        // With remote.users the shared key opens nothing by itself (every user, a removed one
        // too, holds it), and packets carry no user identity: users send UDP inside their
        // tunnels (UDP-over-TCP). Silence, as for any packet that is not ours.
        if config.user_table.is_some() {
            warren_common::metrics::get().refused("udp_without_user");
            return;
        }
        let plaintext = match self.sessions.open(&config.key, packet, now) {
            Ok(plaintext) => plaintext,
            // Not ours (a probe, another key, a reflected packet): silence, not even a log line.
            Err(Refusal::Authentication) => return,
            Err(refusal) => {
                tracing::debug!(%from, "UDP packet dropped: {refusal}");
                return;
            }
        };
        let Ok(packet) = decode_exact::<Packet>(plaintext) else {
            return;
        };
        let packet = match packet {
            Packet::Datagram(packet) => packet,
            Packet::End { .. } => {
                // Dropping the queue's only sender ends the association's task, which closes its
                // outbound sockets (after the datagrams already queued). An end for an unknown
                // source opens nothing.
                if self.table.remove(&from).is_some() {
                    tracing::debug!(%from, "UDP association ended by the local");
                }
                return;
            }
        };
        let queue = match self.table.get(&from) {
            Some(queue) if !queue.is_closed() => queue,
            _ => {
                if self.table.len() >= config.limits.max_connections {
                    self.table.retain(|_, queue| !queue.is_closed());
                    if self.table.len() >= config.limits.max_connections {
                        tracing::warn!(%from, "UDP NAT table full: packet dropped");
                        return;
                    }
                }
                let (queue, rx) = mpsc::channel(QUEUE);
                tokio::spawn(association(from, rx, self.socket.clone(), self.shared.clone()));
                self.table.entry(from).insert_entry(queue).into_mut()
            }
        };
        let _ = queue.try_send((packet.address, packet.data));
    }
}

/// Replies on their way back to one local: sealed in its association's packet session into a
/// batch that leaves in one send.
struct Answers {
    sealer: PacketSealer,
    batch: Batch,
    socket: Arc<BatchSocket>,
    local: SocketAddr,
    sealed: u64,
}

impl Answers {
    /// Seals one answer from `from` into the batch (sending the batch first if it cannot join).
    async fn push(&mut self, from: &Address, data: &[u8]) {
        let sealer = &mut self.sealer;
        let seal = |buf: &mut Vec<u8>| sealer.append_datagram(buf, unix_now(), from, data);
        if self.batch.push(&self.socket, self.local, seal).await {
            self.sealed += 1;
        }
    }

    async fn flush(&mut self) {
        self.batch.flush(&self.socket, self.local).await;
    }
}

/// One NAT entry: sends the local's datagrams out and seals the replies back to `local`, until
/// its queue's sender is dropped (the local ended it) or `idle_timeout` passes.
async fn association(
    local: SocketAddr,
    mut rx: mpsc::Receiver<Outbound>,
    socket: Arc<BatchSocket>,
    shared: Arc<Shared>,
) {
    let config = &*shared.config();
    let mut nat = Nat::default();
    let mut answers = Answers {
        sealer: PacketSealer::new(&config.key, Purpose::UdpToLocal),
        batch: Batch::with_capacity(65536),
        socket,
        local,
        sealed: 0,
    };
    let (mut buf4, mut buf6) = (vec![0u8; 65536], vec![0u8; 65536]);
    let mut sent = 0u64;
    let idle = tokio::time::sleep(config.timeouts.idle);
    tokio::pin!(idle);
    let end = loop {
        // Which outbound socket has a reply waiting (its first one is read here).
        let (first, v4) = tokio::select! {
            msg = rx.recv() => match msg {
                None => break "ended by the local",
                Some(first) => {
                    // The first datagram and the rest of the burst already queued: the idle
                    // deadline moves once per burst, not per datagram.
                    let mut next = Some(first);
                    for _ in 0..BURST {
                        let Some((to, data)) = next else { break };
                        if nat.forward(&to, &data, &shared).await {
                            sent += 1;
                        }
                        next = rx.try_recv().ok();
                    }
                    // Same-sized datagrams for one destination leave in one GSO send.
                    nat.flush().await;
                    idle.as_mut().reset(tokio::time::Instant::now() + config.timeouts.idle);
                    continue;
                }
            },
            r = recv(&nat.v4, &mut buf4) => (r.ok(), true),
            r = recv(&nat.v6, &mut buf6) => (r.ok(), false),
            answer = nat.agents.recv() => {
                idle.as_mut().reset(tokio::time::Instant::now() + config.timeouts.idle);
                answers.push(&answer.address, &answer.data).await;
                answers.flush().await;
                continue;
            }
            () = &mut idle => break "idle",
        };
        idle.as_mut().reset(tokio::time::Instant::now() + config.timeouts.idle);
        // The first read, then the rest of the burst already waiting on the same socket (each
        // read one datagram or a GRO run of them from one source): they leave for the local
        // together.
        let (outbound, buf) = if v4 { (&nat.v4, &mut buf4) } else { (&nat.v6, &mut buf6) };
        let mut got = first;
        let mut taken = 0;
        while let Some(meta) = got {
            // A read counts at least once, so refused senders cannot hold this loop either.
            taken += 1;
            if nat.answer_allowed(meta.addr) {
                let from = Address::Ip(SocketAddr::new(meta.addr.ip().to_canonical(), meta.addr.port()));
                for data in segments(buf, &meta) {
                    answers.push(&from, data).await;
                }
                taken += segments(buf, &meta).count().saturating_sub(1);
            }
            if taken >= BURST {
                break;
            }
            got = outbound.as_ref().and_then(|s| s.try_recv_one(buf).ok());
        }
        answers.flush().await;
    };
    // `nat` (and its outbound sockets) is dropped here, as the line is logged.
    drop(nat);
    tracing::info!(%local, datagrams_sent = sent, datagrams_received = answers.sealed, end, "UDP association finished");
}
