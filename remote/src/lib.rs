//! warren-remote: accepts tunnel connections from warren-local, checks them, and makes the real
//! outbound connections.
//!
//! ```text
//! TCP listener ─┐                               ┌─▶ connect  (CONNECT)
//!               ├─▶ accept ─▶ command ──────────┼─▶ bind     (BIND)
//! agent session ┘   (read, authenticate,        ├─▶ udp::tcp (UDP-over-TCP)
//!  (agent::client)   window, replay)            ├─▶ resolve  (RESOLVE: this machine's resolver)
//!                                               └─▶ agent::server (AGENT, or any command via an agent)
//!                             every command answers through respond, then relays
//! UDP socket, same port ─▶ udp::packet (encrypted UDP)
//! ```
#![forbid(unsafe_code)]

mod accept;
mod agent;
mod bind;
mod connect;
mod hold;
mod outbound;
mod resolve;
mod respond;
mod shared;
mod udp;

use std::net::IpAddr;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use warren_common::config::RemoteConfig;
use warren_common::server::{fixed, Admission, Configs};

use crate::shared::{Origin, Shared};

/// Serves tunnel connections on `listener` until `shutdown` is cancelled, then drains. Requests
/// and UDP packets stamped before the second this is called are refused (PROTOCOL.md §10).
pub async fn run(listener: TcpListener, config: RemoteConfig, shutdown: CancellationToken) {
    serve(listener, fixed(config), shutdown, warren_common::time::unix_now()).await;
}

/// [`run`], serving each new connection from the newest of `configs` (reloads): keys, ACL,
/// routes and agents change for what starts after a reload, and the agent link is redialled
/// when `remote.agent` changed; open connections run on. The listener, the UDP socket and the
/// caps stay as they started (the reload logs that they need a restart).
pub async fn run_reloadable(listener: TcpListener, configs: Configs<RemoteConfig>, shutdown: CancellationToken) {
    serve(listener, configs, shutdown, warren_common::time::unix_now()).await;
}

/// [`run`], counting `started` (Unix seconds) as the second this remote started: requests and
/// UDP packets stamped before it are refused, as after a restart at that second. Tests use it
/// to stand for a restart at a later second without waiting for the clock.
pub async fn run_since(listener: TcpListener, config: RemoteConfig, shutdown: CancellationToken, started: u64) {
    serve(listener, fixed(config), shutdown, started).await;
}

async fn serve(listener: TcpListener, mut configs: Configs<RemoteConfig>, shutdown: CancellationToken, started: u64) {
    // The host's own addresses are built-in ACL denies (a client must not reach a service
    // bound on the VPS's own public or private address); enumerated once, here, and added to
    // every config a reload brings.
    let own = own_addresses();
    tracing::debug!(addresses = ?own, "the ACL denies this host's own addresses unless an IP rule allows them");
    let with_own = move |config: &RemoteConfig| {
        let mut config = config.clone();
        config.acl.deny_own_addresses(own.iter().copied());
        for user in &mut config.users {
            Arc::make_mut(user).acl.deny_own_addresses(own.iter().copied());
        }
        Arc::new(config)
    };
    let config = with_own(&configs.borrow_and_update());
    let (limits, handshakes) = (config.limits, config.handshakes);
    let shared = Arc::new(Shared::new(config, shutdown.clone(), started));
    // The encrypted UDP transport listens on the same address and port number, over UDP.
    if let Ok(addr) = listener.local_addr() {
        // Bound here (so it is ready when `run` is), served on the process's UDP thread.
        match std::net::UdpSocket::bind(addr).and_then(|s| s.set_nonblocking(true).map(|()| s)) {
            Ok(socket) => {
                warren_common::udp_thread::spawn(udp::packet::serve(socket, shared.clone(), started, shutdown.clone()));
            }
            Err(e) => tracing::warn!(%addr, "cannot bind the UDP relay socket ({e}): encrypted UDP is unavailable"),
        }
    }
    let mut agent_link = start_agent_link(&shared);
    let reloads = {
        let shared = shared.clone();
        async move {
            // Ends when the sender is gone (no reloads: tests, library users) or at shutdown.
            while configs.changed().await.is_ok() {
                let config = with_own(&configs.borrow_and_update());
                let previous = shared.config();
                if previous.user_table.is_some() && config.user_table.is_none() {
                    tracing::warn!(
                        "remote.users removed: the shared key alone opens requests again, and every former user holds it"
                    );
                }
                let agent_changed = config.agent != previous.agent;
                let agents = config.agents.clone();
                shared.set_config(config);
                for name in shared.agents.revoke_all_but(&agents) {
                    tracing::info!(agent = %name, "remote.agents.{name} removed or its key changed: its session is closed");
                }
                if agent_changed {
                    tracing::info!("remote.agent changed: redialling the agent link");
                    agent_link.cancel();
                    agent_link = start_agent_link(&shared);
                }
            }
        }
    };
    tokio::spawn(reloads);
    // Unauthenticated connections count in their own pool, apart from max_connections.
    warren_common::server::serve_gated(
        listener,
        shutdown,
        limits,
        handshakes,
        move |stream, peer, admission| {
            let origin = Origin::Tcp {
                peer,
                local: stream.local_addr().ok(),
            };
            accept::serve(stream, origin, shared.clone(), admission)
        },
    )
    .await;
}

/// When this remote is an agent, dials its public remote and serves the streams it opens like
/// connections, until the returned token (a child of the shutdown token) is cancelled.
fn start_agent_link(shared: &Arc<Shared>) -> CancellationToken {
    let stop = shared.shutdown.child_token();
    let config = shared.config();
    if let Some(settings) = config.agent.clone() {
        let inner = shared.clone();
        let serve = move |stream, server, local| {
            let origin = Origin::Agent { server, local };
            tokio::spawn(accept::serve(stream, origin, inner.clone(), Admission::uncounted()));
        };
        let stop = stop.clone();
        tokio::spawn(async move { agent::client::run(settings, &config, stop, serve).await });
    }
    stop
}

/// Every address of this host's interfaces that the system lists (loopback included), or none
/// if the system will not list them (logged: the other built-in denies still hold).
pub fn own_addresses() -> Vec<IpAddr> {
    match if_addrs::get_if_addrs() {
        Ok(interfaces) => interfaces.iter().map(if_addrs::Interface::ip).collect(),
        Err(e) => {
            tracing::warn!("cannot list this host's interface addresses ({e}); the ACL does not deny them by default");
            Vec::new()
        }
    }
}
