//! The NAT both UDP transports share: one association's outbound sockets (one per address
//! family, bound on first use), the names it resolved, and the destinations it sent to (only
//! they may answer).
//!
//! Every datagram is routed on its own, like a CONNECT target ([`Nat::forward`]):
//!
//! ```text
//! datagram (destination, data)
//!   → remote.routes (first match, else remote.default)
//!       direct    → remote ACL on the name and the resolved address → the batch for that
//!                   destination → NAT socket (one GSO send per run of same-sized datagrams,
//!                   at [`Nat::flush`] or when the next datagram cannot join)
//!       via: NAME → UdpSink::Agent → that agent's leg (agent/udp.rs), which sends it from inside
//!                   the agent's network; its answers come back through `Nat::agents`
//! ```
//!
//! Answers are read with GRO ([`recv`]): one read may hold several datagrams from one source,
//! split by [`segments`].

use std::collections::{HashMap, HashSet};
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;

use tokio::net::UdpSocket;
use warren_common::acl::{Acl, Verdict};
use warren_common::config::remote_users::RemoteUser;
use warren_common::config::RemoteConfig;
use warren_common::datagrams::{recv_one, Batch, BatchSocket, RecvMeta};
use warren_common::proto::address::Address;
use warren_common::route::RemoteAction;

use crate::agent::udp::AgentLegs;
use crate::outbound::allowed_addresses;
use crate::shared::Shared;

/// Names remembered per association (so a domain target is not resolved per datagram).
const NAME_CACHE: usize = 64;
/// Destinations remembered per association; only they may answer (see [`Nat::answer_allowed`]).
const PEERS: usize = 4096;

pub use warren_common::datagrams::segments;

/// The association's outbound sockets and resolved names.
#[derive(Default)]
pub struct Nat {
    pub v4: Option<BatchSocket>,
    pub v6: Option<BatchSocket>,
    /// Datagrams routed direct and not yet sent, all for `out_to`.
    out: Batch,
    out_to: Option<SocketAddr>,
    names: HashMap<(String, u16), Option<SocketAddr>>,
    /// Addresses this association has sent to.
    peers: HashSet<SocketAddr>,
    /// Legs to the agents some of its datagrams are routed to; `agents.recv()` is the next
    /// datagram an agent sent back (never ready while none went via an agent).
    pub agents: AgentLegs,
    /// The user of `remote.users` the association belongs to, whose ACL applies instead of
    /// `remote.acl` (set by the UDP-over-TCP command; `None` otherwise).
    pub user: Option<Arc<RemoteUser>>,
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
    /// The ACL datagrams of this association go by.
    fn acl<'a>(&'a self, config: &'a RemoteConfig) -> &'a Acl {
        self.user.as_ref().map_or(&config.acl, |user| &user.acl)
    }

    /// Routes one datagram for `target`; true if it was sent or queued to leave this machine at
    /// the next [`Nat::flush`] (callers flush after each burst). A datagram the route, the ACL
    /// or the name lookup rules out is dropped (false).
    pub async fn forward(&mut self, target: &Address, data: &[u8], shared: &Shared) -> bool {
        let config = &*shared.config();
        match UdpSink::route(target, config) {
            UdpSink::Direct => match self.destination(target, config).await {
                Some(to) => self.send(to, data).await,
                None => false,
            },
            // The agent applies its own ACL and NAT rules; never sent from here, which would
            // bypass the route and reach the wrong network. A user's own rules hold on the way.
            UdpSink::Agent(_)
                if self
                    .user
                    .as_ref()
                    .is_some_and(|u| u.own.rule_for(target) == Some(Verdict::Deny)) =>
            {
                false
            }
            UdpSink::Agent(agent) => self.agents.send(agent, target, data, shared),
        }
    }

    /// Where a datagram for `target` goes out, if the ACL allows it (None: drop it).
    async fn destination(&mut self, target: &Address, config: &RemoteConfig) -> Option<SocketAddr> {
        match target {
            // An address needs no lookup: the ACL alone decides, with no timer and no
            // allocation per datagram (what `allowed_addresses` decides for it too).
            Address::Ip(addr) => return (self.acl(config).check(None, addr.ip()) == Verdict::Allow).then_some(*addr),
            Address::Domain(name, port) => {
                if let Some(found) = self.names.get(&(name.to_string(), *port)) {
                    return *found;
                }
            }
        }
        let lookup = tokio::time::timeout(config.timeouts.connect, allowed_addresses(target, self.acl(config)));
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

    /// Queues `data` for `to` on the association's socket for its family (sending what was
    /// gathered for another destination first); false if there is no socket. Remembers `to` so
    /// its answers are let through.
    async fn send(&mut self, to: SocketAddr, data: &[u8]) -> bool {
        if self.peers.len() >= PEERS {
            self.peers.clear();
        }
        self.peers.insert(to);
        if self.out_to.is_some_and(|gathered| gathered != to) {
            self.flush().await;
        }
        let Some(socket) = bound(if to.is_ipv4() { &mut self.v4 } else { &mut self.v6 }, to).await else {
            return false;
        };
        self.out_to = Some(to);
        self.out
            .push(socket, to, |buf| {
                buf.extend_from_slice(data);
                true
            })
            .await
    }

    /// Sends the datagrams queued by [`Nat::forward`].
    pub async fn flush(&mut self) {
        let Some(to) = self.out_to.take() else { return };
        if let Some(socket) = if to.is_ipv4() { &self.v4 } else { &self.v6 } {
            self.out.flush(socket, to).await;
        }
    }

    /// Only addresses the client sent to may answer (address- and port-restricted NAT), so
    /// nobody can inject datagrams into an association by guessing its outbound port.
    pub fn answer_allowed(&self, from: SocketAddr) -> bool {
        self.peers.contains(&from)
    }
}

/// The socket in `slot` (the family of `to`), bound on first use; None if it cannot be.
async fn bound(slot: &mut Option<BatchSocket>, to: SocketAddr) -> Option<&BatchSocket> {
    if slot.is_none() {
        let any = if to.is_ipv4() {
            SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0))
        } else {
            SocketAddr::from((Ipv6Addr::UNSPECIFIED, 0))
        };
        *slot = match UdpSocket::bind(any).await.and_then(BatchSocket::new) {
            Ok(socket) => Some(socket),
            Err(e) => {
                tracing::debug!("cannot bind a UDP NAT socket: {e}");
                None
            }
        };
    }
    slot.as_ref()
}

