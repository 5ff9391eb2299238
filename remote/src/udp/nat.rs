//! The NAT both UDP transports share: one association's outbound sockets (one per address
//! family, bound on first use), the names it resolved, and the destinations it sent to (only
//! they may answer).
//!
//! Every datagram is routed on its own, like a CONNECT target ([`Nat::forward`]):
//!
//! ```text
//! datagram (destination, data)
//!   → remote.routes (first match, else remote.default)
//!       direct    → remote ACL on the name and the resolved address → NAT socket (send_to)
//!       via: NAME → UdpSink::Agent → that agent's leg (agent/udp.rs), which sends it from inside
//!                   the agent's network; its answers come back through `Nat::agents`
//! ```

use std::collections::{HashMap, HashSet};
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};

use tokio::net::UdpSocket;
use warren_common::config::RemoteConfig;
use warren_common::proto::address::Address;
use warren_common::route::RemoteAction;

use crate::agent::udp::AgentLegs;
use crate::outbound::allowed_addresses;
use crate::shared::Shared;

/// Names remembered per association (so a domain target is not resolved per datagram).
const NAME_CACHE: usize = 64;
/// Destinations remembered per association; only they may answer (see [`Nat::answer_allowed`]).
const PEERS: usize = 4096;

/// The association's outbound sockets and resolved names.
#[derive(Default)]
pub struct Nat {
    pub v4: Option<UdpSocket>,
    pub v6: Option<UdpSocket>,
    names: HashMap<(String, u16), Option<SocketAddr>>,
    /// Addresses this association has sent to.
    peers: HashSet<SocketAddr>,
    /// Legs to the agents some of its datagrams are routed to; `agents.recv()` is the next
    /// datagram an agent sent back (never ready while none went via an agent).
    pub agents: AgentLegs,
}

/// Where one datagram goes, as `remote.routes` decides for its destination.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UdpSink<'a> {
    /// Out of this machine's NAT sockets (the ACL still applies).
    Direct,
    /// To the reverse-tunnel agent registered under this name.
    Agent(&'a str),
}

impl<'a> UdpSink<'a> {
    /// The route for a datagram to `target`: the same rules as a CONNECT to it.
    pub fn route(target: &Address, config: &'a RemoteConfig) -> UdpSink<'a> {
        match config.routes.route(target) {
            RemoteAction::Direct => UdpSink::Direct,
            RemoteAction::Via(agent) => UdpSink::Agent(agent),
        }
    }
}

impl Nat {
    /// Routes one datagram for `target` and sends it; true if it left this machine. A datagram
    /// the route, the ACL or the name lookup rules out is dropped (false).
    pub async fn forward(&mut self, target: &Address, data: &[u8], shared: &Shared) -> bool {
        let config = &shared.config;
        match UdpSink::route(target, config) {
            UdpSink::Direct => match self.destination(target, config).await {
                Some(to) => self.send(to, data).await,
                None => false,
            },
            // The agent applies its own ACL and NAT rules; never sent from here, which would
            // bypass the route and reach the wrong network.
            UdpSink::Agent(agent) => self.agents.send(agent, target, data, shared),
        }
    }

    /// Where a datagram for `target` goes out, if the ACL allows it (None: drop it).
    async fn destination(&mut self, target: &Address, config: &RemoteConfig) -> Option<SocketAddr> {
        if let Address::Domain(name, port) = target {
            if let Some(found) = self.names.get(&(name.to_string(), *port)) {
                return *found;
            }
        }
        let lookup = tokio::time::timeout(config.timeouts.connect, allowed_addresses(target, &config.acl));
        let found = match lookup.await {
            Ok(Ok(addrs)) => addrs.first().copied(),
            _ => None,
        };
        if let Address::Domain(name, port) = target {
            if self.names.len() >= NAME_CACHE {
                self.names.clear();
            }
            self.names.insert((name.to_string(), *port), found);
        }
        found
    }

    /// Sends `data` to `to` from the association's socket for its family; false if not sent.
    /// Remembers `to` so its answers are let through.
    async fn send(&mut self, to: SocketAddr, data: &[u8]) -> bool {
        if self.peers.len() >= PEERS {
            self.peers.clear();
        }
        self.peers.insert(to);
        match self.socket(to).await {
            Some(socket) => socket.send_to(data, to).await.is_ok(),
            None => false,
        }
    }

    /// Only addresses the client sent to may answer (address- and port-restricted NAT), so
    /// nobody can inject datagrams into an association by guessing its outbound port.
    pub fn answer_allowed(&self, from: SocketAddr) -> bool {
        self.peers.contains(&from)
    }

    async fn socket(&mut self, to: SocketAddr) -> Option<&UdpSocket> {
        let (slot, bind) = if to.is_ipv4() {
            (&mut self.v4, SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0)))
        } else {
            (&mut self.v6, SocketAddr::from((Ipv6Addr::UNSPECIFIED, 0)))
        };
        if slot.is_none() {
            *slot = UdpSocket::bind(bind).await.ok();
        }
        slot.as_ref()
    }
}

/// The next datagram on `socket`; never ready while the socket is not bound yet.
pub async fn recv(socket: &Option<UdpSocket>, buf: &mut [u8]) -> std::io::Result<(usize, SocketAddr)> {
    match socket {
        Some(s) => s.recv_from(buf).await,
        None => std::future::pending().await,
    }
}
