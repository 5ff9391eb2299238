//! Messages on sockets: one buffer, one decoder, one encoder. [`Framed`] pairs a stream with the
//! `BytesMut` its bytes are read into; [`read_message`] is the same read loop for a reader and a
//! buffer the caller owns (an `AsyncRead` half, a buffer that outlives the handshake).
//!
//! ```text
//!   socket ──read──▶ buffer [ message | next bytes ... ]
//!                              │            └─ stay buffered (pipelined data, early payload)
//!                              └─ T::decode   (Incomplete → read more; error → Malformed)
//!
//!   msg ──Encode──▶ scratch ──write_all──▶ socket
//! ```
//!
//! Limits: a message longer than `max_len` bytes is [`FrameError::TooLong`], never an endless
//! read; decoders with their own limit (HTTP heads: `proto::http::MAX_HEAD`) report it as
//! `Malformed`, and their callers pass `usize::MAX`.

use std::io;

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::proto::{decode_prefix, Decode, DecodeError, Encode};

/// Why no message was read.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    /// The socket failed.
    #[error("{0}")]
    Io(#[from] io::Error),
    /// The peer closed before a whole message arrived (bytes it did send stay buffered).
    #[error("connection closed mid-message")]
    Closed,
    /// The bytes are not a valid message.
    #[error("malformed message: {0}")]
    Malformed(DecodeError),
    /// `max_len` bytes are buffered and they do not yet hold a whole message.
    #[error("no complete message within {0} bytes")]
    TooLong(usize),
}

/// How much to pull per read: at least `read_size` bytes of spare capacity are reserved before
/// each read (0: whatever the buffer has; `BytesMut` then grows in small steps).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReadSize(pub usize);

/// Decodes one `T` from the front of `buf`, reading from `reader` into `buf` while the bytes so
/// far are an incomplete message. On success the message's bytes are consumed and anything
/// after it stays in `buf`; bytes already in `buf` are decoded before any read.
///
/// Errors: [`FrameError::TooLong`] once `buf` holds `max_len` or more bytes without a message,
/// [`FrameError::Closed`] at end of stream, [`FrameError::Malformed`] for any other decode error.
pub async fn read_message<T: Decode, R: AsyncRead + Unpin + ?Sized>(
    reader: &mut R,
    buf: &mut BytesMut,
    max_len: usize,
    read_size: ReadSize,
) -> Result<T, FrameError> {
    loop {
        match decode_prefix::<T>(buf) {
            Ok((msg, used)) => {
                buf.advance(used);
                return Ok(msg);
            }
            Err(DecodeError::Incomplete) if buf.len() >= max_len => return Err(FrameError::TooLong(max_len)),
            Err(DecodeError::Incomplete) => {}
            Err(e) => return Err(FrameError::Malformed(e)),
        }
        buf.reserve(read_size.0);
        if reader.read_buf(buf).await? == 0 {
            return Err(FrameError::Closed);
        }
    }
}

/// A stream and the buffer its incoming bytes wait in, plus a reusable scratch buffer for
/// outgoing messages.
#[derive(Debug)]
pub struct Framed<S> {
    io: S,
    buf: BytesMut,
    out: Vec<u8>,
    read_size: ReadSize,
}

impl<S> Framed<S> {
    /// Wraps `io` with an empty buffer.
    pub fn new(io: S) -> Framed<S> {
        Framed::with_buffer(io, BytesMut::new())
    }

    /// Wraps `io` whose first bytes were already read into `buf` (they are decoded first).
    pub fn with_buffer(io: S, buf: BytesMut) -> Framed<S> {
        Framed {
            io,
            buf,
            out: Vec::new(),
            read_size: ReadSize::default(),
        }
    }

    /// Reserves at least `read_size` bytes before each read (HTTP heads read 64 KiB at a time).
    pub fn read_size(mut self, read_size: usize) -> Framed<S> {
        self.read_size = ReadSize(read_size);
        self
    }

    pub fn get_ref(&self) -> &S {
        &self.io
    }

    pub fn get_mut(&mut self) -> &mut S {
        &mut self.io
    }

    /// Bytes read but not yet decoded.
    pub fn buffer(&self) -> &BytesMut {
        &self.buf
    }

    pub fn buffer_mut(&mut self) -> &mut BytesMut {
        &mut self.buf
    }

    /// The stream and the bytes read past the last message (the relay starts with them).
    pub fn into_parts(self) -> (S, BytesMut) {
        (self.io, self.buf)
    }
}

impl<S: AsyncRead + Unpin> Framed<S> {
    /// Reads one message; see [`read_message`] for the limits and errors.
    pub async fn read<T: Decode>(&mut self, max_len: usize) -> Result<T, FrameError> {
        read_message(&mut self.io, &mut self.buf, max_len, self.read_size).await
    }
}

