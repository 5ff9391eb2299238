//! Replay protection: a salt is accepted once, only if its timestamp is inside
//! ±[`TIMESTAMP_WINDOW_SECS`] of our clock, and it is remembered for as long as that timestamp
//! stays inside the window, so a recorded request or packet cannot be played again and the map
//! holds at most one window's worth of genuine salts. Used by the remote for tunnel requests
//! (one filter behind a mutex) and by both ends for encrypted UDP packets (one per socket).
//! Call it only for what authenticated, so a flood of garbage cannot fill it.

use std::collections::HashMap;

use crate::crypto::SALT_LEN;
use crate::time::TIMESTAMP_WINDOW_SECS;

/// How often (seconds) expired salts are swept out.
const PRUNE_EVERY_SECS: u64 = 10;

/// Salts seen inside the window.
#[derive(Default)]
pub struct ReplayFilter {
    /// Salt → the last second at which its packet could still be accepted.
    seen: HashMap<[u8; SALT_LEN], u64>,
    next_prune: u64,
}

impl ReplayFilter {
    /// True if `salt`, stamped `timestamp`, is fresh at `now` (inside the window and never seen),
    /// and records it; false means too old, from the future, or a replay.
    pub fn accept(&mut self, salt: [u8; SALT_LEN], timestamp: u64, now: u64) -> bool {
        if crate::time::skew(timestamp, now).unsigned_abs() > u128::from(TIMESTAMP_WINDOW_SECS) {
            return false;
        }
        if now >= self.next_prune {
            self.seen.retain(|_, expires| *expires >= now);
            self.next_prune = now + PRUNE_EVERY_SECS;
        }
        let expires = timestamp.saturating_add(TIMESTAMP_WINDOW_SECS);
        self.seen.insert(salt, expires).is_none()
    }

    /// Salts currently remembered.
    pub fn len(&self) -> usize {
        self.seen.len()
    }

    pub fn is_empty(&self) -> bool {
        self.seen.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_once_inside_the_window_only() {
        let mut f = ReplayFilter::default();
        assert!(f.accept([1; 32], 1000, 1000));
        assert!(!f.accept([1; 32], 1000, 1001), "replay");
        assert!(!f.accept([2; 32], 1000, 1000 + TIMESTAMP_WINDOW_SECS + 1), "too old");
        assert!(!f.accept([3; 32], 2000, 1000), "from the future");
        assert!(f.accept([4; 32], 5000, 5000));
        assert_eq!(f.len(), 1, "expired salts are swept");
    }
}
