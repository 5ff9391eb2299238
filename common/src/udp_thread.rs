//! The one thread each process relays UDP datagrams on: a single-threaded Tokio runtime,
//! started on first use and kept for the life of the process.
//!
//! Why not the main (multi-threaded) runtime: a datagram is a few microseconds of work, and on
//! the work-stealing runtime a datagram's wake-up often also wakes a second worker thread (a
//! futex wake and a context switch) that finds nothing to do. Measured with `bench/udp.py` on
//! the 2-core bench machine, each run beside shadowsocks-rust: moving the encrypted UDP
//! transport's associations here took warren from 0.80× to 1.32× of shadowsocks-rust's echoed
//! datagrams at 50k/s, 0.63× → 1.25× at 100k/s and 0.56× → 0.97× unpaced (docs/BENCHMARKS.md,
//! "UDP under load"). Bulk TCP keeps both workers: its chunks are large enough to be worth
//! spreading. A UDP association's sockets are created on this thread, so their readiness is
//! delivered here and a datagram does not change threads on its way through the process.
//!
//! The cost: all of a process's UDP associations share one core.

use std::future::Future;
use std::sync::OnceLock;

use tokio::runtime::{Builder, Handle};
use tokio::task::{AbortHandle, JoinHandle};

static HANDLE: OnceLock<Option<Handle>> = OnceLock::new();

/// Starts the thread (once); None if the runtime or the thread cannot be created.
fn start() -> Option<Handle> {
    let runtime = Builder::new_current_thread().enable_all().build().ok()?;
    let handle = runtime.handle().clone();
    std::thread::Builder::new()
        .name("warren-udp".into())
        .spawn(move || runtime.block_on(std::future::pending::<()>()))
        .ok()?;
    Some(handle)
}

/// Runs `future` on the UDP thread and returns its handle (await it for the output). Sockets
/// the future creates are driven by that thread. If the thread could not be started (no
/// threads left), the future runs on the caller's runtime instead: slower, still correct.
/// Must be called from inside a Tokio runtime.
pub fn spawn<F>(future: F) -> JoinHandle<F::Output>
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    match HANDLE.get_or_init(start) {
        Some(handle) => handle.spawn(future),
        None => tokio::spawn(future),
    }
}

/// Runs `future` on the UDP thread and waits for it, as if it ran here: dropping the returned
/// future (the caller's task ended or was cancelled) aborts it there. None if it panicked.
pub async fn run<F>(future: F) -> Option<F::Output>
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    struct AbortOnDrop(AbortHandle);
    impl Drop for AbortOnDrop {
        fn drop(&mut self) {
            self.0.abort();
        }
    }
    let task = spawn(future);
    let _guard = AbortOnDrop(task.abort_handle());
    task.await.ok()
}
