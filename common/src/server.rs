//! The accept loop both binaries share: a cap on concurrent connections, one task per
//! connection, and a graceful shutdown that stops accepting, lets open connections finish for a
//! grace period, then closes the rest.
//!
//! [`serve`] (warren-local) takes a connection slot before accepting, so clients beyond the cap
//! wait in the listen backlog. [`serve_gated`] (warren-remote) admits through two pools instead
//! ([`gate`]): unauthenticated connections get their own caps, in all and per source, and move
//! to the connection pool only once their request authenticates.

pub mod gate;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use gate::{Admission, Full, HandshakeLimits};

/// Limits every server runs under.
#[derive(Debug, Clone, Copy)]
pub struct ServerLimits {
    /// Connections handled at once; further clients wait in the listen backlog.
    pub max_connections: usize,
    /// How long open connections may run on after shutdown is signalled.
    pub shutdown_grace: Duration,
}

/// The config a running server serves from: the current one, replaced whole when the config is
/// reloaded (SIGHUP, `cli::reload`). A server reads it for each new connection; open
/// connections keep the `Arc` they started with. [`fixed`] makes one that never changes.
pub type Configs<C> = tokio::sync::watch::Receiver<std::sync::Arc<C>>;

/// [`Configs`] that stay `config` (for library users and tests without reload).
pub fn fixed<C>(config: C) -> Configs<C> {
    // With the sender gone, `changed()` reports the end at once and `borrow()` keeps the value.
    tokio::sync::watch::channel(std::sync::Arc::new(config)).1
}

/// Accepts connections until `shutdown` is cancelled, running `handler` for each in its own
/// task, then drains. Every deadline a connection needs lives inside `handler`, never here, so
/// one slow client cannot hold up the accept loop.
pub async fn serve<H, F>(listener: TcpListener, shutdown: CancellationToken, limits: ServerLimits, handler: H)
where
    H: Fn(TcpStream, SocketAddr) -> F,
    F: Future<Output = ()> + Send + 'static,
{
    let permits = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let tracker = TaskTracker::new();
    let kill = CancellationToken::new();
    let mut cap_logged = false;
    loop {
        let permit = tokio::select! {
            () = shutdown.cancelled() => break,
            permit = permits.clone().acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_) => break,
            },
        };
        if permits.available_permits() == 0 && !cap_logged {
            tracing::warn!(
                max = limits.max_connections,
                "connection cap reached; new clients wait in the backlog"
            );
            cap_logged = true;
        } else if permits.available_permits() > limits.max_connections / 10 {
            cap_logged = false;
        }
        let (stream, peer) = match accept(&listener, &shutdown).await {
            Accepted::Connection(stream, peer) => (stream, peer),
            Accepted::Retry => continue,
            Accepted::Shutdown => break,
        };
        crate::net::tune(&stream);
        // Boxed, so the task wrapping it is not a second copy of the connection's state.
        let conn = Box::pin(handler(stream, peer));
        let kill = kill.clone();
        tracker.spawn(async move {
            tokio::select! {
                () = conn => {}
                () = kill.cancelled() => {}
            }
            drop(permit);
        });
    }
    drop(listener);
    drain(tracker, kill, limits.shutdown_grace).await;
}

/// Accepts connections until `shutdown` is cancelled, each admitted through two pools: a
/// handshake slot at once (a connection over [`HandshakeLimits`] is reset unread), then a
/// connection slot when `handler` calls [`Admission::authenticated`]. `handler` keeps the
/// [`Admission`] for as long as the connection lives. Drains like [`serve`].
pub async fn serve_gated<H, F>(
    listener: TcpListener,
    shutdown: CancellationToken,
    limits: ServerLimits,
    handshakes: HandshakeLimits,
    handler: H,
) where
    H: Fn(TcpStream, SocketAddr, Admission) -> F,
    F: Future<Output = ()> + Send + 'static,
{
    let gate = gate::Gate::new(limits.max_connections, handshakes);
    let tracker = TaskTracker::new();
    let kill = CancellationToken::new();
    loop {
        let (stream, peer) = match accept(&listener, &shutdown).await {
            Accepted::Connection(stream, peer) => (stream, peer),
            Accepted::Retry => continue,
            Accepted::Shutdown => break,
        };
        let admission = match gate.enter(peer.ip()) {
            Ok(admission) => admission,
            Err(_) => {
                // Reset, not FIN: nothing is read, the close costs the server no TIME_WAIT
                // entry under a flood, and the prober sees what any overloaded host sends
                // (PROTOCOL.md §11). Linux resets an unread close anyway once bytes arrived.
                let _ = socket2::SockRef::from(&stream).set_linger(Some(Duration::ZERO));
                drop(stream);
                continue;
            }
        };
        crate::net::tune(&stream);
        let conn = Box::pin(handler(stream, peer, admission));
        let kill = kill.clone();
        tracker.spawn(async move {
            tokio::select! {
                () = conn => {}
                () = kill.cancelled() => {}
            }
        });
    }
    drop(listener);
    drain(tracker, kill, limits.shutdown_grace).await;
}

/// What one turn of an accept loop got.
enum Accepted {
    Connection(TcpStream, SocketAddr),
    /// accept failed (logged, and backed off from): try again.
    Retry,
    Shutdown,
}

async fn accept(listener: &TcpListener, shutdown: &CancellationToken) -> Accepted {
    tokio::select! {
        () = shutdown.cancelled() => Accepted::Shutdown,
        accepted = listener.accept() => match accepted {
            Ok((stream, peer)) => Accepted::Connection(stream, peer),
            Err(e) => {
                // EMFILE and friends: back off briefly instead of spinning.
                tracing::warn!("accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                Accepted::Retry
            }
        },
    }
}

/// Lets the tracked connections finish for `grace`, then cancels `kill` and waits for the rest.
async fn drain(tracker: TaskTracker, kill: CancellationToken, grace: Duration) {
    tracker.close();
    if !tracker.is_empty() {
        tracing::info!(open = tracker.len(), grace = ?grace, "shutting down; waiting for open connections");
    }
    if tokio::time::timeout(grace, tracker.wait()).await.is_err() {
        tracing::warn!(open = tracker.len(), "grace period over; closing remaining connections");
        kill.cancel();
        tracker.wait().await;
    }
}

/// A token cancelled on SIGINT or SIGTERM. The handlers are installed before this returns, so
/// a signal that arrives any time after the call is caught (call it before announcing readiness).
pub fn shutdown_on_signals() -> CancellationToken {
    let token = CancellationToken::new();
    let trigger = token.clone();
    let signal = wait_for_signal();
    tokio::spawn(async move {
        signal.await;
        tracing::info!("shutdown signal received");
        trigger.cancel();
    });
    token
}

/// Installs the handlers at once (not at the first poll) and returns a future for the first signal.
#[cfg(unix)]
fn wait_for_signal() -> impl Future<Output = ()> + Send {
    use tokio::signal::unix::{signal, SignalKind};
    let streams = (signal(SignalKind::interrupt()), signal(SignalKind::terminate()));
    async move {
        match streams {
            (Ok(mut int), Ok(mut term)) => {
                tokio::select! {
                    _ = int.recv() => {}
                    _ = term.recv() => {}
                }
            }
            _ => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
}

#[cfg(not(unix))]
fn wait_for_signal() -> impl Future<Output = ()> + Send {
    async {
        let _ = tokio::signal::ctrl_c().await;
    }
}
