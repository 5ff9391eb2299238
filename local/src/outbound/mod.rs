//! How a request leaves the local: the one seam every front end (SOCKS5, SOCKS4, HTTP CONNECT
//! and forwarding, BIND, UDP-over-TCP) opens its outbound through, by way of an [`Outbounds`]
//! handle (the routing rules and the deadlines; nothing else of the configuration).
//!
//! ```text
//! route (local.routes, first match, else local.default)
//!   block   → refused: SOCKS5 0x02, SOCKS4 0x5B, HTTP 403
//!   direct  → Happy Eyeballs from the local itself               → Outbound::Direct
//!   proxy   → each way out in order, those marked down last (health.rs):
//!               remote → a warm TCP connection (warm.rs) or a new one,
//!                        + tunnel handshake (tunnel.rs)           → Outbound::Tunnel
//!               chain  → hop 1 tunnel, CONNECT hop 2, hop 2's handshake inside it, …,
//!                        optionally a SOCKS5 client handshake last (chain.rs, upstream.rs)
//!                                                                 → Outbound::Nested
//!             the next one is tried when the way there fails; an answer about the target
//!             (a refusal) ends the attempt
//! ```
//!
//! Everything up to the answer runs under one deadline, `local.connect_timeout`. The
//! single-remote case stays a concrete type (no dynamic dispatch in the relay's hot path);
//! only chains are boxed.

mod chain;
pub mod current;
pub mod health;
mod tunnel;
mod upstream;
mod warm;

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::{timeout_at, Instant};
use warren_common::config::local_routes::{LocalAction, LocalRouting, Via};
use warren_common::config::{LocalConfig, UdpTransport};
use warren_common::dial::ConnectFailure;
use warren_common::metrics;
use warren_common::proto::address::Address;
use warren_common::proto::header::{Command, RequestHeader};
use warren_common::proto::status::Status;
use warren_common::stream::EncryptedStream;
use warren_common::tunnel::HandshakeError;

use self::chain::Stream;
pub use self::health::Health;
pub use self::tunnel::OpenError;

/// What opening an outbound needs: the configuration's routing rules (with the remotes' health)
/// and the deadlines. Cheap to clone (two reference counts); front ends hand it to the session,
/// and a UDP association takes its own clone to the datagram thread.
#[derive(Clone)]
pub struct Outbounds {
    config: Arc<LocalConfig>,
    /// Which remotes answered their last health check (failover tries the others first).
    health: Arc<Health>,
    /// The client this connection serves: every line logged for it names it.
    peer: SocketAddr,
    /// `local.connect_timeout`: dialling a way out and hearing its answer.
    connect: Duration,
    /// `local.idle_timeout`: an open outbound with no byte either way for this long is closed.
    idle: Duration,
    /// `local.udp_transport`: how a UDP association's datagrams travel.
    udp_transport: UdpTransport,
}

impl Outbounds {
    pub fn new(config: Arc<LocalConfig>, health: Arc<Health>, peer: SocketAddr) -> Outbounds {
        Outbounds {
            peer,
            connect: config.timeouts.connect,
            idle: config.timeouts.idle,
            udp_transport: config.udp_transport,
            config,
            health,
        }
    }

    fn routing(&self) -> &LocalRouting {
        &self.config.routing
    }

    /// The client's address, for the lines logged about its requests.
    pub fn peer(&self) -> SocketAddr {
        self.peer
    }

    /// Whether `via`'s first remote answered its last health check.
    pub fn is_up(&self, via: &Via) -> bool {
        via.first_remote().is_none_or(|e| self.health.is_up(&e.name))
    }

    /// How long an open outbound may stay silent in both directions (the relay's limit).
    pub fn idle(&self) -> Duration {
        self.idle
    }

    /// The deadline for opening an outbound.
    pub fn connect_timeout(&self) -> Duration {
        self.connect
    }

    /// How UDP associations carry their datagrams.
    pub fn udp_transport(&self) -> UdpTransport {
        self.udp_transport
    }

    /// The routing decision for a request: by its target, except UDP associations (whose
    /// datagrams each name their own destination), which take the default route.
    pub fn route(&self, header: &RequestHeader) -> &LocalAction {
        match header.command {
            Command::UdpOverTcp => &self.routing().router.default,
            _ => self.routing().router.route(&header.target),
        }
    }

    /// The routing decision for `target` as such (a forward's fixed target, a name the DNS
    /// forwarder is asked for), whatever the command.
    pub fn route_target(&self, target: &Address) -> &LocalAction {
        self.routing().router.route(target)
    }

    /// Where a lookup of `name` goes (the DNS forwarder): through the first way out that any
    /// connection to the name, on any port, would take through a tunnel (a lookup in the clear
    /// would precede that connection); else `direct` if some connection goes direct; else
    /// `block` ([`warren_common::route::Router::actions_for_name`]).
    pub fn route_name(&self, name: &str) -> &LocalAction {
        let actions = self.routing().router.actions_for_name(name);
        let proxy = actions.iter().find(|a| matches!(a, LocalAction::Proxy(_)));
        let direct = actions.iter().find(|a| matches!(a, LocalAction::Direct));
        proxy.or(direct).copied().unwrap_or(&LocalAction::Block)
    }

    /// Whether `local.routes` block `target`: a UDP association's datagrams each name their own
    /// destination, and a blocked one is dropped.
    pub fn blocks(&self, target: &Address) -> bool {
        matches!(self.routing().router.route(target), LocalAction::Block)
    }

