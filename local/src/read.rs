//! Reading one message from a byte stream: pull bytes into a buffer until the message's checked
//! decoder (`warren_common::proto::Decode`) accepts a prefix of it. Every handshake message the
//! local reads goes through here: SOCKS5 and SOCKS4 requests, HTTP heads (client requests and
//! origin responses) and the upstream SOCKS5 server's answers at the end of a chain.
//!
//! ```text
//! buf: [ message | bytes after it … ]   → message decoded, buf keeps the bytes after it
//! buf: [ part of a message ]            → read at most `Limits::read` more bytes, try again
//! buf: [ `Limits::max` bytes, no message ] → Malformed (the peer is not speaking the protocol)
//! ```

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt};
use warren_common::proto::{decode_prefix, Decode, DecodeError};

/// How much one message may take.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Most buffered bytes without a complete message; more is malformed
    /// (`DecodeError::BadField("length")`). `usize::MAX` leaves the limit to the decoder.
    pub max: usize,
    /// Most bytes asked of the reader per read. 1 reads a byte at a time, so nothing after the
    /// message is consumed from the stream (for a stream whose later bytes belong to someone else).
    pub read: usize,
}

/// Why no message was read.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// The stream failed.
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// The stream ended before a message was complete.
    #[error("closed mid-message")]
    Closed,
    /// The bytes are not a valid message (or exceed [`Limits::max`]).
    #[error("malformed message: {0}")]
    Malformed(DecodeError),
}

/// Reads one `T`, using bytes already in `buf` first; bytes after the message stay in `buf`.
pub async fn read_message<T, R>(reader: &mut R, buf: &mut BytesMut, limits: Limits) -> Result<T, ReadError>
where
    T: Decode,
    R: AsyncRead + Unpin + ?Sized,
{
    loop {
        match decode_prefix::<T>(buf) {
            Ok((message, used)) => {
                buf.advance(used);
                return Ok(message);
            }
            Err(DecodeError::Incomplete) if buf.len() < limits.max => {}
            Err(DecodeError::Incomplete) => return Err(ReadError::Malformed(DecodeError::BadField("length"))),
            Err(e) => return Err(ReadError::Malformed(e)),
        }
        buf.reserve(limits.read);
        let asked = u64::try_from(limits.read).unwrap_or(u64::MAX);
        if (&mut *reader).take(asked).read_buf(buf).await? == 0 {
            return Err(ReadError::Closed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;
    use warren_common::proto::socks5::MethodSelection;

    #[tokio::test]
    async fn leaves_bytes_after_the_message_and_reads_bytewise_when_asked() {
        let (mut a, mut b) = tokio::io::duplex(64);
        a.write_all(&[5, 0, b'x', b'y']).await.unwrap();
        let mut buf = BytesMut::new();
        let one_byte = Limits { max: 16, read: 1 };
        let MethodSelection(method) = read_message(&mut b, &mut buf, one_byte).await.unwrap();
        assert_eq!(method, 0);
        assert!(buf.is_empty(), "nothing after the message was read");
        let mut rest = [0u8; 2];
        tokio::io::AsyncReadExt::read_exact(&mut b, &mut rest).await.unwrap();
        assert_eq!(&rest, b"xy");
    }

    #[tokio::test]
    async fn too_long_is_malformed_and_eof_is_closed() {
        let (mut a, mut b) = tokio::io::duplex(64);
        a.write_all(&[5]).await.unwrap();
        drop(a);
        let mut buf = BytesMut::new();
        let limits = Limits { max: 16, read: 16 };
        let err = read_message::<MethodSelection, _>(&mut b, &mut buf, limits)
            .await
            .unwrap_err();
        assert!(matches!(err, ReadError::Closed), "{err:?}");
        let mut buf = BytesMut::from(&[5u8][..]);
        let tiny = Limits { max: 1, read: 1 };
        let err = read_message::<MethodSelection, _>(&mut b, &mut buf, tiny)
            .await
            .unwrap_err();
        assert!(
            matches!(err, ReadError::Malformed(DecodeError::BadField("length"))),
            "{err:?}"
        );
    }
}
