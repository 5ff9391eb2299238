//! Addresses the forwarder handed out, mapped back to the names asked: a connection that a
//! transparent proxy catches towards an IP can then be routed (and sent through the tunnel) by
//! name, as if the application had used SOCKS5 with a host name.

use std::net::IpAddr;
use std::time::{Duration, Instant};

use super::expiry::ExpiryMap;

/// The longest name kept: a name in a message is at most 255 bytes on the wire (RFC 1035
/// §2.3.4), fewer as text. Longer bytes are not a name from a DNS answer.
const MAX_NAME_LEN: usize = 255;

/// The longest an entry lives: long past any useful TTL, and short enough that adding it to an
/// `Instant` cannot overflow.
const MAX_LIFETIME: Duration = Duration::from_secs(7 * 24 * 3600);

/// Addresses the forwarder answered, mapped back to the name asked (RFC 1035 §3.4.1, RFC 3596
/// §2.1 records read backwards). Bounded (capacity in entries, the soonest-expiring evicted
/// first); entries expire after the TTL the caller passes, which the caller floors (e.g. at
/// 60 s) because applications keep using addresses past their TTL. IPv4-mapped IPv6 addresses
/// are the IPv4 address, so a dual-stack socket's `::ffff:a.b.c.d` finds the A record's name.
#[derive(Debug)]
pub struct NameMap {
    entries: ExpiryMap<IpAddr, Vec<u8>>,
}

impl NameMap {
    /// An empty map holding at most `capacity` addresses (0 holds nothing).
    pub fn new(capacity: usize) -> NameMap {
        NameMap {
            entries: ExpiryMap::new(capacity),
        }
    }

    /// Maps `ip` to `name` (as [`super::Query::name`] gives it) for `ttl` from `now` (at most a
    /// week), replacing what `ip` mapped to: the latest answer wins. Names over 255 bytes are
    /// ignored.
    pub fn remember(&mut self, ip: IpAddr, name: &[u8], ttl: Duration, now: Instant) {
        if name.len() > MAX_NAME_LEN {
            return;
        }
        let Some(expires) = now.checked_add(ttl.min(MAX_LIFETIME)) else {
            return;
        };
        self.entries.insert(ip.to_canonical(), name.to_vec(), expires);
    }

    /// The name `ip` was last handed out for, unless that has expired at `now` (expired entries
    /// are removed).
    pub fn lookup(&mut self, ip: IpAddr, now: Instant) -> Option<Vec<u8>> {
        self.entries.get(&ip.to_canonical(), now).cloned()
    }

    /// Addresses held, expired ones not yet removed included.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether the map holds no addresses.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
