//! The bounded, expiring map under [`super::Cache`] and [`super::NameMap`]: a hash map for
//! lookups plus an index ordered by expiry, so that making room evicts the entry that expires
//! soonest (an expired one first) in O(log n), whatever the clients ask for.

use std::collections::{BTreeMap, HashMap};
use std::hash::Hash;
use std::time::Instant;

/// At most `capacity` entries of `V` by `K`, each valid until its own deadline.
#[derive(Debug)]
pub(super) struct ExpiryMap<K, V> {
    capacity: usize,
    entries: HashMap<K, Slot<V>>,
    /// (expiry, insertion number) → key, for every entry: the insertion number makes equal
    /// deadlines distinct, and among them the oldest goes first.
    by_expiry: BTreeMap<(Instant, u64), K>,
    inserted: u64,
}

#[derive(Debug)]
struct Slot<V> {
    value: V,
    expires: Instant,
    number: u64,
}

impl<K: Hash + Eq + Clone, V> ExpiryMap<K, V> {
    pub(super) fn new(capacity: usize) -> Self {
        Self {
            capacity,
            entries: HashMap::new(),
            by_expiry: BTreeMap::new(),
            inserted: 0,
        }
    }

    /// Stores `value` under `key` until `expires`, replacing any entry for `key`; when full,
    /// evicts the soonest-expiring entry first. With capacity 0 nothing is stored.
    pub(super) fn insert(&mut self, key: K, value: V, expires: Instant) {
        if self.capacity == 0 {
            return;
        }
        self.remove(&key);
        // One eviction restores the bound; the loop only guards the invariant.
        while self.entries.len() >= self.capacity {
            let Some((_, oldest)) = self.by_expiry.pop_first() else {
                break;
            };
            self.entries.remove(&oldest);
        }
        let number = self.inserted;
        self.inserted = self.inserted.wrapping_add(1);
        self.by_expiry.insert((expires, number), key.clone());
        self.entries.insert(key, Slot { value, expires, number });
    }

    /// The value under `key` if it has not expired at `now`; an expired entry is removed.
    pub(super) fn get(&mut self, key: &K, now: Instant) -> Option<&V> {
        let expires = self.entries.get(key)?.expires;
        if now >= expires {
            self.remove(key);
            return None;
        }
        self.entries.get(key).map(|slot| &slot.value)
    }

    pub(super) fn remove(&mut self, key: &K) {
        if let Some(slot) = self.entries.remove(key) {
            self.by_expiry.remove(&(slot.expires, slot.number));
        }
    }

    pub(super) fn len(&self) -> usize {
        self.entries.len()
    }
}
