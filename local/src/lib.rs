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
//! Programs that do not speak SOCKS come in beside it (`programs.rs` starts them on the sockets
//! the binary bound): `forward/` (fixed-target TCP and UDP forwards), `dns/` (the DNS
//! forwarder: far-side RESOLVE or upstreams), `redir/` (Linux transparent proxy: REDIRECT and
//! TPROXY). They enter the same road at session/ (TCP) or with session/udp's upstream (UDP),
//! and read the newest config through `outbound/current.rs`.
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
mod dns;
mod forward;
mod http;
mod outbound;
mod programs;
#[cfg(target_os = "linux")]
mod redir;
mod session;
mod socks4;
mod socks5;

use std::sync::Arc;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use warren_common::config::LocalConfig;
use warren_common::net::BoundExtra;
use warren_common::server::{fixed, Configs};

use crate::outbound::current::{Current, Latest};

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
    run_all(listener, Vec::new(), configs, shutdown).await;
}

/// [`run_reloadable`], also serving `local.forwards`, `local.dns` and `local.redir` on `extra`:
/// the sockets `warren_common::net::bind_extra` bound for the config's
/// `programs.listeners()`, in that order (what the binary does; a missing socket leaves its
/// front end off). These listeners and their settings stay as they started; the routes they
/// use follow reloads.
pub async fn run_all(
    listener: TcpListener,
    extra: Vec<BoundExtra>,
    configs: Configs<LocalConfig>,
    shutdown: CancellationToken,
) {
    let health = Health::for_config(&configs.borrow());
    serve_configs(listener, extra, configs, health, shutdown).await;
}

/// [`run`], with the remotes' health state in the caller's hands (to watch the checker).
pub async fn serve(listener: TcpListener, config: LocalConfig, health: Arc<Health>, shutdown: CancellationToken) {
    serve_configs(listener, Vec::new(), fixed(config), health, shutdown).await;
}

async fn serve_configs(
    listener: TcpListener,
    extra: Vec<BoundExtra>,
    mut configs: Configs<LocalConfig>,
    health: Arc<Health>,
    shutdown: CancellationToken,
) {
    let first = configs.borrow_and_update().clone();
    let limits = first.limits;
    let latest = Latest::new(Current::start(first.clone(), health, &shutdown));
    let reloads = {
        let (latest, shutdown) = (latest.clone(), shutdown.clone());
        async move {
            // Ends when the sender is gone (no reloads: tests, library users).
            while configs.changed().await.is_ok() {
                let config = configs.borrow_and_update().clone();
                let next = Current::start(config.clone(), Health::for_config(&config), &shutdown);
                latest.replace(next).retire();
            }
        }
    };
    tokio::spawn(reloads);
    let programs = programs::spawn(&first, extra, &latest, &shutdown);
    let serving = latest.clone();
    warren_common::server::serve(listener, shutdown, limits, move |stream, peer| {
        let (config, health) = {
            let now = serving.read();
            (now.config.clone(), now.health.clone())
        };
        async move { accept::handle(stream, peer, config, health).await }
    })
    .await;
    programs.wait().await;
    latest.read().retire();
}
