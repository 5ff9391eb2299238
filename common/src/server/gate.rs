//! Admission for servers whose clients must authenticate first (warren-remote): two pools, so
//! that connections nobody has vouched for yet cannot take the slots of real users.
//!
//! ```text
//! accept ─▶ handshake pool ─(request authenticated)─▶ connection pool ─▶ command ─▶ close
//!           max_handshakes in all,                     max_connections
//!           max_handshakes_per_ip per source           (waits for a slot)
//!           (once the pool is half full)
//!           (full: closed at once with RST, unread)
//! ```
//!
//! A source is held to `max_handshakes_per_ip` once half the pool is in use; below that it may
//! take more, so that a legitimate burst from one address is not cut while there is room.
//! A source is one IPv4 address, or one IPv6 /64 (a single host commonly owns a whole /64, so
//! counting its addresses one by one would be no limit at all). An IPv4-mapped IPv6 peer counts
//! as the IPv4 address it carries.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Caps on connections that have not authenticated yet, kept apart from the connection cap.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HandshakeLimits {
    /// Connections accepted and not yet authenticated, from all sources together.
    pub max_handshakes: usize,
    /// The same from one source (an IPv4 address, or an IPv6 /64), enforced once half of
    /// `max_handshakes` is in use.
    pub max_handshakes_per_ip: usize,
}

/// Which cap refused a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Full {
    /// `max_handshakes`: the whole handshake pool is in use.
    Handshakes,
    /// `max_handshakes_per_ip`: this source already has its share of the pool.
    Source,
}

/// The counting key of a peer: its IPv4 address, or its IPv6 address cut to the /64.
pub fn source_of(ip: IpAddr) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V6(v6) => {
            let bits = u128::from(v6) & !((1u128 << 64) - 1);
            IpAddr::V6(bits.into())
        }
        v4 => v4,
    }
}

/// The shared state of both pools of one server.
pub(super) struct Gate {
    limits: HandshakeLimits,
    max_connections: usize,
    handshakes: Arc<Semaphore>,
    connections: Arc<Semaphore>,
    per_source: Mutex<HashMap<IpAddr, usize>>,
    cap_logged: AtomicBool,
    full_pool: BurstLog,
    full_source: BurstLog,
}

impl Gate {
    pub(super) fn new(max_connections: usize, limits: HandshakeLimits) -> Arc<Gate> {
        Arc::new(Gate {
            limits,
            max_connections: max_connections.max(1),
            handshakes: Arc::new(Semaphore::new(limits.max_handshakes.max(1))),
            connections: Arc::new(Semaphore::new(max_connections.max(1))),
            per_source: Mutex::default(),
            cap_logged: AtomicBool::new(false),
            full_pool: BurstLog::default(),
            full_source: BurstLog::default(),
        })
    }

    /// Takes a handshake slot for a connection from `peer`, or says which cap is full (and logs
    /// that at most once a minute per cap).
    pub(super) fn enter(self: &Arc<Gate>, peer: IpAddr) -> Result<Admission, Full> {
        let source = source_of(peer);
        let result = self.try_enter(source);
        if let Err(full) = result {
            let (log, field, max) = match full {
                Full::Handshakes => (&self.full_pool, "max_handshakes", self.limits.max_handshakes),
                Full::Source => (
                    &self.full_source,
                    "max_handshakes_per_ip",
                    self.limits.max_handshakes_per_ip,
                ),
            };
            if let Some(unlogged) = log.hit() {
                tracing::warn!(
                    %source,
                    max,
                    refused_since_last_line = unlogged,
                    "unauthenticated connection cap {field} reached: new connections are reset unread \
                     (a probe flood, or raise remote.{field}); logged at most once a minute"
                );
            }
        }
        result
    }

    /// Whether at least half the handshake pool is in use: only then is a source held to its
    /// share, so a burst of real connections from one address (a browser opening a page
    /// through one warren-local, many users behind one NAT) is not cut while the pool has room,
    /// and yet one source can never hold more than half the pool plus its share.
    fn contended(&self) -> bool {
        let max = self.limits.max_handshakes.max(1);
        let used = max.saturating_sub(self.handshakes.available_permits());
        used.saturating_mul(2) >= max
    }

    fn try_enter(self: &Arc<Gate>, source: IpAddr) -> Result<Admission, Full> {
        let mut counts = self.per_source.lock().unwrap_or_else(PoisonError::into_inner);
        let count = counts.entry(source).or_insert(0);
        if *count >= self.limits.max_handshakes_per_ip && self.contended() {
            if *count == 0 {
                counts.remove(&source);
            }
            return Err(Full::Source);
        }
        let Ok(permit) = self.handshakes.clone().try_acquire_owned() else {
            if *count == 0 {
                counts.remove(&source);
            }
            return Err(Full::Handshakes);
        };
        *count += 1;
        Ok(Admission {
            state: State::Handshake {
                _permit: permit,
                slot: SourceSlot {
                    gate: self.clone(),
                    source,
                },
            },
        })
    }
}

/// One accepted connection's place in the pools; dropping it frees the place.
pub struct Admission {
    state: State,
}

enum State {
    /// Counted in the handshake pool and against its source.
    Handshake {
        _permit: OwnedSemaphorePermit,
        slot: SourceSlot,
    },
    /// Counted in the connection pool.
    Connection { _permit: OwnedSemaphorePermit },
    /// Counted nowhere: a stream that came in some other way (an agent session's streams).
    Uncounted,
}