impl<S: AsyncWrite + Unpin> Framed<S> {
    /// Encodes `msg` and writes all of it.
    pub async fn send(&mut self, msg: &impl Encode) -> io::Result<()> {
        self.out.clear();
        msg.encode(&mut self.out);
        self.io.write_all(&self.out).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::address::Address;
    use crate::proto::http::{RequestHead, MAX_HEAD};
    use crate::proto::socks5::{Greeting, Reply, ReplyCode, Request};
    use tokio::io::duplex;

    const REQUEST: &[u8] = &[0x05, 0x01, 0x00, 0x01, 127, 0, 0, 1, 0x00, 0x50];

    #[tokio::test]
    async fn message_split_across_reads() {
        let (mut client, server) = duplex(64);
        let mut framed = Framed::new(server);
        let writer = tokio::spawn(async move {
            for byte in REQUEST {
                client.write_all(&[*byte]).await.unwrap();
                tokio::task::yield_now().await;
            }
            client
        });
        let req: Request = framed.read(1024).await.unwrap();
        assert_eq!(req.target, Address::Ip("127.0.0.1:80".parse().unwrap()));
        assert!(framed.buffer().is_empty());
        drop(writer.await.unwrap());
    }

    #[tokio::test]
    async fn two_messages_in_one_read_and_trailing_bytes_kept() {
        let (mut client, server) = duplex(64);
        let mut wire = vec![0x05, 0x01, 0x00];
        wire.extend_from_slice(REQUEST);
        wire.extend_from_slice(b"early");
        client.write_all(&wire).await.unwrap();
        let mut framed = Framed::new(server);
        let greeting: Greeting = framed.read(1024).await.unwrap();
        assert_eq!(greeting.methods, [0x00]);
        let _: Request = framed.read(1024).await.unwrap();
        let (_, rest) = framed.into_parts();
        assert_eq!(&rest[..], b"early");
    }

    #[tokio::test]
    async fn eof_mid_message_is_closed() {
        let (mut client, server) = duplex(64);
        client.write_all(&REQUEST[..5]).await.unwrap();
        drop(client);
        let mut framed = Framed::new(server);
        assert!(matches!(framed.read::<Request>(1024).await, Err(FrameError::Closed)));
        assert_eq!(&framed.buffer()[..], &REQUEST[..5]);
    }

    #[tokio::test]
    async fn over_long_and_garbage_input() {
        // A greeting that announces 255 methods but may not exceed 16 bytes.
        let (mut client, server) = duplex(1024);
        client.write_all(&[0x05, 0xFF]).await.unwrap();
        client.write_all(&[0u8; 100]).await.unwrap();
        let mut framed = Framed::new(server);
        assert!(matches!(
            framed.read::<Greeting>(16).await,
            Err(FrameError::TooLong(16))
        ));
        // Bytes that are not the message at all fail at once, without waiting for more.
        let (mut client, server) = duplex(64);
        client.write_all(b"GET / HTTP/1.1\r\n").await.unwrap();
        let mut framed = Framed::new(server);
        assert!(matches!(
            framed.read::<Greeting>(1024).await,
            Err(FrameError::Malformed(DecodeError::BadVersion(b'G')))
        ));
    }

    #[tokio::test]
    async fn reads_from_a_read_half_into_a_callers_buffer() {
        let (client, server) = duplex(1024);
        let (mut read_half, _write_half) = tokio::io::split(server);
        let (_, mut client_write) = tokio::io::split(client);
        client_write
            .write_all(b"GET http://a/ HTTP/1.1\r\nHost: a\r\n\r\nbody")
            .await
            .unwrap();
        let mut buf = BytesMut::new();
        let head: RequestHead = read_message(&mut read_half, &mut buf, usize::MAX, ReadSize(MAX_HEAD))
            .await
            .unwrap();
        assert_eq!(head.target, "http://a/");
        assert_eq!(&buf[..], b"body");
    }

    #[tokio::test]
    async fn send_encodes_and_writes() {
        let (client, server) = duplex(64);
        let mut framed = Framed::with_buffer(server, BytesMut::from(&b"left"[..]));
        framed.send(&Reply::error(ReplyCode::TtlExpired)).await.unwrap();
        framed.send(&Reply::error(ReplyCode::NotAllowed)).await.unwrap();
        assert_eq!(&framed.buffer()[..], b"left");
        drop(framed);
        let mut got = Vec::new();
        let mut client = client;
        client.read_to_end(&mut got).await.unwrap();
        assert_eq!(got, [5, 6, 0, 1, 0, 0, 0, 0, 0, 0, 5, 2, 0, 1, 0, 0, 0, 0, 0, 0]);
    }
}
