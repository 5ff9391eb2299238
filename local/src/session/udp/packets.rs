//! The encrypted UDP transport on the local (`local.udp_transport: udp`, PROTOCOL.md §16.3):
//! one socket connected to the remote's UDP port, one packet session sealing towards it, and
//! the remote's sessions opened coming back.
//!
//! ```text
//! client datagrams (a burst) ─▶ queue: seal each into the batch ─▶ flush: one GSO send ─▶ remote
//! client ◀─ frames ◀─ open each ◀─ one receive (GRO: several packets, `stride` apart) ◀─ remote
//! ```
//!
//! Same-sized packets leave together (`warren_common::datagrams`): a burst of n datagrams costs
//! the relay one send, and the remote one receive, instead of n of each.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::net::UdpSocket;
use warren_common::config::local_routes::Endpoint;
use warren_common::crypto::{Key, Purpose, TAG_LEN};
use warren_common::datagrams::{recv_one, segments, Batch, BatchSocket};
use warren_common::proto::address::Address;
use warren_common::proto::udp::{DatagramFrame, Packet, PacketPlaintext};
use warren_common::proto::{decode_exact, Encode};
use warren_common::time::unix_now;
use warren_common::udp_session::{PacketSealer, PacketSessions, PACKET_HEADER_LEN};

use super::tcp::Queued;

/// Sessions of the remote's packets one association remembers (PROTOCOL.md §16.3): the remote
/// answers in one per association, and a restarted remote starts another.
const REMOTE_SESSIONS: usize = 8;

/// One association's packet link to its remote.
pub struct PacketLink {
    socket: BatchSocket,
    remote: SocketAddr,
    sealer: PacketSealer,
    sessions: PacketSessions,
    key: Key,
    batch: Batch,
}

impl PacketLink {
    /// Resolves `endpoint` (within `timeout`) and opens a socket towards it; None (logged) if
    /// it cannot.
    pub async fn open(endpoint: &Endpoint, timeout: Duration, peer: SocketAddr) -> Option<PacketLink> {
        let resolve = tokio::net::lookup_host(endpoint.address.as_str());
        let remote = match tokio::time::timeout(timeout, resolve).await {
            Ok(Ok(mut addrs)) => addrs.next(),
            _ => None,
        };
        let Some(remote) = remote else {
            tracing::warn!(%peer, remote = %endpoint.name, "cannot resolve the remote for UDP");
            return None;
        };
        let any: SocketAddr = if remote.is_ipv4() {
            (std::net::Ipv4Addr::UNSPECIFIED, 0).into()
        } else {
            (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
        };
        let socket = UdpSocket::bind(any).await.ok()?;
        socket.connect(remote).await.ok()?;
        Some(PacketLink {
            socket: BatchSocket::new(socket).ok()?,
            remote,
            sealer: PacketSealer::new(&endpoint.key, Purpose::UdpToRemote),
            sessions: PacketSessions::new(Purpose::UdpToLocal, REMOTE_SESSIONS, 0),
            key: endpoint.key.clone(),
            batch: Batch::with_capacity(65536),
        })
    }

    /// Seals one datagram for `to` into the batch, sending the batch first if this one cannot
    /// join it. Call [`PacketLink::flush`] once the burst is read.
    pub async fn queue(&mut self, to: &Address, data: &[u8]) -> Queued {
        let sealer = &mut self.sealer;
        let seal = |buf: &mut Vec<u8>| sealer.append_datagram(buf, unix_now(), to, data);
        match self.batch.push(&self.socket, self.remote, seal).await {
            true => Queued::Yes,
            false => Queued::Dropped,
        }
    }

    /// Sends the datagrams queued so far (one send for all of them where GSO allows).
    pub async fn flush(&mut self) {
        self.batch.flush(&self.socket, self.remote).await;
    }

    /// Waits for packets from the remote and returns the datagrams among them that open (only
    /// the remote's direction opens, so our own packets reflected back do not), each once,
    /// inside the timestamp window. Cancel-safe: the only await is the socket's readiness.
    pub async fn recv(&mut self, buf: &mut [u8]) -> Vec<DatagramFrame> {
        let Ok(meta) = recv_one(&self.socket, buf).await else {
            return Vec::new();
        };
        let now = unix_now();
        let mut frames = Vec::new();
        for packet in segments(buf, &meta) {
            let Ok(plaintext) = self.sessions.open(&self.key, packet, now) else {
                continue;
            };
            if let Ok(p) = decode_exact::<PacketPlaintext>(plaintext) {
                frames.push(DatagramFrame {
                    address: p.address,
                    data: p.data,
                });
            }
        }
        frames
    }

    /// Ends the association on the remote too: a sealed end-of-association packet (PROTOCOL.md
    /// §16.3), so the remote closes its sockets at once instead of after its idle timeout. It
    /// goes twice (two packet numbers) because UDP may lose one; a second end finds no entry and
    /// opens nothing.
    pub async fn close(mut self) {
        self.flush().await;
        for _ in 0..2 {
            let mut out = vec![0u8; PACKET_HEADER_LEN];
            Packet::End { timestamp: unix_now() }.encode(&mut out);
            out.resize(out.len() + TAG_LEN, 0);
            if self.sealer.seal_in_place(&mut out).is_ok() {
                let _ = self.socket.get_ref().send(&out).await;
            }
        }
    }
}
