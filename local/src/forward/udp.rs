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
//! Nothing here waits for a flow: a datagram for a flow whose queue is full, or beyond the
//! front end's [`QUEUE_BYTES`], is dropped (UDP may lose datagrams under overload, never stall
//! the others). A flow ends after `local.idle_timeout` without a datagram either way; one whose
//! way out is blocked or failed stays until then too, dropping its datagrams, so a client that
//! keeps sending does not start (and log) a flow per datagram. At most [`MAX_FLOWS`] flows live
//! at once (a new client beyond that is dropped, and logged once). [`Flows`] and [`Flow`] serve
//! the transparent proxy's UDP too (redir/udp.rs).

use std::collections::HashMap;
use std::hash::Hash;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use tokio::net::UdpSocket;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use warren_common::config::local_routes::LocalAction;
use warren_common::proto::address::Address;

use crate::outbound::current::Latest;
use crate::outbound::Outbounds;
use crate::session::udp::{Queued, Upstream};

/// Flows one front end keeps at once.
pub const MAX_FLOWS: usize = 1024;
/// Datagrams queued for one flow before new ones are dropped.
const FLOW_QUEUE: usize = 64;
/// Bytes queued for all the flows of one front end before new datagrams are dropped (the
/// queues fill while a flow's way out is being opened).
pub const QUEUE_BYTES: usize = 16 << 20;
/// Largest datagram read (a UDP payload's maximum).
pub const MAX_DATAGRAM: usize = 65_535;

/// Serves a UDP forward to `to` on `socket` until `shutdown`. Runs on the process's UDP thread
/// (`warren_common::udp_thread`), where the flows' sockets are created.
pub async fn serve(socket: UdpSocket, to: Address, latest: Latest, shutdown: CancellationToken) {
    let serving = async move {
        let socket = Arc::new(socket);
        let mut flows = Flows::new("UDP forward");
        let mut buf = vec![0u8; MAX_DATAGRAM];
        loop {
            let (n, client) = tokio::select! {
                () = shutdown.cancelled() => break,
                got = socket.recv_from(&mut buf) => match got {
                    Ok(got) => got,
                    // An ICMP error for an earlier send shows up here on some systems: not fatal.
                    Err(_) => continue,
                },
            };
            let make = || {
                Some(Flow {
                    client,
                    to: to.clone(),
                    outbounds: latest.outbounds(client),
                    socket: socket.clone(),
                    protocol: "forward-udp",
                    refuse_direct: false,
                })
            };
            flows.dispatch(client, buf.get(..n).unwrap_or_default(), make, &shutdown);
        }
    };
    warren_common::udp_thread::run(serving).await;
}

/// A datagram counted against its front end's [`QUEUE_BYTES`] until it is dropped.
pub struct Charged {
    data: Vec<u8>,
    queued: Arc<AtomicUsize>,
}

impl Drop for Charged {
    fn drop(&mut self) {
        self.queued.fetch_sub(self.data.len(), Ordering::Relaxed);
    }
}

/// The live flows of one front end, by key (the client's address; for redir, with the
/// original destination), and the bytes queued for them.
pub struct Flows<K> {
    flows: HashMap<K, mpsc::Sender<Charged>>,
    queued: Arc<AtomicUsize>,
    name: &'static str,
    full_logged: bool,
}

impl<K: Hash + Eq + std::fmt::Debug> Flows<K> {
    /// An empty table; `name` is the front end's, for the one line logged when it is full.
    pub fn new(name: &'static str) -> Flows<K> {
        Flows {
            flows: HashMap::new(),
            queued: Arc::new(AtomicUsize::new(0)),
            name,
            full_logged: false,
        }
    }

    /// Hands a copy of `datagram` to `key`'s flow; when it has none (or it ended), starts the
    /// one `make` builds (None: dropped). Never waits.
    pub fn dispatch(
        &mut self,
        key: K,
        datagram: &[u8],
        make: impl FnOnce() -> Option<Flow>,
        shutdown: &CancellationToken,
    ) {
        if self.queued.fetch_add(datagram.len(), Ordering::Relaxed) + datagram.len() > QUEUE_BYTES {
            self.queued.fetch_sub(datagram.len(), Ordering::Relaxed);
            return;
        }
        let mut charged = Charged {
            data: datagram.to_vec(),
            queued: self.queued.clone(),
        };
        if let Some(flow) = self.flows.get(&key) {
            match flow.try_send(charged) {
                Ok(()) | Err(mpsc::error::TrySendError::Full(_)) => return,
                // The flow ended (idle): this datagram starts another.
                Err(mpsc::error::TrySendError::Closed(back)) => {
                    self.flows.remove(&key);
                    charged = back;
                }
            }
        }
        if self.flows.len() >= MAX_FLOWS {
            self.flows.retain(|_, flow| !flow.is_closed());
            if self.flows.len() >= MAX_FLOWS {
                if !self.full_logged {
                    tracing::warn!(
                        ?key,
                        "{} has {MAX_FLOWS} flows: datagrams from new clients dropped",
                        self.name
                    );
                    self.full_logged = true;
                }
                return;
            }
        }
        self.full_logged = false;
        let Some(flow) = make() else { return };
        let (queue, datagrams) = mpsc::channel(FLOW_QUEUE);
        let _ = queue.try_send(charged);
        self.flows.insert(key, queue);
        tokio::spawn(flow.run(datagrams, shutdown.clone()));
    }
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
    /// Refuse a `direct` route (redir: sending from here would be redirected back to us).
    pub refuse_direct: bool,
}

