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
//! Limits: a message longer than [`Limits::max`] bytes is [`FrameError::TooLong`], never an endless
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
    /// [`Limits::max`] bytes are buffered and they do not yet hold a whole message.
    #[error("no complete message within {0} bytes")]
    TooLong(usize),
}

/// How much one message may take, and how much is read at a time while it arrives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Most bytes buffered without a whole message ([`FrameError::TooLong`] past it).
    /// `usize::MAX` leaves the limit to a decoder that has its own (HTTP heads).
    pub max: usize,
    /// Most bytes asked of the reader per read (also the spare capacity reserved first). 1 reads
    /// a byte at a time, so nothing after the message is taken from a stream whose later bytes
    /// belong to someone else (an upstream SOCKS5 server's reply, then the target's data).
    pub read: usize,
}

/// Decodes one `T` from the front of `buf`, reading from `reader` into `buf` while the bytes so
/// far are an incomplete message. On success the message's bytes are consumed and anything
/// after it stays in `buf`; bytes already in `buf` are decoded before any read.
///
/// Errors: [`FrameError::TooLong`] once `buf` holds `limits.max` or more bytes without a
/// message, [`FrameError::Closed`] at end of stream, [`FrameError::Malformed`] for any other
/// decode error.
pub async fn read_message<T: Decode, R: AsyncRead + Unpin + ?Sized>(
    reader: &mut R,
    buf: &mut BytesMut,
    limits: Limits,
) -> Result<T, FrameError> {
    loop {
        match decode_prefix::<T>(buf) {
            Ok((msg, used)) => {
                buf.advance(used);
                return Ok(msg);
            }
            Err(DecodeError::Incomplete) if buf.len() >= limits.max => return Err(FrameError::TooLong(limits.max)),
            Err(DecodeError::Incomplete) => {}
            Err(e) => return Err(FrameError::Malformed(e)),
        }
        buf.reserve(limits.read);
        let asked = u64::try_from(limits.read).unwrap_or(u64::MAX);
        if (&mut *reader).take(asked).read_buf(buf).await? == 0 {
            return Err(FrameError::Closed);
        }
    }
}

/// A stream, the buffer its incoming bytes wait in, and a reusable scratch buffer for outgoing
/// messages: a handshake's messages are read with [`Framed::read`] and answered with
/// [`Framed::send`], and [`Framed::into_parts`] hands the bytes read past the last message to
/// whatever comes next (the relay).
#[derive(Debug)]
pub struct Framed<S> {
    io: S,
    buf: BytesMut,
    out: Vec<u8>,
    limits: Limits,
}

impl<S> Framed<S> {
    /// Wraps `io` with an empty buffer; every message read must fit `limits`.
    pub fn new(io: S, limits: Limits) -> Framed<S> {
        Framed {
            io,
            buf: BytesMut::new(),
            out: Vec::new(),
            limits,
        }
    }

    pub fn get_mut(&mut self) -> &mut S {
        &mut self.io
    }

    /// Bytes read but not yet decoded.
    pub fn buffer(&self) -> &BytesMut {
        &self.buf
    }

    /// The stream and the bytes read past the last message (the relay starts with them).
    pub fn into_parts(self) -> (S, BytesMut) {
        (self.io, self.buf)
    }
}

impl<S: AsyncRead + Unpin> Framed<S> {
    /// Reads one message; see [`read_message`] for the limits and errors.
    pub async fn read<T: Decode>(&mut self) -> Result<T, FrameError> {
        read_message(&mut self.io, &mut self.buf, self.limits).await
    }
}

