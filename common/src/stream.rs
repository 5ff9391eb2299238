//! [`EncryptedStream`]: a byte stream carried as sealed chunks over another stream, usable with
//! anything that takes `AsyncRead + AsyncWrite` (`tokio::io::copy_bidirectional` in the relay).
//!
//! ```text
//! after the handshake, each direction:  chunk | chunk | ... | end-of-stream chunk (length 0)
//! ```
//!
//! A zero-length chunk means "the sender has shut down its write side" and is how a half-close
//! crosses the tunnel. A TCP EOF without it is reported as an error, never as a clean end, so a
//! truncated stream (an attacker's injected FIN, a crashed peer) is not mistaken for a complete
//! one.
//!
//! Buffers: one receive buffer and one send buffer per stream, each at most one chunk
//! ([`MAX_FRAME`]), allocated when data moves and reused while it does; sealing and opening
//! happen in place. An idle stream holds neither: the receive buffer is freed when the socket has
//! nothing more and no chunk is half-received, the send buffer on a flush.

use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::crypto::{frame_len, SessionCipher, LEN_BLOCK, MAX_FRAME, MAX_PAYLOAD, TAG_LEN};

enum ReadState {
    /// Waiting for a sealed length block.
    Length,
    /// Waiting for a sealed payload of this many plaintext bytes.
    Payload(usize),
    /// The peer sent its end-of-stream chunk.
    Eof,
}

/// The tunnel side of a relay: plaintext in and out, chunks on the wire.
pub struct EncryptedStream<S> {
    inner: S,
    recv: SessionCipher,
    send: SessionCipher,
    /// Received bytes: `rbuf[plain.0..plain.1]` is opened plaintext not yet handed out,
    /// `rbuf[filled.0..filled.1]` is ciphertext not yet opened.
    rbuf: Vec<u8>,
    plain: (usize, usize),
    filled: (usize, usize),
    rstate: ReadState,
    /// A sealed chunk being written; `wpos` bytes of it are already on the wire.
    wbuf: Vec<u8>,
    wpos: usize,
    eof_sent: bool,
}

/// Send-buffer capacity kept across a flush; larger ones are freed.
const SMALL_WBUF: usize = 4096;

fn truncated() -> io::Error {
    io::Error::new(
        io::ErrorKind::UnexpectedEof,
        "tunnel closed without an end-of-stream chunk",
    )
}

fn auth_failed() -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, "tunnel chunk failed authentication")
}

impl<S> EncryptedStream<S> {
    /// Wraps `inner` once the handshake is done; `send` and `recv` continue the handshake's
    /// nonce counters.
    pub fn new(inner: S, send: SessionCipher, recv: SessionCipher) -> Self {
        EncryptedStream {
            inner,
            recv,
            send,
            rbuf: Vec::new(),
            plain: (0, 0),
            filled: (0, 0),
            rstate: ReadState::Length,
            wbuf: Vec::new(),
            wpos: 0,
            eof_sent: false,
        }
    }