/// What a flow counted, for its "UDP flow finished" line.
#[derive(Default)]
struct Counts {
    sent: u64,
    received: u64,
    dropped: u64,
}

impl Flow {
    /// Relays the flow's `datagrams` (queued by [`Flows::dispatch`]) and the answers until it
    /// ends (idle, the queue closed, or `shutdown`), then logs it once. A flow whose way out is
    /// refused or fails drops its datagrams until it is idle.
    pub async fn run(self, mut datagrams: mpsc::Receiver<Charged>, shutdown: CancellationToken) {
        let (peer, target, protocol) = (self.client, &self.to, self.protocol);
        let mut counts = Counts::default();
        let action = self.outbounds.route_target(target).clone();
        let end = tokio::select! {
            () = shutdown.cancelled() => "shutdown",
            end = async {
                let relayed = match &action {
                    LocalAction::Block => Err("blocked by local.routes"),
                    LocalAction::Direct if self.refuse_direct => {
                        Err("routed direct: refused (sent from here it would be redirected back to us)")
                    }
                    LocalAction::Direct => self.direct(&mut datagrams, &mut counts).await,
                    LocalAction::Proxy(_) => self.associate(&action, &mut datagrams, &mut counts).await,
                };
                match relayed {
                    Ok(end) => end,
                    Err(why) => {
                        tracing::info!(%peer, %target, protocol, "UDP flow not carried: {why}");
                        self.absorb(&mut datagrams, &mut counts).await;
                        why
                    }
                }
            } => end,
        };
        tracing::info!(%peer, %target, protocol,
            datagrams_sent = counts.sent, datagrams_received = counts.received, dropped = counts.dropped, end,
            "UDP flow finished");
    }

    /// Drops the flow's datagrams until none comes for `idle_timeout`.
    async fn absorb(&self, datagrams: &mut mpsc::Receiver<Charged>, counts: &mut Counts) {
        let idle = self.outbounds.idle();
        while let Ok(Some(_)) = tokio::time::timeout(idle, datagrams.recv()).await {
            counts.dropped += 1;
        }
    }

    /// Route `direct`: a socket of our own connected to the target (resolved here). `Err`:
    /// it could not be opened.
    async fn direct(
        &self,
        datagrams: &mut mpsc::Receiver<Charged>,
        counts: &mut Counts,
    ) -> Result<&'static str, &'static str> {
        let resolved = match &self.to {
            Address::Ip(addr) => Some(*addr),
            Address::Domain(name, port) => tokio::net::lookup_host((name.as_str(), *port))
                .await
                .ok()
                .and_then(|mut addrs| addrs.next()),
        };
        let Some(target) = resolved else {
            return Err("the target did not resolve");
        };
        let any: SocketAddr = match target {
            SocketAddr::V4(_) => (std::net::Ipv4Addr::UNSPECIFIED, 0).into(),
            SocketAddr::V6(_) => (std::net::Ipv6Addr::UNSPECIFIED, 0).into(),
        };
        let outbound = match UdpSocket::bind(any).await {
            Ok(s) if s.connect(target).await.is_ok() => s,
            _ => return Err("cannot open a UDP socket towards the target"),
        };
        let mut buf = vec![0u8; MAX_DATAGRAM];
        let idle = self.outbounds.idle();
        loop {
            tokio::select! {
                d = datagrams.recv() => match d {
                    Some(d) => match outbound.send(&d.data).await {
                        Ok(_) => counts.sent += 1,
                        Err(_) => counts.dropped += 1,
                    },
                    None => return Ok("closed"),
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
                // Recreated each time round: "idle" means nothing either way for that long.
                () = tokio::time::sleep(idle) => return Ok("idle"),
            }
        }
    }

    /// Route `proxy`: a UDP association along the route, as a SOCKS5 UDP ASSOCIATE would open.
    /// `Err`: it did not open.
    async fn associate(
        &self,
        action: &LocalAction,
        datagrams: &mut mpsc::Receiver<Charged>,
        counts: &mut Counts,
    ) -> Result<&'static str, &'static str> {
        let (mut upstream, mut writer) = match Upstream::open(&self.outbounds, action, &self.to).await {
            Ok(opened) => opened,
            Err(_) => return Err("the association did not open"),
        };
        tracing::info!(peer = %self.client, target = %self.to, protocol = self.protocol, "UDP flow open");
        let mut buf = vec![0u8; MAX_DATAGRAM];
        let idle = self.outbounds.idle();
        let relaying = async {
            loop {
                tokio::select! {
                    d = datagrams.recv() => {
                        let Some(d) = d else { return "closed" };
                        match upstream.send(&self.to, &d.data).await {
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
        Ok(end)
    }
}
