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
use warren_common::crypto::{Purpose, TAG_LEN};
use warren_common::proto::address::Address;
use warren_common::proto::decode_exact;
use warren_common::proto::udp::{Packet, PacketPlaintext};
use warren_common::time::unix_now;
use warren_common::udp_session::{PacketSealer, PacketSessions, Refusal, PACKET_HEADER_LEN};

use super::nat::{recv, Nat};
use crate::shared::Shared;

/// Datagrams queued per association before new ones are dropped.
const QUEUE: usize = 256;

type Outbound = (Address, Vec<u8>);

/// Serves encrypted UDP packets on `socket` until `shutdown` is cancelled. `started` is the
/// remote's start second: packets stamped earlier are refused (PROTOCOL.md §10).
/// Runs on the process's UDP thread ([`warren_common::udp_thread`]), and so does every
/// association it spawns: `socket` (non-blocking) is registered there.
pub async fn serve(socket: std::net::UdpSocket, shared: Arc<Shared>, started: u64, shutdown: CancellationToken) {
    let config = &shared.config;
    let socket = match UdpSocket::from_std(socket) {
        Ok(socket) => Arc::new(socket),
        Err(e) => {
            tracing::warn!("cannot register the UDP relay socket ({e}): encrypted UDP is unavailable");
            return;
        }
    };
    // Sessions outlive their NAT entries (until their packets' stamps expire, so a recorded
    // packet cannot reopen an entry): room for several per entry.
    let mut sessions = PacketSessions::new(
        Purpose::UdpToRemote,
        config.limits.max_connections.saturating_mul(4).max(1024),
        started,
    );
    let mut table: HashMap<SocketAddr, mpsc::Sender<Outbound>> = HashMap::new();
    let mut buf = vec![0u8; 65536];
    loop {
        let (n, from) = tokio::select! {
            () = shutdown.cancelled() => return,
            got = socket.recv_from(&mut buf) => match got {
                Ok(got) => got,
                Err(_) => continue,
            },
        };
        let Some(packet) = buf.get_mut(..n) else { continue };
        let plaintext = match sessions.open(&config.key, packet, unix_now()) {
            Ok(plaintext) => plaintext,
            // Not ours (a probe, another key, a reflected packet): silence, not even a log line.
            Err(Refusal::Authentication) => continue,
            Err(refusal) => {
                tracing::debug!(%from, "UDP packet dropped: {refusal}");
                continue;
            }
        };
        let Ok(packet) = decode_exact::<Packet>(plaintext) else {
            continue;
        };
        let packet = match packet {
            Packet::Datagram(packet) => packet,
            Packet::End { .. } => {
                // Dropping the queue's only sender ends the association's task, which closes its
                // outbound sockets (after the datagrams already queued). An end for an unknown
                // source opens nothing.
                if table.remove(&from).is_some() {
                    tracing::debug!(%from, "UDP association ended by the local");
                }
                continue;
            }
        };
        let queue = match table.get(&from) {
            Some(queue) if !queue.is_closed() => queue.clone(),
            _ => {
                if table.len() >= config.limits.max_connections {
                    table.retain(|_, queue| !queue.is_closed());
                    if table.len() >= config.limits.max_connections {
                        tracing::warn!(%from, "UDP NAT table full: packet dropped");
                        continue;
                    }
                }
                let (queue, rx) = mpsc::channel(QUEUE);
                tokio::spawn(association(from, rx, socket.clone(), shared.clone()));
                table.insert(from, queue.clone());
                queue
            }
        };
        let _ = queue.try_send((packet.address, packet.data));
    }
}

/// One NAT entry: sends the local's datagrams out and seals the replies back to `local`, until
/// its queue's sender is dropped (the local ended it) or `idle_timeout` passes.
async fn association(local: SocketAddr, mut rx: mpsc::Receiver<Outbound>, socket: Arc<UdpSocket>, shared: Arc<Shared>) {
    let config = &shared.config;
    let mut nat = Nat::default();
    let mut sealer = PacketSealer::new(&config.key, Purpose::UdpToLocal);
    let (mut buf4, mut buf6) = (vec![0u8; 65536], vec![0u8; 65536]);
    // One reply at a time is sealed in place here: no allocation per packet.
    let mut out = Vec::with_capacity(65536 + 512);
    let (mut sent, mut received) = (0u64, 0u64);
    let idle = tokio::time::sleep(config.timeouts.idle);
    tokio::pin!(idle);
    let end = loop {
        let reply = tokio::select! {
            msg = rx.recv() => match msg {
                None => break "ended by the local",
                Some((to, data)) => {
                    if nat.forward(&to, &data, &shared).await {
                        sent += 1;
                    }
                    None
                }
            },
            r = recv(&nat.v4, &mut buf4) => r.ok().map(|(n, from)| (from, &buf4[..n])),
            r = recv(&nat.v6, &mut buf6) => r.ok().map(|(n, from)| (from, &buf6[..n])),
            answer = nat.agents.recv() => {
                idle.as_mut().reset(tokio::time::Instant::now() + config.timeouts.idle);
                if seal_answer(&mut out, &answer.address, &answer.data, &mut sealer)
                    && socket.send_to(&out, local).await.is_ok()
                {
                    received += 1;
                }
                continue;
            }
            () = &mut idle => break "idle",
        };
        idle.as_mut().reset(tokio::time::Instant::now() + config.timeouts.idle);
        if let Some((from, data)) = reply.filter(|(from, _)| nat.answer_allowed(*from)) {
            let from = SocketAddr::new(from.ip().to_canonical(), from.port());
            if seal_answer(&mut out, &Address::Ip(from), data, &mut sealer) && socket.send_to(&out, local).await.is_ok()
            {
                received += 1;
            }
        }
    };
    // `nat` (and its outbound sockets) is dropped here, as the line is logged.
    drop(nat);
    tracing::info!(%local, datagrams_sent = sent, datagrams_received = received, end, "UDP association finished");
}

/// Seals one answer from `from` for the local into `out`, the association's next packet (in
/// place: no allocation per packet); false if it cannot be sealed.
fn seal_answer(out: &mut Vec<u8>, from: &Address, data: &[u8], sealer: &mut PacketSealer) -> bool {
    out.clear();
    out.resize(PACKET_HEADER_LEN, 0);
    PacketPlaintext::encode_parts(unix_now(), from, data, out);
    out.resize(out.len() + TAG_LEN, 0);
    sealer.seal_in_place(out).is_ok()
}