    /// Queues ciphertext that was read from the inner stream before this wrapper existed.
    pub fn prefill(&mut self, ciphertext: &[u8]) {
        if ciphertext.is_empty() {
            return;
        }
        self.make_room();
        let end = self.filled.1;
        let n = ciphertext.len().min(self.rbuf.len() - end);
        self.rbuf[end..end + n].copy_from_slice(&ciphertext[..n]);
        self.filled.1 += n;
    }

    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The connection underneath, if no byte is buffered either way (as right after the
    /// handshake): a reverse-tunnel session continues on it with its own framing. `None` when
    /// bytes are buffered, which would be lost.
    pub fn into_inner(self) -> Option<S> {
        let idle = self.plain.0 == self.plain.1 && self.filled.0 == self.filled.1 && self.wpos == self.wbuf.len();
        idle.then_some(self.inner)
    }

    /// Opens whatever complete chunks the buffer holds, until there is plaintext to hand out,
    /// the end-of-stream chunk, or the need for more bytes (returns false).
    fn open_buffered(&mut self) -> io::Result<bool> {
        loop {
            let available = self.filled.1 - self.filled.0;
            match self.rstate {
                ReadState::Eof => return Ok(true),
                ReadState::Length if available >= LEN_BLOCK => {
                    let start = self.filled.0;
                    let mut block = [0u8; LEN_BLOCK];
                    block.copy_from_slice(&self.rbuf[start..start + LEN_BLOCK]);
                    let n = self.recv.open_length(&mut block).map_err(|_| auth_failed())?;
                    self.filled.0 += LEN_BLOCK;
                    // n == 0 is the end-of-stream chunk, which still carries a sealed (empty)
                    // payload.
                    self.rstate = ReadState::Payload(n);
                }
                ReadState::Payload(n) if available >= n + TAG_LEN => {
                    let start = self.filled.0;
                    self.recv
                        .open_payload(&mut self.rbuf[start..start + n + TAG_LEN])
                        .map_err(|_| auth_failed())?;
                    self.filled.0 += n + TAG_LEN;
                    if n == 0 {
                        self.rstate = ReadState::Eof;
                        return Ok(true);
                    }
                    self.plain = (start, start + n);
                    self.rstate = ReadState::Length;
                    return Ok(true);
                }
                _ => return Ok(false),
            }
        }
    }

    /// Makes room at the end of the receive buffer for at least one whole chunk.
    fn make_room(&mut self) {
        if self.rbuf.is_empty() {
            self.rbuf = vec![0u8; MAX_FRAME];
        }
        let (start, end) = self.filled;
        if start == end {
            self.filled = (0, 0);
        } else if self.rbuf.len() - start < MAX_FRAME {
            self.rbuf.copy_within(start..end, 0);
            self.filled = (0, end - start);
        }
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> EncryptedStream<S> {
    /// Writes out the sealed chunk in `wbuf`, if any.
    fn poll_write_pending(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.wpos < self.wbuf.len() {
            let n = ready!(Pin::new(&mut self.inner).poll_write(cx, &self.wbuf[self.wpos..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.wpos += n;
        }
        self.wbuf.clear();
        self.wpos = 0;
        Poll::Ready(Ok(()))
    }

    /// Seals `payload` (at most [`MAX_PAYLOAD`] bytes; empty for end-of-stream) into `wbuf`.
    fn seal_into_wbuf(&mut self, payload: &[u8]) -> io::Result<()> {
        debug_assert!(self.wbuf.is_empty() && payload.len() <= MAX_PAYLOAD);
        self.wbuf.reserve(frame_len(payload.len()));
        self.wbuf.extend_from_slice(&[0u8; LEN_BLOCK]);
        self.wbuf.extend_from_slice(payload);
        self.wbuf.extend_from_slice(&[0u8; TAG_LEN]);
        self.send
            .seal_frame(&mut self.wbuf)
            .map_err(|e| io::Error::other(e.to_string()))
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for EncryptedStream<S> {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, out: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        loop {
            let (start, end) = this.plain;
            if start < end {
                let n = (end - start).min(out.remaining());
                out.put_slice(&this.rbuf[start..start + n]);
                this.plain.0 += n;
                return Poll::Ready(Ok(()));
            }
            if this.open_buffered()? {
                if matches!(this.rstate, ReadState::Eof) {
                    return Poll::Ready(Ok(()));
                }
                continue;
            }
            if this.rbuf.is_empty() {
                // Idle: poll with a small buffer on the stack, and take a whole chunk's worth only
                // once bytes arrive.
                let mut small = [0u8; 1024];
                let mut rb = ReadBuf::new(&mut small);
                ready!(Pin::new(&mut this.inner).poll_read(cx, &mut rb))?;
                let n = rb.filled().len();
                if n == 0 {
                    return Poll::Ready(Err(truncated()));
                }
                this.prefill(&small[..n]);
                continue;
            }
            this.make_room();
            let end = this.filled.1;
            let mut rb = ReadBuf::new(&mut this.rbuf[end..]);
            if Pin::new(&mut this.inner).poll_read(cx, &mut rb)?.is_pending() {
                if this.filled.0 == this.filled.1 {
                    // Nothing half-received: an idle connection holds no receive buffer.
                    this.rbuf = Vec::new();
                    this.filled = (0, 0);
                    this.plain = (0, 0);
                }
                return Poll::Pending;
            }
            let n = rb.filled().len();
            if n == 0 {
                return Poll::Ready(Err(truncated()));
            }
            this.filled.1 += n;
        }
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncWrite for EncryptedStream<S> {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, data: &[u8]) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if this.eof_sent {
            return Poll::Ready(Err(io::Error::new(io::ErrorKind::BrokenPipe, "write after shutdown")));
        }
        ready!(this.poll_write_pending(cx))?;
        if data.is_empty() {
            return Poll::Ready(Ok(0));
        }
        let n = data.len().min(MAX_PAYLOAD);
        this.seal_into_wbuf(&data[..n])?;
        // Start sending now; whatever the socket does not take goes out on the next write or
        // flush. The bytes are accepted either way.
        if let Poll::Ready(Err(e)) = this.poll_write_pending(cx) {
            return Poll::Ready(Err(e));
        }
        Poll::Ready(Ok(n))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_write_pending(cx))?;
        // A flush means the writer has nothing more for now: an idle connection keeps no large
        // send buffer.
        if this.wbuf.capacity() > SMALL_WBUF {
            this.wbuf = Vec::new();
        }
        Pin::new(&mut this.inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_write_pending(cx))?;
        if !this.eof_sent {
            this.seal_into_wbuf(&[])?;
            this.eof_sent = true;
            ready!(this.poll_write_pending(cx))?;
        }
        Pin::new(&mut this.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::{random_salt, Key, Purpose};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    fn pair() -> (
        EncryptedStream<tokio::io::DuplexStream>,
        EncryptedStream<tokio::io::DuplexStream>,
    ) {
        let key = Key::generate();
        let (a_salt, b_salt) = (random_salt(), random_salt());
        let (a, b) = tokio::io::duplex(1000);
        let (up, down) = (Purpose::TcpRequest, Purpose::TcpResponse);
        let a = EncryptedStream::new(
            a,
            SessionCipher::new(&key, up, &a_salt),
            SessionCipher::new(&key, down, &b_salt),
        );
        let b = EncryptedStream::new(
            b,
            SessionCipher::new(&key, down, &b_salt),
            SessionCipher::new(&key, up, &a_salt),
        );
        (a, b)
    }

    #[tokio::test]
    async fn carries_bytes_and_half_close() {
        let (mut a, mut b) = pair();
        let data: Vec<u8> = (0..300_000u32).map(|i| (i * 7 % 251) as u8).collect();
        let expected = data.clone();
        let writer = tokio::spawn(async move {
            a.write_all(&data).await.unwrap();
            a.shutdown().await.unwrap();
            // Still readable after our own half-close.
            let mut back = Vec::new();
            a.read_to_end(&mut back).await.unwrap();
            back
        });
        let mut got = Vec::new();
        b.read_to_end(&mut got).await.unwrap();
        assert_eq!(got, expected);
        b.write_all(b"answer").await.unwrap();
        b.shutdown().await.unwrap();
        assert_eq!(writer.await.unwrap(), b"answer");
    }

    #[tokio::test]
    async fn truncation_is_an_error() {
        let key = Key::generate();
        let salt = random_salt();
        let (raw, mut other) = tokio::io::duplex(100);
        let mut s = EncryptedStream::new(
            raw,
            SessionCipher::new(&key, Purpose::TcpRequest, &salt),
            SessionCipher::new(&key, Purpose::TcpResponse, &salt),
        );
        other.shutdown().await.unwrap();
        drop(other);
        let mut buf = [0u8; 10];
        let err = s.read(&mut buf).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof);
    }
}