/// The next read on `socket` (GRO: possibly several datagrams from one source, see
/// [`segments`]); never ready while the socket is not bound yet.
pub async fn recv(socket: &Option<BatchSocket>, buf: &mut [u8]) -> std::io::Result<RecvMeta> {
    match socket {
        Some(s) => recv_one(s, buf).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tokio_util::sync::CancellationToken;
    use warren_common::config::{RawConfig, RemoteConfig};
    use warren_common::crypto::Key;
    use warren_common::time::unix_now;

    use super::*;

    fn shared(acl: &str) -> Shared {
        let yaml = format!(
            "key: '{}'\nremote: {{ listen: '127.0.0.1:0', acl: [ {acl} ] }}",
            Key::generate().to_base64()
        );
        let config = RemoteConfig::try_from(&RawConfig::from_yaml(&yaml, "t").expect("yaml")).expect("config");
        Shared::new(std::sync::Arc::new(config), CancellationToken::new(), unix_now())
    }

    async fn receiver() -> BatchSocket {
        BatchSocket::new(UdpSocket::bind("127.0.0.1:0").await.expect("bind")).expect("batch socket")
    }

    /// Reads until `want` datagrams came (or 5 s of silence); returns them and the most one read held.
    async fn read(from: &BatchSocket, want: usize) -> (Vec<Vec<u8>>, usize) {
        let (mut got, mut most) = (Vec::new(), 0);
        let mut buf = vec![0u8; 65536];
        while got.len() < want {
            let Ok(Ok(meta)) = tokio::time::timeout(Duration::from_secs(5), recv_one(from, &mut buf)).await else {
                break;
            };
            let before = got.len();
            got.extend(segments(&mut buf, &meta).map(|d| d.to_vec()));
            most = most.max(got.len() - before);
        }
        (got, most)
    }

    /// What the association's burst loop does: datagrams forwarded, then one flush. A run for
    /// one destination leaves in one GSO send (where the kernel has GSO and GRO, the receiver
    /// reads it in one go), datagrams for two destinations in turn each arrive whole and in
    /// order, and a destination the ACL denies gets nothing.
    #[tokio::test]
    async fn forwarded_datagrams_leave_batched_per_destination_in_order() {
        let shared = shared("{ deny: '127.0.0.2' }, { allow: '127.0.0.1' }");
        let (a, b) = (receiver().await, receiver().await);
        let (to_a, to_b) = (
            a.get_ref().local_addr().expect("addr"),
            b.get_ref().local_addr().expect("addr"),
        );
        let denied = receiver_on("127.0.0.2:0").await;
        let to_denied = denied.local_addr().expect("addr");
        let mut nat = Nat::default();

        let datagram = |i: usize| format!("{i:04} same-sized datagram").into_bytes();
        for i in 0..40 {
            assert!(nat.forward(&Address::Ip(to_a), &datagram(i), &shared).await);
        }
        nat.flush().await;
        let (got, most) = read(&a, 40).await;
        assert_eq!(got, (0..40).map(datagram).collect::<Vec<_>>());
        if cfg!(target_os = "linux") && nat.v4.as_ref().is_some_and(|s| s.max_segments() > 1) {
            assert!(most > 1, "the run did not travel as one GSO send");
        }

        for i in 0..20 {
            let to = if i % 3 == 0 { to_b } else { to_a };
            assert!(nat.forward(&Address::Ip(to), &datagram(i), &shared).await);
        }
        assert!(!nat.forward(&Address::Ip(to_denied), b"not for you", &shared).await);
        nat.flush().await;
        let want_b: Vec<_> = (0..20).filter(|i| i % 3 == 0).map(datagram).collect();
        let want_a: Vec<_> = (0..20).filter(|i| i % 3 != 0).map(datagram).collect();
        assert_eq!(read(&a, want_a.len()).await.0, want_a);
        assert_eq!(read(&b, want_b.len()).await.0, want_b);
        // A sentinel sent after the flush: had the NAT sent the denied datagram, it would have
        // come first (loopback delivers within the send).
        let sentinel = UdpSocket::bind("127.0.0.2:0").await.expect("bind");
        sentinel.send_to(b"sentinel", to_denied).await.expect("send");
        let mut buf = [0u8; 64];
        let first = tokio::time::timeout(Duration::from_secs(5), denied.recv_from(&mut buf)).await;
        let (n, _) = first.expect("the sentinel arrives").expect("recv");
        assert_eq!(&buf[..n], b"sentinel", "a datagram reached the denied address");
        assert!(nat.answer_allowed(to_a) && nat.answer_allowed(to_b) && !nat.answer_allowed(to_denied));
    }

    async fn receiver_on(addr: &str) -> UdpSocket {
        UdpSocket::bind(addr).await.expect("bind")
    }
}
