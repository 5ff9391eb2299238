//! Wall-clock time as the wire protocol stamps it.

use std::time::{SystemTime, UNIX_EPOCH};

/// Seconds since the Unix epoch (0 if the clock is set before 1970).
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// `a - b` in seconds, signed, for any two timestamps (no overflow whatever a peer sent).
pub fn skew(a: u64, b: u64) -> i128 {
    i128::from(a) - i128::from(b)
}
