//! One direction of a relay: read from one stream, write everything to the other, and when the
//! reader ends, shut the writer down (how a half-close crosses the relay).
//!
//! This is `tokio::io::copy_bidirectional_with_sizes`'s state machine with one change that the
//! benchmarks asked for (docs/BENCHMARKS.md): the copy buffer is borrowed from
//! [`crate::bufpool`] when a read starts and given back whenever it is empty and the reader has
//! nothing more (`Pending`). tokio's version holds two 64 KiB buffers for a connection's whole
//! life, which made an idle tunnelled connection cost about 80 KiB of RSS on each end.

use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::bufpool;
use crate::crypto::MAX_PAYLOAD;

/// The first read after an idle spell goes to a stack buffer of this size.
const SMALL_READ: usize = 2048;

/// Where one direction is.
enum State {
    /// Copying; the writer has not been shut down.
    Running,
    /// The reader ended and everything was written; shutting the writer down.
    ShuttingDown,
    Done,
}

pub(super) struct Pipe {
    /// `buf[pos..cap]` is read but not yet written; an empty `buf` means none is held.
    buf: Vec<u8>,
    pos: usize,
    cap: usize,
    /// Bytes were written since the last flush.
    need_flush: bool,
    state: State,
}

impl Pipe {
    pub(super) fn new() -> Pipe {
        Pipe {
            buf: Vec::new(),
            pos: 0,
            cap: 0,
            need_flush: false,
            state: State::Running,
        }
    }

    /// Drives this direction; `Ready(Ok(()))` once the reader has ended and the writer is shut.
    pub(super) fn poll_copy<R, W>(&mut self, cx: &mut Context<'_>, mut reader: R, mut writer: W) -> Poll<io::Result<()>>
    where
        R: AsyncRead + Unpin,
        W: AsyncWrite + Unpin,
    {
        loop {
            match self.state {
                State::Done => return Poll::Ready(Ok(())),
                State::ShuttingDown => {
                    ready!(Pin::new(&mut writer).poll_shutdown(cx))?;
                    self.state = State::Done;
                }
                State::Running => {
                    if ready!(self.poll_transfer(cx, &mut reader, &mut writer))? {
                        self.state = State::ShuttingDown;
                    }
                }
            }
        }
    }

    /// Moves bytes until the reader ends (`Ready(Ok(true))`) or either side would block.
    fn poll_transfer<R, W>(&mut self, cx: &mut Context<'_>, reader: &mut R, writer: &mut W) -> Poll<io::Result<bool>>
    where
        R: AsyncRead + Unpin,
        W: AsyncWrite + Unpin,
    {
        loop {
            if self.pos == self.cap && self.buf.is_empty() {
                // Holding no buffer (idle): read into a small one on the stack first, so that an
                // end of stream or a few interactive bytes cost no chunk buffer at all.
                let mut small = [0u8; SMALL_READ];
                let mut rb = ReadBuf::new(&mut small);
                match Pin::new(&mut *reader).poll_read(cx, &mut rb) {
                    Poll::Ready(Ok(())) => {}
                    Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                    Poll::Pending => {
                        if self.need_flush {
                            ready!(Pin::new(&mut *writer).poll_flush(cx))?;
                            self.need_flush = false;
                        }
                        return Poll::Pending;
                    }
                }
                let n = rb.filled().len();
                if n == 0 {
                    ready!(Pin::new(&mut *writer).poll_flush(cx))?;
                    self.need_flush = false;
                    return Poll::Ready(Ok(true));
                }
                let mut written = 0;
                if n < SMALL_READ {
                    // A short burst (likely all there was): write it from the stack; a chunk
                    // buffer is only needed for what the writer does not take now.
                    while written < n {
                        match Pin::new(&mut *writer).poll_write(cx, &small[written..n]) {
                            Poll::Ready(Ok(0)) => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                            Poll::Ready(Ok(k)) => {
                                written += k;
                                self.need_flush = true;
                            }
                            Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                            Poll::Pending => break,
                        }
                    }
                    if written == n {
                        continue;
                    }
                }
                self.buf = bufpool::take();
                self.buf[..n - written].copy_from_slice(&small[written..n]);
                self.pos = 0;
                self.cap = n - written;
                if n == SMALL_READ {
                    // More may be waiting: top up so that a burst still leaves as one chunk.
                    let mut rb = ReadBuf::new(&mut self.buf[n..MAX_PAYLOAD]);
                    if let Poll::Ready(result) = Pin::new(&mut *reader).poll_read(cx, &mut rb) {
                        result?;
                        self.cap += rb.filled().len();
                        // An end of stream seen here is seen again by the next read.
                    }
                }
            }
            if self.pos == self.cap {
                // At most one chunk's payload, so a full read becomes one full tunnel chunk.
                let mut rb = ReadBuf::new(&mut self.buf[..MAX_PAYLOAD]);
                match Pin::new(&mut *reader).poll_read(cx, &mut rb) {
                    Poll::Ready(Ok(())) => {}
                    Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                    Poll::Pending => {
                        bufpool::release(&mut self.buf);
                        // Push out what was written before waiting for more.
                        if self.need_flush {
                            ready!(Pin::new(&mut *writer).poll_flush(cx))?;
                            self.need_flush = false;
                        }
                        return Poll::Pending;
                    }
                }
                let n = rb.filled().len();
                if n == 0 {
                    bufpool::release(&mut self.buf);
                    ready!(Pin::new(&mut *writer).poll_flush(cx))?;
                    self.need_flush = false;
                    return Poll::Ready(Ok(true));
                }
                self.pos = 0;
                self.cap = n;
            }
            while self.pos < self.cap {
                let n = ready!(Pin::new(&mut *writer).poll_write(cx, &self.buf[self.pos..self.cap]))?;
                if n == 0 {
                    return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
                }
                self.pos += n;
                self.need_flush = true;
            }
            self.pos = 0;
            self.cap = 0;
        }
    }
}

impl Drop for Pipe {
    fn drop(&mut self) {
        bufpool::release(&mut self.buf);
    }
}
