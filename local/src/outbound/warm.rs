//! Warm connections: TCP connections to a remote opened before a request needs one, so a
//! request waits for one round trip (its tunnel handshake) instead of two (TCP's handshake, then
//! the tunnel's). A warm connection carries nothing until a request claims it.
//!
//! ```text
//! request → take(remote) ── a live, unexpired warm connection? ── yes → handshake on it
//!                  │                                            └─ no  → dial as before
//!                  └─ wakes the remote's keeper, which tops the pool up to per_remote,
//!                     closes each connection at its random lifetime, and stops (closing the
//!                     rest) once no request came for `linger`
//! ```
//!
//! What the lifetimes are bound by: warren-remote closes a connection that sent no complete
//! request within its hold time, 0.57–1.0 × `remote.handshake_timeout` (PROTOCOL.md §11), which
//! is at least 5.7 s at the default 10 s. A warm connection lives a random time between half of
//! `local.warm_lifetime` (default 5 s) and all of it, so it is closed by the local, empty, before
//! the remote would close it, and the closes do not come at a fixed period. Nothing is opened
//! before a first request, nor `linger` after the last one.
//!
//! A connection claimed in the instant the remote gave up on it fails before any answer byte;
//! [`super::open_via`] then dials afresh once (the remote closed without reading, so the
//! request was not carried out).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rand::Rng;
use tokio::net::TcpStream;
use tokio::sync::Notify;
use tokio::time::Instant;
use warren_common::config::local_routes::Endpoint;
use warren_common::config::WarmSettings;

use super::tunnel;

/// The warm connections of every remote, by remote name (unique in `local.remotes`).
#[derive(Debug)]
pub struct Warm {
    settings: WarmSettings,
    remotes: Mutex<HashMap<String, Arc<Slot>>>,
    /// Set by [`Warm::close_all`]: a pool retired at shutdown or by a reload starts no keeper
    /// again, even for a connection that still holds it.
    closed: std::sync::atomic::AtomicBool,
}

/// One remote's warm connections and its keeper's state.
#[derive(Debug, Default)]
struct Slot {
    state: Mutex<SlotState>,
    /// Wakes the keeper when a connection was claimed (to replace it).
    claimed: Notify,
}

#[derive(Debug, Default)]
struct SlotState {
    /// Open connections and when each is to be closed unused.
    ready: Vec<(TcpStream, Instant)>,
    /// When a request last asked for a connection to this remote.
    last_demand: Option<Instant>,
    /// Whether a keeper task runs for this remote.
    keeper: bool,
}

impl Warm {
    pub fn new(settings: WarmSettings) -> Warm {
        Warm {
            settings,
            remotes: Mutex::default(),
            closed: std::sync::atomic::AtomicBool::new(false),
        }
    }

    /// A live, unexpired warm connection to `remote`, if one is ready; either way, records the
    /// demand and starts the remote's keeper if none runs (unless warming is off).
    pub fn take(&self, remote: &Arc<Endpoint>) -> Option<TcpStream> {
        if self.settings.per_remote == 0 || self.closed.load(std::sync::atomic::Ordering::Relaxed) {
            return None;
        }
        let slot = self.slot(&remote.name);
        let now = Instant::now();
        let (taken, start) = {
            let mut state = lock(&slot.state);
            state.last_demand = Some(now);
            state.ready.retain(|(_, expires)| *expires > now);
            let mut taken = None;
            while let Some((stream, _)) = state.ready.pop() {
                if is_idle(&stream) {
                    taken = Some(stream);
                    break;
                }
            }
            let start = !state.keeper;
            state.keeper = true;
            (taken, start)
        };
        if start {
            tokio::spawn(keep(slot, remote.clone(), self.settings));
        } else {
            slot.claimed.notify_one();
        }
        taken
    }

    /// Closes every warm connection (at shutdown); keepers find an empty pool and stop.
    pub fn close_all(&self) {
        self.closed.store(true, std::sync::atomic::Ordering::Relaxed);
        for slot in lock(&self.remotes).values() {
            let mut state = lock(&slot.state);
            state.ready.clear();
            state.last_demand = None;
            slot.claimed.notify_one();
        }
    }

    fn slot(&self, name: &str) -> Arc<Slot> {
        lock(&self.remotes).entry(name.to_owned()).or_default().clone()
    }
}

/// A poisoned lock only means another task panicked holding it; the pool's data stays usable.
fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Whether the connection is open with nothing to read (the remote never sends first, so a
/// readable socket means it closed or something is wrong).
fn is_idle(stream: &TcpStream) -> bool {
    let mut byte = [0u8; 1];
    matches!(stream.try_read(&mut byte), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock)
}

/// The keeper of one remote's pool: tops it up, closes connections at their lifetime, and stops
/// once no request came for `linger` or a dial fails (the next request starts it again).
async fn keep(slot: Arc<Slot>, remote: Arc<Endpoint>, settings: WarmSettings) {
    // Bounded: every round either dials, sleeps until a deadline, or stops.
    loop {
        let now = Instant::now();
        let (missing, wake) = {
            let mut state = lock(&slot.state);
            state.ready.retain(|(_, expires)| *expires > now);
            let active = state
                .last_demand
                .is_some_and(|t| now.duration_since(t) < settings.linger);
            if !active {
                let closed = state.ready.len();
                state.ready.clear();
                state.keeper = false;
                tracing::debug!(remote = %remote.name, address = %remote.address, closed, "no request for the linger time: warm connections closed, none opened until the next request");
                return;
            }
            let linger_end = state.last_demand.map_or(now, |t| t + settings.linger);
            let next_expiry = state.ready.iter().map(|(_, e)| *e).min();
            let wake = next_expiry.map_or(linger_end, |e| e.min(linger_end));
            (settings.per_remote.saturating_sub(state.ready.len()), wake)
        };
        for _ in 0..missing {
            let dialled = tokio::time::timeout(settings.lifetime, tunnel::dial(&remote)).await;
            let Ok(Ok(stream)) = dialled else {
                // The remote is not reachable now: the request path dials itself and reports it.
                tracing::debug!(remote = %remote.name, "warm connection not opened; stopping until the next request");
                let mut state = lock(&slot.state);
                state.ready.clear();
                state.keeper = false;
                return;
            };
            let lifetime = settings
                .lifetime
                .mul_f64(rand::thread_rng().gen_range(0.5..=1.0))
                .max(Duration::from_millis(1));
            lock(&slot.state).ready.push((stream, Instant::now() + lifetime));
        }
        if missing > 0 {
            continue;
        }
        tokio::select! {
            () = tokio::time::sleep_until(wake) => {}
            () = slot.claimed.notified() => {}
        }
    }
}
