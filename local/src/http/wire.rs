//! Moving HTTP/1.x messages between two streams, every step under a deadline: heads are read
//! whole (and decoded by `warren_common::proto::http`), bodies are copied with their framing
//! unchanged (Content-Length, chunked coding, or up to the close).

use std::future::Future;
use std::time::Duration;

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use warren_common::framed::{read_message, FrameError, Limits};
use warren_common::proto::chunked::ChunkedTracker;
use warren_common::proto::http::BodyLength;
use warren_common::proto::{Decode, DecodeError};

/// Bytes asked of a socket per read.
pub const READ_SIZE: usize = 64 * 1024;

/// Why an HTTP message (head or body) was not read or forwarded.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    /// A socket failed.
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// The peer closed before the message was complete.
    #[error("connection closed mid-message")]
    Closed,
    /// Bytes that are not valid HTTP/1.x.
    #[error("malformed message: {0}")]
    Malformed(DecodeError),
    /// The phase's deadline passed.
    #[error("timed out")]
    TimedOut,
}

impl From<FrameError> for HttpError {
    fn from(e: FrameError) -> HttpError {
        match e {
            FrameError::Io(e) => HttpError::Io(e),
            FrameError::Closed => HttpError::Closed,
            FrameError::Malformed(e) => HttpError::Malformed(e),
            // Heads are read without a byte limit: the decoder's own limit answers 431.
            FrameError::TooLong(_) => HttpError::Malformed(DecodeError::BadField("length")),
        }
    }
}

/// Runs `fut` under `limit`; running out is [`HttpError::TimedOut`].
pub async fn within<T>(limit: Duration, fut: impl Future<Output = Result<T, HttpError>>) -> Result<T, HttpError> {
    tokio::time::timeout(limit, fut)
        .await
        .unwrap_or(Err(HttpError::TimedOut))
}

/// Reads one message head, pulling bytes until it is complete; bytes after it stay in `buf`.
/// The head's size limit is the decoder's (`FIELD_HEAD_SIZE`).
pub async fn read_head<T: Decode, R: AsyncRead + Unpin>(reader: &mut R, buf: &mut BytesMut) -> Result<T, HttpError> {
    let limits = Limits {
        max: usize::MAX,
        read: READ_SIZE,
    };
    Ok(read_message(reader, buf, limits).await?)
}

/// Writes `bytes` and flushes.
pub async fn write_all<W: AsyncWrite + Unpin>(writer: &mut W, bytes: &[u8]) -> Result<(), HttpError> {
    writer.write_all(bytes).await?;
    writer.flush().await?;
    Ok(())
}

/// Copies one message body from `buf` and then `reader` to `writer`, framing unchanged; bytes
/// after the body stay in `buf`. Returns the bytes copied.
pub async fn copy_body<R, W>(
    reader: &mut R,
    buf: &mut BytesMut,
    writer: &mut W,
    length: BodyLength,
    idle: Duration,
) -> Result<u64, HttpError>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut tracker = ChunkedTracker::new();
    let mut left = match length {
        BodyLength::Fixed(n) => n,
        _ => u64::MAX,
    };
    let mut copied = 0u64;
    loop {
        let finished = match length {
            BodyLength::Fixed(_) => left == 0,
            BodyLength::Chunked => tracker.is_done(),
            BodyLength::ToClose => false,
        };
        if finished {
            break;
        }
        if buf.is_empty() {
            buf.reserve(READ_SIZE);
            let n = within(idle, async { Ok(reader.read_buf(buf).await?) }).await?;
            if n == 0 {
                if length == BodyLength::ToClose {
                    break;
                }
                return Err(HttpError::Closed);
            }
        }
        let take = match length {
            BodyLength::Fixed(_) => usize::try_from(left).unwrap_or(usize::MAX).min(buf.len()),
            BodyLength::Chunked => tracker.advance(buf).map_err(HttpError::Malformed)?,
            BodyLength::ToClose => buf.len(),
        };
        within(idle, async { Ok(writer.write_all(&buf[..take]).await?) }).await?;
        buf.advance(take);
        left = left.saturating_sub(take as u64);
        copied += take as u64;
    }
    within(idle, async { Ok(writer.flush().await?) }).await?;
    Ok(copied)
}
