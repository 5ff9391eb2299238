//! The relay: both directions at once, carrying a half-close from one side to the other (EOF on
//! one side becomes a shutdown of the other's write half), ending when both directions have
//! finished, with byte counts that survive an error and an idle timeout.
//!
//! Memory: a direction holds its copy buffer only while data is moving. The buffer is allocated
//! (not zeroed) when the source has data and released when the source has nothing more to give
//! and everything was written, so an idle connection holds no copy buffers at all (tokio's
//! `copy_bidirectional` keeps two for the connection's whole life).

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use bytes::{Buf, BytesMut};
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

/// One direction's copy state.
#[derive(Default)]
struct Direction {
    /// Read but not yet written; empty with no capacity while the direction is idle.
    buf: BytesMut,
    read_done: bool,
    need_flush: bool,
    done: bool,
}

impl Direction {
    /// Copies from `r` to `w` until `r` ends (then shuts `w` down) or would block.
    fn poll_copy<R, W>(&mut self, cx: &mut Context<'_>, mut r: Pin<&mut R>, mut w: Pin<&mut W>) -> Poll<io::Result<()>>
    where
        R: AsyncRead + ?Sized,
        W: AsyncWrite + ?Sized,
    {
        loop {
            if self.done {
                return Poll::Ready(Ok(()));
            }
            if self.buf.is_empty() && !self.read_done {
                if self.buf.capacity() < BUF_SIZE {
                    self.buf = BytesMut::with_capacity(BUF_SIZE);
                }
                match tokio_util::io::poll_read_buf(r.as_mut(), cx, &mut self.buf) {
                    Poll::Ready(Ok(0)) => self.read_done = true,
                    Poll::Ready(Ok(_)) => {}
                    Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                    Poll::Pending => {
                        // Nothing to move: give the buffer back while we wait.
                        self.buf = BytesMut::new();
                        if self.need_flush {
                            ready!(w.as_mut().poll_flush(cx))?;
                            self.need_flush = false;
                        }
                        return Poll::Pending;
                    }
                }
            }
            while !self.buf.is_empty() {
                let n = ready!(w.as_mut().poll_write(cx, &self.buf))?;
                if n == 0 {
                    return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
                }
                self.buf.advance(n);
                self.need_flush = true;
            }
            if self.read_done {
                self.buf = BytesMut::new();
                ready!(w.as_mut().poll_flush(cx))?;
                ready!(w.as_mut().poll_shutdown(cx))?;
                self.done = true;
            }
        }
    }
}

/// Both directions between `a` and `b`; ends when both are done or either fails.
async fn copy_both<A, B>(a: &mut A, b: &mut B) -> io::Result<()>
where
    A: AsyncRead + AsyncWrite + Unpin,
    B: AsyncRead + AsyncWrite + Unpin,
{
    let mut a_to_b = Direction::default();
    let mut b_to_a = Direction::default();
    std::future::poll_fn(|cx| {
        let ab = a_to_b.poll_copy(cx, Pin::new(&mut *a), Pin::new(&mut *b))?;
        let ba = b_to_a.poll_copy(cx, Pin::new(&mut *b), Pin::new(&mut *a))?;
        if ab.is_ready() && ba.is_ready() {
            Poll::Ready(Ok(()))
        } else {
            Poll::Pending
        }
    })
    .await
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
    let copy = copy_both(&mut a, &mut b);
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
