//! The replay filter: remembers each authenticated request's salt for as long as its timestamp
//! keeps it inside the acceptance window, so a recorded request cannot be played again.

use std::collections::HashMap;
use std::sync::Mutex;

use warren_common::crypto::SALT_LEN;
use warren_common::proto::header::TIMESTAMP_WINDOW_SECS;

/// How often (seconds) expired salts are swept out.
const PRUNE_EVERY_SECS: u64 = 10;

#[derive(Default)]
pub struct ReplayFilter {
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    /// Salt → the last second at which its request could still be accepted.
    seen: HashMap<[u8; SALT_LEN], u64>,
    next_prune: u64,
}

impl ReplayFilter {
    /// Records `salt` and returns true if it is new; false means a replay. Only call this for
    /// requests that authenticated and whose timestamp is inside the window, so the map holds at
    /// most one window's worth of genuine requests.
    pub fn check_and_insert(&self, salt: [u8; SALT_LEN], timestamp: u64, now: u64) -> bool {
        let mut inner = self.inner.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if now >= inner.next_prune {
            inner.seen.retain(|_, expires| *expires >= now);
            inner.next_prune = now + PRUNE_EVERY_SECS;
        }
        let expires = timestamp.saturating_add(TIMESTAMP_WINDOW_SECS);
        match inner.seen.entry(salt) {
            std::collections::hash_map::Entry::Occupied(_) => false,
            std::collections::hash_map::Entry::Vacant(slot) => {
                slot.insert(expires);
                true
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_a_salt_twice_within_the_window_and_forgets_it_after() {
        let filter = ReplayFilter::default();
        assert!(filter.check_and_insert([1; 32], 1000, 1000));
        assert!(!filter.check_and_insert([1; 32], 1000, 1100));
        assert!(filter.check_and_insert([2; 32], 1000, 1100));
        // Long after, the salt is gone (its request would fail the timestamp check anyway).
        assert!(filter.check_and_insert([3; 32], 5000, 5000));
        assert_eq!(filter.inner.lock().unwrap().seen.len(), 1);
    }
}
