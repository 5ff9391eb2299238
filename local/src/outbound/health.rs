//! Remotes' health, for failover: every `local.health_interval`, a TCP connect to each remote
//! that is the first hop of a way out in a route listing several (bounded by the interval and by
//! `local.connect_timeout`). A remote that fails is marked down and tried only after the others
//! until a check succeeds again; changes are logged. The checker stops at shutdown.
//!
//! This is the local's runtime state, kept here rather than in the configuration (which stays
//! plain data): [`Health`] holds one flag per checked remote, by name (remote names are unique
//! in `local.remotes`), and the remotes' warm connections (warm.rs).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;
use warren_common::config::local_routes::{Endpoint, LocalRouting};
use warren_common::config::LocalConfig;

use super::warm::Warm;

/// Whether each checked remote answered its last health check. A remote counts as up until a
/// check says otherwise, and a remote that is never checked (it is in no failover list) is
/// always up.
#[derive(Debug)]
pub struct Health {
    up: HashMap<String, AtomicBool>,
    /// The remotes' warm connections (warm.rs): the other state the local keeps per remote.
    pub(crate) warm: Warm,
}

impl Health {
    /// One flag, up, for every remote that `config`'s failover lists name first, and an empty
    /// pool of warm connections with `local.warm_*`'s settings.
    pub fn for_config(config: &LocalConfig) -> Arc<Health> {
        let up = config
            .routing
            .checked_remotes()
            .iter()
            .map(|remote| {
                // The gauge says what `is_up` says: up until a check says otherwise.
                up_gauge(&remote.name, true);
                (remote.name.clone(), AtomicBool::new(true))
            })
            .collect();
        Arc::new(Health {
            up,
            warm: Warm::new(config.warm),
        })
    }

    /// Whether the remote named `remote` answered its last check (true if it is not checked).
    pub fn is_up(&self, remote: &str) -> bool {
        self.up.get(remote).is_none_or(|flag| flag.load(Ordering::Relaxed))
    }

    /// Records a check's result; true when it changed the state.
    fn set(&self, remote: &str, up: bool) -> bool {
        if self.up.contains_key(remote) {
            up_gauge(remote, up);
        }
        self.up
            .get(remote)
            .is_some_and(|flag| flag.swap(up, Ordering::Relaxed) != up)
    }
}

/// Sets `warren_remote_up{remote}`.
fn up_gauge(remote: &str, up: bool) {
    let labels = warren_common::metrics::Remote {
        remote: warren_common::metrics::label(remote),
    };
    warren_common::metrics::get()
        .remote_up
        .get_or_create(&labels)
        .set(i64::from(up));
}

/// Starts the checker if any route has a failover list; `connect` is `local.connect_timeout`.
pub fn spawn(health: Arc<Health>, routing: &LocalRouting, connect: Duration, shutdown: CancellationToken) {
    let remotes = routing.checked_remotes();
    if remotes.is_empty() {
        return;
    }
    let interval = routing.health_interval;
    let limit = interval.min(connect);
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                _ = tick.tick() => {}
            }
            let checks = futures_util::future::join_all(remotes.iter().map(|remote| check(&health, remote, limit)));
            tokio::select! {
                () = shutdown.cancelled() => return,
                _ = checks => {}
            }
        }
    });
}

async fn check(health: &Health, remote: &Endpoint, limit: Duration) {
    let result = tokio::time::timeout(limit, TcpStream::connect(&remote.address)).await;
    let up = matches!(result, Ok(Ok(_)));
    if health.set(&remote.name, up) {
        if up {
            tracing::info!(remote = %remote.name, address = %remote.address, "health check: the remote answers again");
        } else {
            let why = match result {
                Ok(Err(e)) => e.to_string(),
                _ => format!("no answer within {:.1} s", limit.as_secs_f64()),
            };
            tracing::warn!(
                remote = %remote.name, address = %remote.address,
                "health check failed ({why}): failover tries the other remotes first"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unchecked_remotes_are_up_and_changes_are_reported_once() {
        let health = Health {
            up: HashMap::from([("a".to_owned(), AtomicBool::new(true))]),
            warm: Warm::new(Default::default()),
        };
        assert!(health.is_up("a") && health.is_up("never-checked"));
        assert!(health.set("a", false), "up → down is a change");
        assert!(!health.set("a", false), "down → down is not");
        assert!(!health.is_up("a"));
        assert!(!health.set("never-checked", false), "no flag, no change");
        assert!(health.is_up("never-checked"));
    }
}
