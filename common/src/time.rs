//! Wall-clock time as the wire protocol stamps it, and the window a stamp must fall in.

use std::time::{SystemTime, UNIX_EPOCH};

/// A request whose timestamp differs from the remote's clock by more than this many seconds is
/// refused (silently), and salts are remembered for as long as they could be replayed. A
/// property of time and replay, not of one message: the tunnel header and the UDP packets both
/// carry a stamp checked against it.
pub const TIMESTAMP_WINDOW_SECS: u64 = 120;

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
