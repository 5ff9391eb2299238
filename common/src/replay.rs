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

use std::collections::{HashSet, VecDeque};

use crate::crypto::SALT_LEN;
use crate::time::TIMESTAMP_WINDOW_SECS;

/// Seconds of expiry times one generation of salts covers (see [`ReplayFilter`]).
const GENERATION_SECS: u64 = 60;

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

/// Salts seen inside the window, in generations by expiry: generation `g` holds the salts whose
/// last acceptable second falls in `[g·60, (g+1)·60)`, and is dropped whole once that range is
/// past. At most five are alive (expiries span the ±120 s window), so a check is at most five
/// lookups; and a generation's memory is freed as a whole, so the filter's size follows the
/// current rate of requests instead of keeping the capacity of its busiest minute (a single
/// map's capacity never shrinks: in `bench/soak.sh` it showed as a 5.2 MB step in the remote's
/// RSS, the map doubling, that never came back; docs/BENCHMARKS.md, "Soak").
#[derive(Default)]
pub struct ReplayFilter {
    /// (generation number, its salts), oldest first.
    generations: VecDeque<(u64, HashSet<[u8; SALT_LEN]>)>,
    /// Stamps below this (Unix seconds) are refused.
    not_before: u64,
}

impl ReplayFilter {
    /// A filter that refuses stamps before `started` (Unix seconds): the remote passes the second
    /// its process started. [`Default`] refuses nothing for its age.
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
        // Generations whose every expiry is before now can hold nothing acceptable any more.
        while let Some((g, _)) = self.generations.front() {
            if g.saturating_add(1).saturating_mul(GENERATION_SECS) > now {
                break;
            }
            self.generations.pop_front();
        }
        if self.generations.iter().any(|(_, salts)| salts.contains(&salt)) {
            return Verdict::Replay;
        }
        let generation = timestamp.saturating_add(TIMESTAMP_WINDOW_SECS) / GENERATION_SECS;
        let at = self.generations.partition_point(|(g, _)| *g < generation);
        match self.generations.get_mut(at) {
            Some((g, salts)) if *g == generation => {
                salts.insert(salt);
            }
            _ => self.generations.insert(at, (generation, HashSet::from([salt]))),
        }
        Verdict::Fresh
    }

    /// True if [`ReplayFilter::check`] finds the salt fresh (and records it); false means too
    /// old, from the future, from before the start, or a replay.
    pub fn accept(&mut self, salt: [u8; SALT_LEN], timestamp: u64, now: u64) -> bool {
        self.check(salt, timestamp, now) == Verdict::Fresh
    }

    /// Salts currently remembered.
    pub fn len(&self) -> usize {
        self.generations.iter().map(|(_, salts)| salts.len()).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Generations currently held (at most five while the clock moves forward).
    pub fn generations(&self) -> usize {
        self.generations.len()
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
    fn a_salt_is_remembered_exactly_until_its_stamp_leaves_the_window_and_memory_follows_the_rate() {
        let mut f = ReplayFilter::default();
        // A busy minute, then a quiet hour: the busy minute's salts go as a whole.
        for i in 0..10_000u32 {
            let mut salt = [0u8; 32];
            salt[..4].copy_from_slice(&i.to_be_bytes());
            assert!(f.accept(salt, 10_000 + u64::from(i) / 200, 10_000 + u64::from(i) / 200));
        }
        assert_eq!(f.len(), 10_000);
        assert!(f.generations() <= 5);
        // Every salt is refused for as long as its stamp could still be accepted...
        let last_second = 10_000 + 49 + TIMESTAMP_WINDOW_SECS;
        let mut salt = [0u8; 32];
        salt[..4].copy_from_slice(&9_999u32.to_be_bytes());
        assert_eq!(f.check(salt, 10_049, last_second), Verdict::Replay);
        // ... and after that it is too old anyway.
        assert_eq!(f.check(salt, 10_049, last_second + 1), Verdict::OutsideWindow);
        // Much later, one new salt: everything before it is gone.
        assert!(f.accept([9; 32], 20_000, 20_000));
        assert_eq!((f.len(), f.generations()), (1, 1));
        // Stamps from either edge of the window land in at most five generations.
        for (i, t) in (20_000 - TIMESTAMP_WINDOW_SECS..=20_000 + TIMESTAMP_WINDOW_SECS).enumerate() {
            let mut salt = [1u8; 32];
            salt[..8].copy_from_slice(&(i as u64).to_be_bytes());
            assert!(f.accept(salt, t, 20_000));
        }
        assert!(f.generations() <= 5, "{}", f.generations());
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
