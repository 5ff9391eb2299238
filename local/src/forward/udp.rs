//! UDP port forwards: one socket on the forward's `listen`; each client address seen there is
//! a flow with its own way to the fixed target, as `local.routes` decide for it:
//!
//! ```text
//! client A ─┐                       ┌─ flow A: direct  → a socket connected to `to`
//! client B ─┼─▶ listen socket ─▶ ───┼─ flow B: proxy   → an association (session::udp's
//!           │   (dispatch by        │                    Upstream: sealed packets or UDP-over-TCP)
//!           │    source address)    └─ block: dropped, the flow is not made
//! replies ◀─┴── sent from the listen socket to the flow's client
//! ```
//!
//! Nothing here waits for a flow: a datagram for a flow whose queue is full is dropped (UDP
//! may lose datagrams under overload, never stall the others). A flow ends after
//! `local.idle_timeout` without a datagram either way, or when its way out fails; at most
//! [`MAX_FLOWS`] flows live at once (a new client beyond that is dropped, and logged once).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::UdpSocket;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use warren_common::config::local_routes::LocalAction;
use warren_common::proto::address::Address;

use crate::outbound::current::Latest;
use crate::outbound::Outbounds;
use crate::session::udp::{Queued, Upstream};

/// Flows one UDP forward keeps at once.
pub const MAX_FLOWS: usize = 1024;
/// Datagrams queued for one flow before new ones are dropped.
const FLOW_QUEUE: usize = 256;
/// Largest datagram read (a UDP payload's maximum).
const MAX_DATAGRAM: usize = 65_535;

/// Serves a UDP forward to `to` on `socket` until `shutdown`. Runs on the process's UDP thread
/// (`warren_common::udp_thread`), where the flows' sockets are created.
pub async fn serve(socket: UdpSocket, to: Address, latest: Latest, shutdown: CancellationToken) {
    let serving = async move {
        let socket = Arc::new(socket);
        let mut flows: HashMap<SocketAddr, mpsc::Sender<Vec<u8>>> = HashMap::new();
        let mut buf = vec![0u8; MAX_DATAGRAM];
        let mut full_logged = false;
        loop {
            let (n, client) = tokio::select! {
                () = shutdown.cancelled() => break,
                got = socket.recv_from(&mut buf) => match got {
                    Ok(got) => got,
                    // An ICMP error for an earlier send shows up here on some systems: not fatal.
                    Err(_) => continue,
                },
            };
            let datagram = buf.get(..n).unwrap_or_default().to_vec();
            if let Some(flow) = flows.get(&client) {
                match flow.try_send(datagram) {
                    Ok(()) | Err(mpsc::error::TrySendError::Full(_)) => continue,
                    // The flow ended (idle, or its way out failed): this datagram starts another.
                    Err(mpsc::error::TrySendError::Closed(d)) => {
                        flows.remove(&client);
                        start(
                            &mut flows,
                            client,
                            d,
                            &to,
                            &latest,
                            &socket,
                            &shutdown,
                            &mut full_logged,
                        );
                    }
                }
            } else {
                start(
                    &mut flows,
                    client,
                    datagram,
                    &to,
                    &latest,
                    &socket,
                    &shutdown,
                    &mut full_logged,
                );
            }
        }
    };
    warren_common::udp_thread::run(serving).await;
}

/// Starts a flow for `client` with its first datagram, unless [`MAX_FLOWS`] are alive.
#[allow(clippy::too_many_arguments)]
fn start(
    flows: &mut HashMap<SocketAddr, mpsc::Sender<Vec<u8>>>,
    client: SocketAddr,
    first: Vec<u8>,
    to: &Address,
    latest: &Latest,
    socket: &Arc<UdpSocket>,
    shutdown: &CancellationToken,
    full_logged: &mut bool,
) {
    if flows.len() >= MAX_FLOWS {
        flows.retain(|_, flow| !flow.is_closed());
        if flows.len() >= MAX_FLOWS {
            if !*full_logged {
                tracing::warn!(%client, "UDP forward has {MAX_FLOWS} flows: datagrams from new clients dropped");
                *full_logged = true;
            }
            return;
        }
    }
    *full_logged = false;
    let (queue, datagrams) = mpsc::channel(FLOW_QUEUE);
    let _ = queue.try_send(first);
    flows.insert(client, queue);
    let flow = Flow {
        client,
        to: to.clone(),
        outbounds: latest.outbounds(client),
        socket: socket.clone(),
        protocol: "forward-udp",
    };
    tokio::spawn(flow.run(datagrams, shutdown.clone()));
}

/// One client's datagrams to a fixed target and the target's back (a forward's flow, or a
/// transparent proxy's: redir/udp.rs).
pub struct Flow {
    pub client: SocketAddr,
    pub to: Address,
    pub outbounds: Outbounds,
    /// Where replies leave from: the address the client sent to (the forward's socket, or a
    /// transparent socket bound to the original destination).
    pub socket: Arc<UdpSocket>,
    /// The front end's name on the flow's lines: `forward-udp` or `redir-udp`.
    pub protocol: &'static str,
}

