//! The accept loop both binaries share: a cap on concurrent connections, one task per
//! connection, and a graceful shutdown that stops accepting, lets open connections finish for a
//! grace period, then closes the rest.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Limits every server runs under.
#[derive(Debug, Clone, Copy)]
pub struct ServerLimits {
    /// Connections handled at once; further clients wait in the listen backlog.
    pub max_connections: usize,
    /// How long open connections may run on after shutdown is signalled.
    pub shutdown_grace: Duration,
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
        let (stream, peer) = tokio::select! {
            () = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // EMFILE and friends: back off briefly instead of spinning.
                    tracing::warn!("accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
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
    tracker.close();
    if !tracker.is_empty() {
        tracing::info!(open = tracker.len(), grace = ?limits.shutdown_grace, "shutting down; waiting for open connections");
    }
    if tokio::time::timeout(limits.shutdown_grace, tracker.wait())
        .await
        .is_err()
    {
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