impl Admission {
    /// An admission that counts against no cap, for connections that did not come through a
    /// gated listener.
    pub fn uncounted() -> Admission {
        Admission {
            state: State::Uncounted,
        }
    }

    /// Moves an authenticated connection from the handshake pool to the connection pool,
    /// waiting while that is full. The handshake slot is held until then, so the sockets open
    /// at once never exceed `max_handshakes + max_connections`.
    pub async fn authenticated(&mut self) {
        let State::Handshake { slot, .. } = &self.state else {
            return;
        };
        let gate = slot.gate.clone();
        let Ok(permit) = gate.connections.clone().acquire_owned().await else {
            return;
        };
        let available = gate.connections.available_permits();
        if available == 0 && !gate.cap_logged.swap(true, Ordering::Relaxed) {
            tracing::warn!(
                max = gate.max_connections,
                "connection cap reached; new authenticated clients wait for a free slot"
            );
        } else if available > gate.max_connections / 10 {
            gate.cap_logged.store(false, Ordering::Relaxed);
        }
        self.state = State::Connection { _permit: permit };
    }

    /// Whether this connection still counts as unauthenticated.
    pub fn is_handshake(&self) -> bool {
        matches!(self.state, State::Handshake { .. })
    }
}

/// A source's count of handshakes, given back on drop.
struct SourceSlot {
    gate: Arc<Gate>,
    source: IpAddr,
}

impl Drop for SourceSlot {
    fn drop(&mut self) {
        let mut counts = self.gate.per_source.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(count) = counts.get_mut(&self.source) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                counts.remove(&self.source);
            }
        }
    }
}

/// How often a refusal may be logged: once per burst, a burst being a minute.
const BURST: Duration = Duration::from_secs(60);

/// Logs the first of a burst of events and counts the rest, so a flood cannot flood the log.
#[derive(Default)]
struct BurstLog {
    last: Mutex<Option<Instant>>,
    unlogged: AtomicU64,
}

impl BurstLog {
    /// `Some(events not logged since the last line)` when this event should be logged.
    fn hit(&self) -> Option<u64> {
        let now = Instant::now();
        let mut last = self.last.lock().unwrap_or_else(PoisonError::into_inner);
        match *last {
            Some(at) if now.duration_since(at) < BURST => {
                self.unlogged.fetch_add(1, Ordering::Relaxed);
                None
            }
            _ => {
                *last = Some(now);
                Some(self.unlogged.swap(0, Ordering::Relaxed))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn sources_are_ipv4_addresses_and_ipv6_slash_64s() {
        assert_eq!(source_of(ip("192.0.2.7")), ip("192.0.2.7"));
        assert_eq!(source_of(ip("::ffff:192.0.2.7")), ip("192.0.2.7"));
        assert_eq!(source_of(ip("2001:db8:1:2:aaaa::1")), ip("2001:db8:1:2::"));
        assert_eq!(source_of(ip("2001:db8:1:2:ffff:ffff:ffff:ffff")), ip("2001:db8:1:2::"));
        assert_ne!(source_of(ip("2001:db8:1:3::1")), ip("2001:db8:1:2::"));
    }

    #[tokio::test]
    async fn caps_count_per_source_and_in_all_and_free_on_drop() {
        let gate = Gate::new(
            1,
            HandshakeLimits {
                max_handshakes: 3,
                max_handshakes_per_ip: 2,
            },
        );
        let a1 = gate.enter(ip("2001:db8::1")).unwrap();
        let _a2 = gate.enter(ip("2001:db8::2")).unwrap();
        assert_eq!(gate.enter(ip("2001:db8::3")).err(), Some(Full::Source));
        let _b1 = gate.enter(ip("192.0.2.1")).unwrap();
        assert_eq!(gate.enter(ip("192.0.2.2")).err(), Some(Full::Handshakes));
        drop(a1);
        let mut a3 = gate.enter(ip("2001:db8::3")).unwrap();
        // Authenticating frees the handshake slot and takes the (only) connection slot.
        a3.authenticated().await;
        assert!(!a3.is_handshake());
        let _c = gate.enter(ip("2001:db8::4")).unwrap();
        assert_eq!(gate.connections.available_permits(), 0);
        drop(a3);
        assert_eq!(gate.connections.available_permits(), 1);
    }

    #[tokio::test]
    async fn a_source_may_exceed_its_share_only_while_the_pool_is_less_than_half_full() {
        let gate = Gate::new(
            1,
            HandshakeLimits {
                max_handshakes: 10,
                max_handshakes_per_ip: 2,
            },
        );
        let burst: Vec<_> = (0..5).map(|_| gate.enter(ip("192.0.2.1")).unwrap()).collect();
        assert_eq!(gate.enter(ip("192.0.2.1")).err(), Some(Full::Source));
        let _others: Vec<_> = (0..2).map(|_| gate.enter(ip("192.0.2.2")).unwrap()).collect();
        assert_eq!(gate.enter(ip("192.0.2.2")).err(), Some(Full::Source));
        drop(burst);
        assert!(gate.enter(ip("192.0.2.1")).is_ok());
    }

    #[test]
    fn a_burst_is_logged_once() {
        let log = BurstLog::default();
        assert_eq!(log.hit(), Some(0));
        assert_eq!(log.hit(), None);
        assert_eq!(log.hit(), None);
        *log.last.lock().unwrap() = Instant::now().checked_sub(BURST);
        assert_eq!(log.hit(), Some(2));
    }
}
