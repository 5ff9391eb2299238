//! Health checks for failover: every `local.health_interval`, a TCP connect to each remote that
//! is the first hop of a way out in a route listing several (bounded by the interval and by
//! `local.connect_timeout`). A remote that fails is marked down and tried only after the others
//! until a check succeeds again; changes are logged. The checker stops at shutdown.

use std::sync::Arc;

use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;
use warren_common::config::local_routes::{Endpoint, LocalRouting};

/// Starts the checker if any route has a failover list; `connect` is `local.connect_timeout`.
pub fn spawn(routing: &LocalRouting, connect: std::time::Duration, shutdown: CancellationToken) {
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
            let checks = futures_util::future::join_all(remotes.iter().map(|remote| check(remote, limit)));
            tokio::select! {
                () = shutdown.cancelled() => return,
                _ = checks => {}
            }
        }
    });
}

async fn check(remote: &Arc<Endpoint>, limit: std::time::Duration) {
    let result = tokio::time::timeout(limit, TcpStream::connect(&remote.address)).await;
    let up = matches!(result, Ok(Ok(_)));
    if remote.health.set(up) {
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
