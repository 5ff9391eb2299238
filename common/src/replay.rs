//! Replay protection (PROTOCOL.md §10): a salt is accepted once, only if its timestamp is inside
//! ±[`TIMESTAMP_WINDOW_SECS`] of our clock and not before the second the filter's owner started,
//! and it is remembered for as long as that timestamp stays inside the window, so a recorded
//! request cannot be played again and the map holds at most one window's worth of genuine
//! salts. Used by the remote for tunnel requests (one filter behind a mutex; encrypted UDP
//! packets have packet sessions with a window each instead: `udp_session.rs`). Call it only for
//! what authenticated, so a flood of garbage cannot fill it.
//!
//! The salts live in memory only. What keeps a request recorded before a restart from working
//! after it is the start stamp ([`ReplayFilter::since`]): the new process refuses anything
//! stamped before the second it started, and everything the old process accepted was stamped
//! before that (with the clocks in step; PROTOCOL.md §10 says what skew costs).

use std::collections::HashMap;

use crate::crypto::SALT_LEN;
use crate::time::TIMESTAMP_WINDOW_SECS;

/// How often (seconds) expired salts are swept out.
const PRUNE_EVERY_SECS: u64 = 10;

/// What the filter made of one salt and its stamp.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Inside the window, after the start, never seen: recorded and accepted.
    Fresh,
    /// More than the window away from our clock (either way).
    OutsideWindow,
    /// Stamped before the second this filter's owner started: from before a restart, or from a
    /// client whose clock is behind ours.
    BeforeStart,
    /// The salt was accepted before.
    Replay,
}

/// Salts seen inside the window.
#[derive(Default)]
pub struct ReplayFilter {
    /// Salt → the last second at which its packet could still be accepted.
    seen: HashMap<[u8; SALT_LEN], u64>,
    next_prune: u64,
    /// Stamps below this (Unix seconds) are refused.
    not_before: u64,
}

impl ReplayFilter {
    /// A filter that refuses stamps before `started` (Unix seconds): the remote passes the second
    /// its process started. [`Default`] refuses nothing for its age (the local's per-association
    /// filters: the remote's clock may lag ours).
    pub fn since(started: u64) -> ReplayFilter {
        ReplayFilter {
            not_before: started,
            ..ReplayFilter::default()
        }
    }

    /// Checks `salt`, stamped `timestamp`, at `now` (all Unix seconds), and records it if fresh.
    pub fn check(&mut self, salt: [u8; SALT_LEN], timestamp: u64, now: u64) -> Verdict {
        if crate::time::skew(timestamp, now).unsigned_abs() > u128::from(TIMESTAMP_WINDOW_SECS) {
            return Verdict::OutsideWindow;
        }
        if timestamp < self.not_before {
            return Verdict::BeforeStart;
        }
        if now >= self.next_prune {
            self.seen.retain(|_, expires| *expires >= now);
            self.next_prune = now + PRUNE_EVERY_SECS;
        }
        let expires = timestamp.saturating_add(TIMESTAMP_WINDOW_SECS);
        match self.seen.insert(salt, expires) {
            None => Verdict::Fresh,
            Some(_) => Verdict::Replay,
        }
    }

    /// True if [`ReplayFilter::check`] finds the salt fresh (and records it); false means too
    /// old, from the future, from before the start, or a replay.
    pub fn accept(&mut self, salt: [u8; SALT_LEN], timestamp: u64, now: u64) -> bool {
        self.check(salt, timestamp, now) == Verdict::Fresh
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

    #[test]
    fn refuses_stamps_before_its_start_and_accepts_from_that_second_on() {
        let mut f = ReplayFilter::since(1000);
        assert_eq!(f.check([1; 32], 999, 1000), Verdict::BeforeStart);
        assert_eq!(f.check([2; 32], 1000, 1000), Verdict::Fresh);
        assert_eq!(f.check([2; 32], 1000, 1001), Verdict::Replay);
        assert_eq!(f.check([3; 32], 1001, 1000), Verdict::Fresh, "a clock ahead is fine");
        assert_eq!(f.check([4; 32], 500, 1000), Verdict::OutsideWindow);
        assert_eq!(f.len(), 2);
    }
}
