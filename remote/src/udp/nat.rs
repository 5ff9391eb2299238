//! The NAT both UDP transports share: one association's outbound sockets (one per address
//! family, bound on first use), the names it resolved, and the destinations it sent to (only
//! they may answer).

use std::collections::{HashMap, HashSet};
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};

use tokio::net::UdpSocket;
use warren_common::config::RemoteConfig;
use warren_common::proto::address::Address;

use crate::outbound::allowed_addresses;

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
}

impl Nat {
    /// Where a frame goes, if the ACL allows it (None: drop it).
    pub async fn destination(&mut self, target: &Address, config: &RemoteConfig) -> Option<SocketAddr> {
        if let Address::Domain(name, port) = target {
            if let Some(found) = self.names.get(&(name.clone(), *port)) {
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
            self.names.insert((name.clone(), *port), found);
        }
        found
    }

    /// Sends `data` to `to` from the association's socket for its family; false if not sent.
    /// Remembers `to` so its answers are let through.
    pub async fn send(&mut self, to: SocketAddr, data: &[u8]) -> bool {
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
