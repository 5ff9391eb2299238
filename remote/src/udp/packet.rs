//! The encrypted UDP transport on the remote: one UDP socket on the listen address and port,
//! each packet sealed on its own (`crypto::seal_packet`) around a
//! [`PacketPlaintext`]. Anything that fails to open, falls outside the timestamp window or
//! repeats a salt is dropped silently. The NAT table maps each local packet socket (one per
//! association) to a task owning that association's outbound sockets; entries end after
//! `idle_timeout` without traffic, and the table holds at most `max_connections` of them.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::UdpSocket;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use warren_common::config::RemoteConfig;
use warren_common::crypto::{open_packet, random_salt, seal_packet};
use warren_common::proto::address::Address;
use warren_common::proto::decode_exact;
use warren_common::proto::udp::PacketPlaintext;
use warren_common::replay::ReplayFilter;
use warren_common::time::unix_now;

use super::nat::{recv, Nat};

/// Datagrams queued per association before new ones are dropped.
const QUEUE: usize = 256;

type Outbound = (Address, Vec<u8>);

/// Serves encrypted UDP packets on `socket` until `shutdown` is cancelled.
pub async fn serve(socket: UdpSocket, config: Arc<RemoteConfig>, shutdown: CancellationToken) {
    let socket = Arc::new(socket);
    let mut replay = ReplayFilter::default();
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
        let Ok((salt, plaintext)) = open_packet(&config.key, &buf[..n]) else {
            continue;
        };
        let Ok(packet) = decode_exact::<PacketPlaintext>(&plaintext) else {
            continue;
        };
        if !replay.accept(salt, packet.timestamp, unix_now()) {
            tracing::debug!(%from, "UDP packet replayed or outside the timestamp window: dropped");
            continue;
        }
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
                tokio::spawn(association(from, rx, socket.clone(), config.clone()));
                table.insert(from, queue.clone());
                queue
            }
        };
        let _ = queue.try_send((packet.address, packet.data));
    }
}

/// One NAT entry: sends the local's datagrams out and seals the replies back to `local`.
async fn association(
    local: SocketAddr,
    mut rx: mpsc::Receiver<Outbound>,
    socket: Arc<UdpSocket>,
    config: Arc<RemoteConfig>,
) {
    let mut nat = Nat::default();
    let (mut buf4, mut buf6) = (vec![0u8; 65536], vec![0u8; 65536]);
    let (mut sent, mut received) = (0u64, 0u64);
    let idle = tokio::time::sleep(config.timeouts.idle);
    tokio::pin!(idle);
    loop {
        let reply = tokio::select! {
            msg = rx.recv() => match msg {
                None => break,
                Some((to, data)) => {
                    if nat.forward(&to, &data, &config).await {
                        sent += 1;
                    }
                    None
                }
            },
            r = recv(&nat.v4, &mut buf4) => r.ok().map(|(n, from)| (from, &buf4[..n])),
            r = recv(&nat.v6, &mut buf6) => r.ok().map(|(n, from)| (from, &buf6[..n])),
            () = &mut idle => break,
        };
        idle.as_mut().reset(tokio::time::Instant::now() + config.timeouts.idle);
        if let Some((from, data)) = reply.filter(|(from, _)| nat.answer_allowed(*from)) {
            let from = SocketAddr::new(from.ip().to_canonical(), from.port());
            let mut plaintext = Vec::with_capacity(data.len() + 32);
            PacketPlaintext::encode_parts(unix_now(), &Address::Ip(from), data, &mut plaintext);
            if let Ok(packet) = seal_packet(&config.key, &random_salt(), &plaintext) {
                if socket.send_to(&packet, local).await.is_ok() {
                    received += 1;
                }
            }
        }
    }
    tracing::info!(%local, datagrams_sent = sent, datagrams_received = received, "UDP association finished");
}