/// What a flow counted, for its "UDP flow finished" line.
#[derive(Default)]
struct Counts {
    sent: u64,
    received: u64,
    dropped: u64,
}

impl Flow {
    /// Relays the flow's `datagrams` (queued by its dispatcher) and the answers until it ends
    /// (idle, its way out failed, the queue closed, or `shutdown`), then logs it once.
    pub async fn run(self, mut datagrams: mpsc::Receiver<Vec<u8>>, shutdown: CancellationToken) {
        let (peer, target) = (self.client, &self.to);
        let mut counts = Counts::default();
        let action = self.outbounds.route_target(target).clone();
        let end = tokio::select! {
            () = shutdown.cancelled() => "shutdown",
            end = async {
                match &action {
                    LocalAction::Block => {
                        tracing::info!(%peer, %target, protocol = self.protocol, "UDP flow blocked by local.routes");
                        "blocked"
                    }
                    LocalAction::Direct => self.direct(&mut datagrams, &mut counts).await,
                    LocalAction::Proxy(_) => self.associate(&action, &mut datagrams, &mut counts).await,
                }
            } => end,
        };
        tracing::info!(%peer, %target, protocol = self.protocol,
            datagrams_sent = counts.sent, datagrams_received = counts.received, dropped = counts.dropped, end,
            "UDP flow finished");
    }

    /// Route `direct`: a socket of our own connected to the target (resolved here).
    async fn direct(&self, datagrams: &mut mpsc::Receiver<Vec<u8>>, counts: &mut Counts) -> &'static str {
        let resolved = match &self.to {
            Address::Ip(addr) => Some(*addr),
            Address::Domain(name, port) => tokio::net::lookup_host((name.as_str(), *port))
                .await
                .ok()
                .and_then(|mut addrs| addrs.next()),
        };
        let Some(target) = resolved else {
            return "target did not resolve";
        };
        let any: SocketAddr = match target {
            SocketAddr::V4(_) => (std::net::Ipv4Addr::UNSPECIFIED, 0).into(),
            SocketAddr::V6(_) => (std::net::Ipv6Addr::UNSPECIFIED, 0).into(),
        };
        let outbound = match UdpSocket::bind(any).await {
            Ok(s) if s.connect(target).await.is_ok() => s,
            _ => return "cannot open a UDP socket towards the target",
        };
        let mut buf = vec![0u8; MAX_DATAGRAM];
        let idle = self.outbounds.idle();
        loop {
            tokio::select! {
                d = datagrams.recv() => match d {
                    Some(d) => match outbound.send(&d).await {
                        Ok(_) => counts.sent += 1,
                        Err(_) => counts.dropped += 1,
                    },
                    None => return "closed",
                },
                got = outbound.recv(&mut buf) => match got {
                    Ok(n) => {
                        if self.socket.send_to(buf.get(..n).unwrap_or_default(), self.client).await.is_ok() {
                            counts.received += 1;
                        }
                    }
                    // ICMP port unreachable from the target: the next datagram may still get through.
                    Err(_) => counts.dropped += 1,
                },
                () = tokio::time::sleep(idle) => return "idle",
            }
        }
    }

    /// Route `proxy`: a UDP association along the route, as a SOCKS5 UDP ASSOCIATE would open.
    async fn associate(
        &self,
        action: &LocalAction,
        datagrams: &mut mpsc::Receiver<Vec<u8>>,
        counts: &mut Counts,
    ) -> &'static str {
        let (mut upstream, mut writer) = match Upstream::open(&self.outbounds, action, &self.to).await {
            Ok(opened) => opened,
            Err(_) => return "the association did not open",
        };
        tracing::info!(peer = %self.client, target = %self.to, protocol = self.protocol, "UDP flow open");
        let mut buf = vec![0u8; MAX_DATAGRAM];
        let idle = self.outbounds.idle();
        let relaying = async {
            loop {
                tokio::select! {
                    d = datagrams.recv() => {
                        let Some(d) = d else { return "closed" };
                        match upstream.send(&self.to, &d).await {
                            Ok(Queued::Yes) => counts.sent += 1,
                            Ok(Queued::Dropped) => counts.dropped += 1,
                            Err(()) => return "tunnel error",
                        }
                        upstream.flush().await;
                    }
                    frames = upstream.recv(&mut buf) => {
                        let frames = match frames {
                            Ok(frames) => frames,
                            Err(end) => return end,
                        };
                        for frame in frames {
                            if self.socket.send_to(&frame.data, self.client).await.is_ok() {
                                counts.received += 1;
                            }
                        }
                    }
                    () = tokio::time::sleep(idle) => return "idle",
                }
            }
        };
        let writing = async {
            match writer.as_mut() {
                Some(writer) => writer.run().await,
                None => std::future::pending().await,
            }
        };
        let end = tokio::select! {
            end = relaying => end,
            end = writing => end,
        };
        if let Some(writer) = writer {
            writer.close().await;
        }
        upstream.close().await;
        end
    }
}
