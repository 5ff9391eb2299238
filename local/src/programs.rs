//! Starts the front ends for programs that do not speak SOCKS beside the SOCKS listener, on
//! the sockets the binary bound for them at start (`warren_common::net::bind_extra`, in the
//! order of `Programs::listeners`): `local.forwards` (forward/), `local.dns` (dns/),
//! `local.redir` (redir.rs). They read the newest config's routes per connection, flow or
//! query; their own settings and listeners stay as they started.

use std::sync::Arc;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use warren_common::config::LocalConfig;
use warren_common::net::BoundExtra;

use crate::dns::{self, Resolver};
use crate::forward;
use crate::outbound::current::Latest;

/// The running front ends.
pub struct Running(TaskTracker);

impl Running {
    /// Waits for every front end to drain after shutdown.
    pub async fn wait(self) {
        self.0.close();
        self.0.wait().await;
    }
}

/// Spawns a task per configured front end whose socket is in `extra`.
pub fn spawn(config: &LocalConfig, extra: Vec<BoundExtra>, latest: &Latest, shutdown: &CancellationToken) -> Running {
    let tracker = TaskTracker::new();
    let programs = &config.programs;
    let mut extra = extra.into_iter();
    for forward in &programs.forwards {
        let Some(bound) = extra.next() else { break };
        let to = forward.to.clone();
        if let Some(listener) = bound.tcp {
            tracing::info!(listen = %forward.listen, %to, "forwarding TCP");
            let serve = forward::serve_tcp(listener, to.clone(), latest.clone(), config.limits, shutdown.clone());
            tracker.spawn(serve);
        }
        if let Some(socket) = bound.udp {
            tracing::info!(listen = %forward.listen, %to, "forwarding UDP");
            tracker.spawn(forward::udp::serve(socket, to, latest.clone(), shutdown.clone()));
        }
    }
    let names = Resolver::name_map();
    if let Some(settings) = &programs.dns {
        if let Some(bound) = extra.next() {
            tracing::info!(listen = %settings.listen, "serving DNS (UDP and TCP)");
            let resolver = Arc::new(Resolver::new(settings, latest.clone(), names.clone()));
            tracker.spawn(dns::serve(bound.udp, bound.tcp, resolver, shutdown.clone()));
        }
    }
    #[cfg(target_os = "linux")]
    if let Some(settings) = &programs.redir {
        if let Some(bound) = extra.next() {
            if let Some(listener) = bound.tcp {
                tracing::info!(listen = %settings.listen, "serving the transparent proxy (TCP, SO_ORIGINAL_DST)");
                let serve =
                    crate::redir::serve_tcp(listener, latest.clone(), names.clone(), config.limits, shutdown.clone());
                tracker.spawn(serve);
            }
            if let Some(socket) = bound.udp {
                tracing::info!(listen = %settings.listen, "serving the transparent proxy (UDP, TPROXY)");
                tracker.spawn(crate::redir::udp::serve(
                    socket,
                    latest.clone(),
                    names,
                    shutdown.clone(),
                ));
            }
        }
    }
    Running(tracker)
}
