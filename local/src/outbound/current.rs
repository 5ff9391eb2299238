//! Which config (and which remotes' health) new connections are served with. A reload swaps
//! the [`Current`] state; every front end reads it through a [`Latest`] handle once per new
//! connection or flow, and the connection keeps what it read for its whole life.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock, RwLockReadGuard};

use tokio_util::sync::CancellationToken;
use warren_common::config::LocalConfig;

use super::{health, Health, Outbounds};

/// A config and the health state built for it, with the token that stops that state's
/// checker when a reload replaces it.
pub struct Current {
    /// The config new connections are served with.
    pub config: Arc<LocalConfig>,
    /// Which of its remotes answered their last health check (and their warm connections).
    pub health: Arc<Health>,
    checker: CancellationToken,
}

impl Current {
    /// Starts `health`'s checker for `config`'s remotes (stopped by `shutdown` or [`retire`]).
    ///
    /// [`retire`]: Current::retire
    pub fn start(config: Arc<LocalConfig>, health: Arc<Health>, shutdown: &CancellationToken) -> Current {
        let checker = shutdown.child_token();
        health::spawn(
            health.clone(),
            &config.routing,
            config.timeouts.connect,
            checker.clone(),
        );
        Current {
            config,
            health,
            checker,
        }
    }

    /// Stops what only this state used: its health checker and its warm connections.
    pub fn retire(&self) {
        self.checker.cancel();
        self.health.warm.close_all();
    }
}

/// A shared handle on the [`Current`] state (cheap to clone).
#[derive(Clone)]
pub struct Latest {
    current: Arc<RwLock<Current>>,
    /// How many times the state was replaced (a reload): what was derived from an older config
    /// (the DNS cache) knows it is stale.
    generation: Arc<AtomicU64>,
}

impl Latest {
    /// A handle serving `current` until the first [`Latest::replace`].
    pub fn new(current: Current) -> Latest {
        Latest {
            current: Arc::new(RwLock::new(current)),
            generation: Arc::new(AtomicU64::new(0)),
        }
    }

    /// The state now (held briefly: clone what you need).
    pub fn read(&self) -> RwLockReadGuard<'_, Current> {
        // A poisoned lock only means a writer panicked while swapping Arcs: the value is whole.
        self.current.read().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Puts `next` in place and returns the state it replaced.
    pub fn replace(&self, next: Current) -> Current {
        let mut slot = self.current.write().unwrap_or_else(std::sync::PoisonError::into_inner);
        let old = std::mem::replace(&mut *slot, next);
        self.generation.fetch_add(1, Ordering::Release);
        old
    }

    /// Bumped by every [`Latest::replace`].
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// The outbounds a new connection from `peer` opens through, from the newest config.
    pub fn outbounds(&self, peer: SocketAddr) -> Outbounds {
        let now = self.read();
        Outbounds::new(now.config.clone(), now.health.clone(), peer)
    }
}
