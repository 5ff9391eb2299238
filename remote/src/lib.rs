//! warren-remote: accepts tunnel connections from warren-local, checks them, and makes the real
//! outbound connections.
//!
//! ```text
//! TCP listener ─┐                               ┌─▶ connect  (CONNECT)
//!               ├─▶ accept ─▶ command ──────────┼─▶ bind     (BIND)
//! agent session ┘   (read, authenticate,        ├─▶ udp::tcp (UDP-over-TCP)
//!  (agent::client)   window, replay)            └─▶ agent::server (AGENT, or CONNECT via an agent)
//!                             every command answers through respond, then relays
//! UDP socket, same port ─▶ udp::packet (encrypted UDP)
//! ```
#![forbid(unsafe_code)]

mod accept;
mod agent;
mod bind;
mod connect;
mod outbound;
mod respond;
mod shared;
mod udp;

use std::sync::Arc;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use warren_common::config::RemoteConfig;

use crate::shared::{Origin, Shared};

/// Serves tunnel connections on `listener` until `shutdown` is cancelled, then drains. Requests
/// and UDP packets stamped before the second this is called are refused (PROTOCOL.md §10).
pub async fn run(listener: TcpListener, config: RemoteConfig, shutdown: CancellationToken) {
    run_since(listener, config, shutdown, warren_common::time::unix_now()).await;
}

/// [`run`], counting `started` (Unix seconds) as the second this remote started: requests and
/// UDP packets stamped before it are refused, as after a restart at that second. Tests use it
/// to stand for a restart at a later second without waiting for the clock.
pub async fn run_since(listener: TcpListener, config: RemoteConfig, shutdown: CancellationToken, started: u64) {
    let limits = config.limits;
    // The encrypted UDP transport listens on the same address and port number, over UDP.
    if let Ok(addr) = listener.local_addr() {
        match tokio::net::UdpSocket::bind(addr).await {
            Ok(socket) => {
                tokio::spawn(udp::packet::serve(
                    socket,
                    Arc::new(config.clone()),
                    started,
                    shutdown.clone(),
                ));
            }
            Err(e) => tracing::warn!(%addr, "cannot bind the UDP relay socket ({e}): encrypted UDP is unavailable"),
        }
    }
    let shared = Arc::new(Shared::new(config, shutdown.clone(), started));
    if let Some(settings) = shared.config.agent.clone() {
        // This remote is an agent: streams the public remote opens are served like connections.
        let inner = shared.clone();
        let serve = move |stream, server| {
            tokio::spawn(accept::serve(stream, Origin::Agent { server }, inner.clone()));
        };
        let shared = shared.clone();
        tokio::spawn(async move { agent::client::run(settings, &shared.config, shared.shutdown.clone(), serve).await });
    }
    warren_common::server::serve(listener, shutdown, limits, move |stream, peer| {
        let origin = Origin::Tcp {
            peer,
            local: stream.local_addr().ok(),
        };
        accept::serve(stream, origin, shared.clone())
    })
    .await;
}
