//! Log capture for tests that check what warren logs: the first caller installs a subscriber
//! (warren-remote at info, warren-local at debug) whose lines are kept for the whole test
//! binary, and [`log_line`] waits, without sleeping, for a line with given words.

use std::io::Write;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, OnceLock};

use tokio::sync::Notify;

use crate::within;

/// Every log line of this test binary (see [`capture_logs`]), and a wake-up per line.
struct Captured {
    lines: Mutex<Vec<String>>,
    added: Notify,
}

fn captured() -> &'static Captured {
    static CAPTURED: OnceLock<Captured> = OnceLock::new();
    CAPTURED.get_or_init(|| Captured {
        lines: Mutex::default(),
        added: Notify::new(),
    })
}

/// One log event being written; it joins [`captured`] when the subscriber drops it.
struct Line(Vec<u8>);

impl Write for Line {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.extend_from_slice(bytes);
        Ok(bytes.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Drop for Line {
    fn drop(&mut self) {
        let all = captured();
        all.lines
            .lock()
            .unwrap()
            .push(String::from_utf8_lossy(&self.0).into_owned());
        all.added.notify_waiters();
    }
}

/// Sends this test binary's log lines (the remote's at info, the local's at debug) to
/// [`captured`]; the first caller installs it.
pub fn capture_logs() {
    static ONCE: AtomicUsize = AtomicUsize::new(0);
    if ONCE.fetch_add(1, Ordering::Relaxed) == 0 {
        let _ = tracing_subscriber::fmt()
            .with_env_filter("warren_remote=info,warren_local=debug")
            .with_ansi(false)
            .with_writer(|| Line(Vec::new()))
            .try_init();
    }
}

/// Every line captured so far, joined.
pub fn all_lines() -> String {
    captured()
        .lines
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .join("")
}

/// Waits for a log line that contains every one of `words`.
pub async fn log_line(words: &[&str]) -> String {
    within(20, "a log line with those words", async {
        loop {
            let all = captured();
            let added = all.added.notified();
            tokio::pin!(added);
            added.as_mut().enable();
            if let Some(line) = all
                .lines
                .lock()
                .unwrap()
                .iter()
                .find(|l| words.iter().all(|w| l.contains(w)))
            {
                return line.clone();
            }
            added.await;
        }
    })
    .await
}
