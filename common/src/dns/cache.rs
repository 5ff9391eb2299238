//! The forwarder's response cache (RFC 1035 §7.4, RFC 2181 §8, RFC 2308 §5): upstream and tunnel
//! answers kept for their TTL, served again with the asker's ID and the TTLs counted down.

use std::time::{Duration, Instant};

use hickory_proto::op::{Message, ResponseCode};
use hickory_proto::rr::RData;

use super::expiry::ExpiryMap;
use super::{answers_message, decode, name_key, our_edns, ttl_of, Query};

/// The largest response kept. What the cache may hold is bounded by capacity × this, so a client
/// cannot fill memory with 64 KiB TCP answers; real answers are far smaller (hardly any exceed
/// the 1232-byte UDP limit).
const MAX_CACHED_LEN: usize = 4096;

/// What the cache is keyed by: the question, its name lowercased label by label (RFC 4343:
/// names compare case-insensitively; the label boundaries kept, see `name_key`), QTYPE and
/// QCLASS.
type Key = (Vec<u8>, u16, u16);

/// A stored response and when it was stored, to count its TTLs down.
#[derive(Debug)]
struct Cached {
    response: Vec<u8>,
    stored: Instant,
}

/// A bounded TTL cache of responses keyed by (name, qtype, qclass) (RFC 1035 §7.4). When full,
/// an insert evicts the soonest-expiring entry (O(log n)); each entry is at most 4 KiB.
#[derive(Debug)]
pub struct Cache {
    entries: ExpiryMap<Key, Cached>,
}

impl Cache {
    /// An empty cache holding at most `capacity` responses (0 caches nothing).
    pub fn new(capacity: usize) -> Cache {
        Cache {
            entries: ExpiryMap::new(capacity),
        }
    }

    /// Stores `response` to `query` until the smallest TTL of its answer and authority records
    /// (RFC 2181 §5.2, §8); a negative answer (NXDOMAIN, or NOERROR with no answers) also until
    /// at most its SOA's MINIMUM and is not cached without a SOA (RFC 2308 §5). The lifetime is
    /// capped at `max_ttl` seconds. Not cached: anything [`super::answers`] rejects, RCODEs other
    /// than NOERROR and NXDOMAIN (SERVFAIL among them, RFC 2308 §7), truncated responses (RFC
    /// 2181 §9), responses over 4 KiB, and lifetimes of 0.
    pub fn insert(&mut self, query: &Query, response: &[u8], now: Instant, max_ttl: u32) {
        if response.len() > MAX_CACHED_LEN {
            return;
        }
        let Some(message) = decode(response) else {
            return;
        };
        if !answers_message(query, &message) || message.truncation {
            return;
        }
        if !matches!(message.response_code, ResponseCode::NoError | ResponseCode::NXDomain) {
            return;
        }
        let Some(ttl) = lifetime(&message).map(|ttl| ttl.min(max_ttl)) else {
            return;
        };
        if ttl == 0 {
            return;
        }
        let Some(expires) = now.checked_add(Duration::from_secs(u64::from(ttl))) else {
            return;
        };
        let cached = Cached {
            response: response.to_vec(),
            stored: now,
        };
        self.entries.insert(key(query), cached, expires);
    }

    /// A cached response for `query` (RFC 1035 §7.4): its ID set to the query's, RD copied from
    /// the query, the question echoed as the query spelled it, an OPT record if the query had
    /// one (RFC 6891 §6.1.1: upstream's OPT is not forwarded), and every record's TTL decreased
    /// by the whole seconds spent in the cache. `None` if absent or expired (expired entries are
    /// removed).
    pub fn get(&mut self, query: &Query, now: Instant) -> Option<Vec<u8>> {
        let key = key(query);
        let cached = self.entries.get(&key, now)?;
        let Some(mut message) = decode(&cached.response) else {
            // Only decodable responses are stored; drop one that somehow is not.
            self.entries.remove(&key);
            return None;
        };
        let age = now.saturating_duration_since(cached.stored).as_secs();
        let age = u32::try_from(age).unwrap_or(u32::MAX);
        message.metadata.id = query.id;
        message.metadata.recursion_desired = query.recursion_desired;
        message.queries = vec![query.question.clone()];
        message.edns = query.edns.map(|edns| our_edns(edns.dnssec_ok));
        message.signature = None;
        for record in message
            .answers
            .iter_mut()
            .chain(message.authorities.iter_mut())
            .chain(message.additionals.iter_mut())
        {
            record.ttl = ttl_of(record).saturating_sub(age);
        }
        // A record hickory decodes but will not encode again (it checks more on the way out)
        // makes the entry useless: drop it rather than serve the SERVFAIL `encode` falls back to.
        let Ok(wire) = message.to_vec() else {
            self.entries.remove(&key);
            return None;
        };
        Some(wire)
    }

    /// Responses held, expired ones not yet removed included.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether the cache holds no responses.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

fn key(query: &Query) -> Key {
    (name_key(&query.question.name), query.qtype, query.qclass)
}

/// How long `message` may be cached, before the caller's cap: the smallest TTL of its answer and
/// authority records, and for a negative answer also its SOA's MINIMUM (RFC 2308 §5); `None`
/// for a negative answer without a SOA or a message without records.
fn lifetime(message: &Message) -> Option<u32> {
    let records = message.answers.iter().chain(message.authorities.iter());
    let smallest = records.map(ttl_of).min();
    let negative = message.response_code == ResponseCode::NXDomain || message.answers.is_empty();
    if !negative {
        return smallest;
    }
    let soa_minimum = message.authorities.iter().find_map(|record| match &record.data {
        RData::SOA(soa) => Some(soa.minimum),
        _ => None,
    })?;
    smallest.map(|ttl| ttl.min(soa_minimum))
}