impl<S: AsyncWrite + Unpin> Framed<S> {
    /// Encodes `msg`, writes all of it and flushes (a handshake waits for the answer, so
    /// nothing may stay in a buffering stream such as an encrypted tunnel).
    pub async fn send(&mut self, msg: &impl Encode) -> io::Result<()> {
        self.out.clear();
        msg.encode(&mut self.out);
        self.io.write_all(&self.out).await?;
        self.io.flush().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::address::Address;
    use crate::proto::http::{RequestHead, MAX_HEAD};
    use crate::proto::socks5::{Greeting, MethodSelection, Reply, ReplyCode, Request};
    use tokio::io::duplex;

    const SMALL: Limits = Limits { max: 1024, read: 1024 };
    const REQUEST: &[u8] = &[0x05, 0x01, 0x00, 0x01, 127, 0, 0, 1, 0x00, 0x50];

    #[tokio::test]
    async fn message_split_across_reads() {
        let (mut client, server) = duplex(64);
        let mut framed = Framed::new(server, SMALL);
        let writer = tokio::spawn(async move {
            for byte in REQUEST {
                client.write_all(&[*byte]).await.unwrap();
                tokio::task::yield_now().await;
            }
            client
        });
        let req: Request = framed.read().await.unwrap();
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
        let mut framed = Framed::new(server, SMALL);
        let greeting: Greeting = framed.read().await.unwrap();
        assert_eq!(greeting.methods, [0x00]);
        let _: Request = framed.read().await.unwrap();
        let (_, rest) = framed.into_parts();
        assert_eq!(&rest[..], b"early");
    }

    #[tokio::test]
    async fn eof_mid_message_is_closed() {
        let (mut client, server) = duplex(64);
        client.write_all(&REQUEST[..5]).await.unwrap();
        drop(client);
        let mut framed = Framed::new(server, SMALL);
        assert!(matches!(framed.read::<Request>().await, Err(FrameError::Closed)));
        assert_eq!(&framed.buffer()[..], &REQUEST[..5]);
    }

    #[tokio::test]
    async fn over_long_and_garbage_input() {
        // A greeting that announces 255 methods but may not exceed 16 bytes.
        let (mut client, server) = duplex(1024);
        client.write_all(&[0x05, 0xFF]).await.unwrap();
        client.write_all(&[0u8; 100]).await.unwrap();
        let mut framed = Framed::new(server, Limits { max: 16, read: 16 });
        assert!(matches!(framed.read::<Greeting>().await, Err(FrameError::TooLong(16))));
        // Bytes that are not the message at all fail at once, without waiting for more.
        let (mut client, server) = duplex(64);
        client.write_all(b"GET / HTTP/1.1\r\n").await.unwrap();
        let mut framed = Framed::new(server, SMALL);
        assert!(matches!(
            framed.read::<Greeting>().await,
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
        let head: RequestHead = read_message(
            &mut read_half,
            &mut buf,
            Limits {
                max: usize::MAX,
                read: MAX_HEAD,
            },
        )
        .await
        .unwrap();
        assert_eq!(head.target, "http://a/");
        assert_eq!(&buf[..], b"body");
    }

    #[tokio::test]
    async fn one_byte_reads_leave_the_stream_after_the_message_unread() {
        let (mut client, mut server) = duplex(64);
        client.write_all(&[5, 0, b'x', b'y']).await.unwrap();
        let mut buf = BytesMut::new();
        let bytewise = Limits { max: 16, read: 1 };
        let MethodSelection(method) = read_message(&mut server, &mut buf, bytewise).await.unwrap();
        assert_eq!(method, 0);
        assert!(buf.is_empty(), "nothing after the message was read");
        let mut rest = [0u8; 2];
        server.read_exact(&mut rest).await.unwrap();
        assert_eq!(&rest, b"xy");
    }

    #[tokio::test]
    async fn send_encodes_and_writes() {
        let (client, server) = duplex(64);
        let mut framed = Framed::new(server, SMALL);
        framed.send(&Reply::error(ReplyCode::TtlExpired)).await.unwrap();
        framed.send(&Reply::error(ReplyCode::NotAllowed)).await.unwrap();
        drop(framed);
        let mut got = Vec::new();
        let mut client = client;
        client.read_to_end(&mut got).await.unwrap();
        assert_eq!(got, [5, 6, 0, 1, 0, 0, 0, 0, 0, 0, 5, 2, 0, 1, 0, 0, 0, 0, 0, 0]);
    }
}