    /// Opens the outbound for `header` as the routing rules say, with `initial` client bytes
    /// carried in its first chunk (or written first). Returns the bound address for the
    /// client's reply and the open outbound.
    pub async fn open(&self, header: RequestHeader, initial: &[u8]) -> Result<(Address, Outbound), OpenError> {
        self.open_along(self.route(&header), &header, initial).await
    }

    /// [`Outbounds::open`] along an already chosen route.
    pub async fn open_along(
        &self,
        action: &LocalAction,
        header: &RequestHeader,
        initial: &[u8],
    ) -> Result<(Address, Outbound), OpenError> {
        let deadline = Instant::now() + self.connect;
        match action {
            LocalAction::Block => Err(OpenError::Blocked),
            LocalAction::Direct => match timeout_at(deadline, direct(header, initial)).await {
                Ok(result) => result,
                Err(_) => Err(OpenError::TimedOut("the direct connection".into(), self.connect)),
            },
            LocalAction::Proxy(list) => {
                // Ways out whose first remote answered its last health check go first, in order;
                // the others stay as a last resort (the check may be stale).
                let (up, down): (Vec<&Via>, Vec<&Via>) = list.iter().partition(|v| self.is_up(v));
                let order: Vec<&Via> = up.into_iter().chain(down).collect();
                let mut last = None;
                for (i, via) in order.iter().enumerate() {
                    match timeout_at(deadline, open_via(via, header, initial, &self.health)).await {
                        Ok(Ok(opened)) => {
                            if list.len() > 1 {
                                tracing::info!(peer = %self.peer, target = %header.target, via = via.name(), "served by {}", via.name());
                            }
                            return Ok(opened);
                        }
                        Ok(Err(e)) if e.is_about_target() => return Err(e),
                        Ok(Err(e)) => {
                            if i + 1 < order.len() {
                                tracing::warn!(peer = %self.peer, target = %header.target, via = via.name(), "{e}: trying the next way out");
                                let remote = metrics::label(via.name());
                                warren_common::metrics::get()
                                    .failovers
                                    .get_or_create(&metrics::Remote { remote })
                                    .inc();
                            }
                            last = Some(e);
                        }
                        Err(_) => return Err(OpenError::TimedOut(via.name().to_owned(), self.connect)),
                    }
                }
                Err(last.unwrap_or(OpenError::Unsupported("the route names no way out")))
            }
        }
    }
}

/// An open outbound, ready for the relay.
pub enum Outbound {
    /// A tunnel to one warren-remote (the common case, statically dispatched).
    Tunnel(EncryptedStream<TcpStream>),
    /// Route `direct`: a connection to the target itself.
    Direct(TcpStream),
    /// A chain: tunnels nested in tunnels, perhaps a SOCKS5 upstream at the end.
    Nested(Box<dyn Stream>),
}

macro_rules! each {
    ($self:ident, $s:ident => $e:expr) => {
        match $self.get_mut() {
            Outbound::Tunnel($s) => $e,
            Outbound::Direct($s) => $e,
            Outbound::Nested($s) => $e,
        }
    };
}

impl AsyncRead for Outbound {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        each!(self, s => Pin::new(s).poll_read(cx, buf))
    }
}

impl AsyncWrite for Outbound {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        each!(self, s => Pin::new(s).poll_write(cx, buf))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        each!(self, s => Pin::new(s).poll_flush(cx))
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        each!(self, s => Pin::new(s).poll_shutdown(cx))
    }
}

/// Route `direct`: CONNECT only (BIND and UDP need a remote to listen and relay).
async fn direct(header: &RequestHeader, initial: &[u8]) -> Result<(Address, Outbound), OpenError> {
    if header.command != Command::Connect {
        return Err(OpenError::Unsupported(
            "BIND and UDP ASSOCIATE need a remote: the direct route carries CONNECT only",
        ));
    }
    let mut stream = warren_common::dial::connect(&header.target, None)
        .await
        .map_err(|e| OpenError::Direct(e.status()))?;
    warren_common::net::tune(&stream);
    if !initial.is_empty() {
        stream
            .write_all(initial)
            .await
            .map_err(|e| OpenError::Direct(ConnectFailure::of(&e).status()))?;
    }
    let bound = stream.local_addr().map(Address::Ip).unwrap_or(Address::UNSPECIFIED);
    Ok((bound, Outbound::Direct(stream)))
}

async fn open_via(
    via: &Via,
    header: &RequestHeader,
    initial: &[u8],
    health: &Health,
) -> Result<(Address, Outbound), OpenError> {
    match via {
        Via::Remote(remote) => {
            let (status, bound, tunnel) = match health.warm.take(remote) {
                Some(warm) => match tunnel::handshake(warm, remote, header, initial).await {
                    // The remote closed the warm connection as the request went out, before
                    // reading it (warm.rs): dial afresh, once.
                    Err(OpenError::Handshake(_, HandshakeError::Closed | HandshakeError::Io(_))) => {
                        tracing::debug!(remote = %remote.name, "warm connection was closed; dialling afresh");
                        tunnel::handshake(tunnel::dial(remote).await?, remote, header, initial).await?
                    }
                    other => other?,
                },
                None => tunnel::handshake(tunnel::dial(remote).await?, remote, header, initial).await?,
            };
            if status != Status::Succeeded {
                return Err(OpenError::Refused(remote.name.clone(), status));
            }
            Ok((bound, Outbound::Tunnel(tunnel)))
        }
        Via::Chain(chain) => {
            let (bound, stream) = chain::open(chain, header, initial).await?;
            Ok((bound, Outbound::Nested(stream)))
        }
    }
}
