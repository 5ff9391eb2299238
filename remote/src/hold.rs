//! How long a refused connection is held before it is closed (PROTOCOL.md §11).
//!
//! A fixed close after exactly `handshake_timeout` would itself fingerprint warren, so each
//! server picks a factor once at start and each connection adds a little jitter:
//!
//! ```text
//! hold = handshake_timeout × f × j    f ∈ [0.6, 1.0] per server, j ∈ [0.95, 1.0] per connection
//!      ∈ [0.57, 1.0] × handshake_timeout
//! ```
//!
//! The same deadline bounds a real client's handshake, which arrives in its first packet, so
//! the configured value stays an upper bound and never a wait.

use std::time::Duration;

use rand::Rng;

/// This server's share of `handshake_timeout`, lowest (`FACTOR.0`) and highest.
pub const FACTOR: (f64, f64) = (0.6, 1.0);
/// Each connection's jitter on top of the server's factor, lowest and highest.
pub const JITTER: (f64, f64) = (0.95, 1.0);

/// The hold time policy of one server.
#[derive(Debug, Clone, Copy)]
pub struct Hold {
    factor: f64,
}

impl Hold {
    /// Picks this server's factor from `rng`.
    pub fn new(rng: &mut impl Rng) -> Hold {
        Hold {
            factor: rng.gen_range(FACTOR.0..=FACTOR.1),
        }
    }

    /// The deadline of one connection, measured from its accept: `handshake_timeout` scaled by
    /// this server's factor and a fresh jitter from `rng`.
    pub fn pick(&self, handshake_timeout: Duration, rng: &mut impl Rng) -> Duration {
        handshake_timeout.mul_f64(self.factor * rng.gen_range(JITTER.0..=JITTER.1))
    }
}

#[cfg(test)]
mod tests {
    use rand::rngs::StdRng;
    use rand::SeedableRng;

    use super::*;

    #[test]
    fn holds_stay_in_the_documented_range_and_differ_between_servers() {
        let timeout = Duration::from_secs(10);
        let mut rng = StdRng::seed_from_u64(7);
        let servers: Vec<Hold> = (0..50).map(|_| Hold::new(&mut rng)).collect();
        for hold in &servers {
            assert!((FACTOR.0..=FACTOR.1).contains(&hold.factor));
            for _ in 0..50 {
                let t = hold.pick(timeout, &mut rng);
                assert!(t >= timeout.mul_f64(FACTOR.0 * JITTER.0) && t <= timeout, "{t:?}");
            }
        }
        // Two servers almost never share a factor; fifty of them spread over the range.
        assert_ne!(servers[0].factor, servers[1].factor);
        let (lo, hi) = servers
            .iter()
            .fold((1.0f64, 0.0f64), |(lo, hi), h| (lo.min(h.factor), hi.max(h.factor)));
        assert!(lo < 0.7 && hi > 0.9, "factors {lo}..{hi}");
        // And one server's connections do not all close at one instant either.
        let one = servers[0];
        let a = one.pick(timeout, &mut rng);
        assert!((0..20).any(|_| one.pick(timeout, &mut rng) != a));
    }
}
