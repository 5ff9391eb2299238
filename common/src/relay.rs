//! The relay: both directions at once with `tokio::io::copy_bidirectional_with_sizes`, which
//! carries a half-close from one side to the other (EOF on one side becomes a shutdown of the
//! other's write half) and ends when both directions have finished. We add what it lacks: byte
//! counts that survive an error, and an idle timeout.

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Instant;

use crate::crypto::MAX_PAYLOAD;

/// Copy buffer per direction: one chunk's worth, so a full read becomes a single full chunk.
const BUF_SIZE: usize = MAX_PAYLOAD;

/// How a relay ended, and what it moved.
#[derive(Debug)]
pub struct RelayOutcome {
    /// Bytes read from the first stream (client → target).
    pub sent: u64,
    /// Bytes read from the second stream (target → client).
    pub received: u64,
    pub end: RelayEnd,
}

#[derive(Debug)]
pub enum RelayEnd {
    /// Both directions reached EOF.
    Closed,
    /// Neither direction moved a byte for the idle timeout.
    Idle,
    /// A socket failed (reset, or a tunnel chunk that failed authentication).
    Error(io::Error),
}

impl std::fmt::Display for RelayEnd {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RelayEnd::Closed => f.write_str("closed"),
            RelayEnd::Idle => f.write_str("idle timeout"),
            RelayEnd::Error(e) => write!(f, "error: {e}"),
        }
    }
}

/// Counts the bytes read through it into a shared counter.
struct Metered<S> {
    inner: S,
    count: Arc<AtomicU64>,
}

impl<S: AsyncRead + Unpin> AsyncRead for Metered<S> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let result = Pin::new(&mut self.inner).poll_read(cx, buf);
        let n = (buf.filled().len() - before) as u64;
        if n > 0 {
            self.count.fetch_add(n, Ordering::Relaxed);
        }
        result
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Metered<S> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// Relays between `a` and `b` until both directions end, one fails, or nothing moves for
/// `idle_timeout`. Both streams are dropped (closed) on return.
pub async fn relay<A, B>(a: A, b: B, idle_timeout: Duration) -> RelayOutcome
where
    A: AsyncRead + AsyncWrite + Unpin,
    B: AsyncRead + AsyncWrite + Unpin,
{
    let sent = Arc::new(AtomicU64::new(0));
    let received = Arc::new(AtomicU64::new(0));
    let mut a = Metered {
        inner: a,
        count: sent.clone(),
    };
    let mut b = Metered {
        inner: b,
        count: received.clone(),
    };
    let copy = tokio::io::copy_bidirectional_with_sizes(&mut a, &mut b, BUF_SIZE, BUF_SIZE);
    let idle = async {
        // Check a few times per timeout period: the connection ends between 1 and 1.25 idle
        // timeouts after the last byte, with no timer reset per read.
        let period = idle_timeout / 4;
        let mut last_total = 0;
        let mut last_change = Instant::now();
        loop {
            tokio::time::sleep(period).await;
            let total = sent.load(Ordering::Relaxed) + received.load(Ordering::Relaxed);
            if total != last_total {
                last_total = total;
                last_change = Instant::now();
            } else if last_change.elapsed() >= idle_timeout {
                return;
            }
        }
    };
    let end = tokio::select! {
        result = copy => match result {
            Ok(_) => RelayEnd::Closed,
            Err(e) => RelayEnd::Error(e),
        },
        () = idle => RelayEnd::Idle,
    };
    RelayOutcome {
        sent: sent.load(Ordering::Relaxed),
        received: received.load(Ordering::Relaxed),
        end,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test(start_paused = true)]
    async fn idle_connections_end() {
        let (a, _a_peer) = tokio::io::duplex(64);
        let (b, _b_peer) = tokio::io::duplex(64);
        let outcome = relay(a, b, Duration::from_secs(60)).await;
        assert!(matches!(outcome.end, RelayEnd::Idle));
    }

    #[tokio::test]
    async fn half_close_crosses_and_counts() {
        let (a, mut client) = tokio::io::duplex(64);
        let (b, mut server) = tokio::io::duplex(64);
        let task = tokio::spawn(relay(a, b, Duration::from_secs(60)));
        client.write_all(b"request").await.unwrap();
        client.shutdown().await.unwrap();
        let mut got = Vec::new();
        server.read_to_end(&mut got).await.unwrap();
        assert_eq!(got, b"request");
        server.write_all(b"a longer answer").await.unwrap();
        drop(server);
        let mut answer = Vec::new();
        client.read_to_end(&mut answer).await.unwrap();
        assert_eq!(answer, b"a longer answer");
        let outcome = task.await.unwrap();
        assert_eq!((outcome.sent, outcome.received), (7, 15));
        assert!(matches!(outcome.end, RelayEnd::Closed));
    }
}
