//! warren-local: a SOCKS5, SOCKS4/4a and HTTP proxy for applications on this machine that
//! carries each request through an encrypted tunnel to warren-remote (or directly, or along a
//! chain, as `local.routes` says).
//!
//! A request walks down, one room after another, and never back up:
//!
//! ```text
//! run ─▶ accept.rs      the first byte picks the front end (a debug span per client)
//!          ├─ socks5/     handshake.rs (RFC 1928/1929), then the command
//!          ├─ socks4.rs   request, then the command
//!          └─ http/       request loop: connect.rs, forward.rs, resource.rs; response.rs, wire.rs
//!                 │
//!                 ▼
//!        session/      open the outbound while watching the client (early bytes kept), the
//!                      front end's reply, relay to the end, one "connection finished" line;
//!                      bind.rs (BIND), udp.rs (UDP ASSOCIATE)
//!                 │
//!                 ▼
//!        outbound/     route, then direct / tunnel.rs (a remote) / chain.rs (+ upstream.rs);
//!                      health.rs checks the remotes of failover routes
//! ```
//!
//! `check.rs` is apart from that road: `warren-local check --connect` asks each remote whether
//! it is reachable, warren, on the same key and the same time.
//!
//! Every handshake message is read through `warren_common::framed` (one read loop); `auth.rs`
//! checks logins.
#![forbid(unsafe_code)]

mod accept;
mod auth;
pub mod check;
mod http;
mod outbound;
mod session;
mod socks4;
mod socks5;

use std::sync::{Arc, RwLock};

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use warren_common::config::LocalConfig;
use warren_common::server::{fixed, Configs};

pub use outbound::Health;

/// `warren-local check --connect`'s probe of every remote ([`check`]): builds a runtime, prints
/// a verdict line per remote on stdout, and returns exit code 0 if all are ok, else 1.
pub fn check_connect(config: &LocalConfig) -> std::process::ExitCode {
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("warren-local: error: starting the async runtime: {e}");
            return std::process::ExitCode::from(2);
        }
    };
    if runtime.block_on(check::connect(config)) {
        std::process::ExitCode::SUCCESS
    } else {
        std::process::ExitCode::from(1)
    }
}

/// Serves SOCKS5, SOCKS4/4a and HTTP proxy clients on `listener` until `shutdown` is cancelled, then drains.
pub async fn run(listener: TcpListener, config: LocalConfig, shutdown: CancellationToken) {
    run_reloadable(listener, fixed(config), shutdown).await;
}

/// [`run`], serving each new connection from the newest of `configs` (reloads): users, routes,
/// remotes, chains and timeouts change for what starts after a reload, and the remotes' health
/// checks and warm connections start over for the new remotes; open connections run on with
/// the config they started with. The listener and the caps stay as they started.
pub async fn run_reloadable(listener: TcpListener, configs: Configs<LocalConfig>, shutdown: CancellationToken) {
    let health = Health::for_config(&configs.borrow());
    serve_configs(listener, configs, health, shutdown).await;
}

/// [`run`], with the remotes' health state in the caller's hands (to watch the checker).
pub async fn serve(listener: TcpListener, config: LocalConfig, health: Arc<Health>, shutdown: CancellationToken) {
    serve_configs(listener, fixed(config), health, shutdown).await;
}

/// What new connections are served with: a config and the health state built for it, with the
/// token that stops that state's checker when a reload replaces it.
struct Current {
    config: Arc<LocalConfig>,
    health: Arc<Health>,
    checker: CancellationToken,
}

impl Current {
    fn start(config: Arc<LocalConfig>, health: Arc<Health>, shutdown: &CancellationToken) -> Current {
        let checker = shutdown.child_token();
        outbound::health::spawn(
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
    fn retire(&self) {
        self.checker.cancel();
        self.health.warm.close_all();
    }
}

fn read(current: &RwLock<Current>) -> std::sync::RwLockReadGuard<'_, Current> {
    // A poisoned lock only means a writer panicked while swapping Arcs: the value is whole.
    current.read().unwrap_or_else(std::sync::PoisonError::into_inner)
}

async fn serve_configs(
    listener: TcpListener,
    mut configs: Configs<LocalConfig>,
    health: Arc<Health>,
    shutdown: CancellationToken,
) {
    let first = configs.borrow_and_update().clone();
    let limits = first.limits;
    let current = Arc::new(RwLock::new(Current::start(first, health, &shutdown)));
    let reloads = {
        let (current, shutdown) = (current.clone(), shutdown.clone());
        async move {
            // Ends when the sender is gone (no reloads: tests, library users).
            while configs.changed().await.is_ok() {
                let config = configs.borrow_and_update().clone();
                let next = Current::start(config.clone(), Health::for_config(&config), &shutdown);
                let old = std::mem::replace(
                    &mut *current.write().unwrap_or_else(std::sync::PoisonError::into_inner),
                    next,
                );
                old.retire();
            }
        }
    };
    tokio::spawn(reloads);
    let serving = current.clone();
    warren_common::server::serve(listener, shutdown, limits, move |stream, peer| {
        let (config, health) = {
            let now = read(&serving);
            (now.config.clone(), now.health.clone())
        };
        async move { accept::handle(stream, peer, config, health).await }
    })
    .await;
    read(&current).retire();
}
