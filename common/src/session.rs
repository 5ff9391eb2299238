//! Requests on the streams of a reverse-tunnel session, and the stream type both kinds of tunnel
//! become after their handshake.
//!
//! A reverse-tunnel session (docs/PROTOCOL.md §17) is one encrypted, authenticated, replay-checked
//! tunnel connection carrying a yamux session. Its streams need no encryption of their own:
//! sealing them again would cost a second cipher pass on both ends of that link (measured: a
//! third of the VPS's CPU) and buy nothing, since every byte already travels sealed. So a
//! request on such a stream is a length-prefixed plaintext header, answered the same way, and
//! then bytes flow as they are:
//!
//! ```text
//! public remote → agent:  len (u16 BE) | RequestHeader | initial data   | bytes ...
//! agent → public remote:  len (u16 BE) | ResponseHeader                 | bytes ...
//! ```
//!
//! The response's request-salt field is all zeros (there is no salt to echo).

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};

use crate::crypto::SALT_LEN;
use crate::proto::decode_exact;
use crate::proto::header::{RequestHeader, ResponseHeader};
use crate::stream::EncryptedStream;
use crate::tunnel::HandshakeError;

/// The request salt a session-stream request carries (there is none).
pub const NO_SALT: [u8; SALT_LEN] = [0; SALT_LEN];

/// Writes `len | message | extra` as one write.
async fn write_framed<S: AsyncWrite + Unpin>(
    stream: &mut S,
    message: &[u8],
    extra: &[u8],
) -> Result<(), HandshakeError> {
    let len = u16::try_from(message.len() + extra.len()).map_err(|_| HandshakeError::TooLarge)?;
    let mut wire = Vec::with_capacity(2 + usize::from(len));
    wire.extend_from_slice(&len.to_be_bytes());
    wire.extend_from_slice(message);
    wire.extend_from_slice(extra);
    stream.write_all(&wire).await?;
    Ok(())
}

/// Reads one `len | body` frame.
pub(crate) async fn read_framed<S: AsyncRead + Unpin>(stream: &mut S) -> Result<Vec<u8>, HandshakeError> {
    let mut len = [0u8; 2];
    match stream.read_exact(&mut len).await {
        Ok(_) => {}
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Err(HandshakeError::Closed),
        Err(e) => return Err(e.into()),
    }
    let mut body = vec![0u8; usize::from(u16::from_be_bytes(len))];
    match stream.read_exact(&mut body).await {
        Ok(_) => Ok(body),
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => Err(HandshakeError::Closed),
        Err(e) => Err(e.into()),
    }
}

/// The public remote's side: sends a request on a session stream.
pub async fn send_request<S: AsyncWrite + Unpin>(
    stream: &mut S,
    header: &RequestHeader,
    initial: &[u8],
) -> Result<(), HandshakeError> {
    let mut encoded = Vec::with_capacity(header.encoded_len());
    header.encode(&mut encoded);
    write_framed(stream, &encoded, initial).await
}

/// The public remote's side: reads the agent's response.
pub async fn read_response<S: AsyncRead + Unpin>(stream: &mut S) -> Result<ResponseHeader, HandshakeError> {
    let body = read_framed(stream).await?;
    Ok(decode_exact(&body)?)
}

/// The agent's side: sends the response.
pub(crate) async fn write_response<S: AsyncWrite + Unpin>(
    stream: &mut S,
    response: &ResponseHeader,
) -> Result<(), HandshakeError> {
    let mut encoded = Vec::with_capacity(response.encoded_len());
    response.encode(&mut encoded);
    write_framed(stream, &encoded, &[]).await
}

/// A tunnel after its handshake: sealed chunks on a connection of its own, or plain bytes on a
/// stream of a reverse-tunnel session (with any bytes read ahead of the response first).
pub enum TunnelStream<S> {
    Sealed(EncryptedStream<S>),
    Plain { stream: S, read_ahead: Vec<u8>, pos: usize },
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for TunnelStream<S> {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            TunnelStream::Sealed(s) => Pin::new(s).poll_read(cx, buf),
            TunnelStream::Plain {
                stream,
                read_ahead,
                pos,
            } => {
                if *pos < read_ahead.len() {
                    let n = buf.remaining().min(read_ahead.len() - *pos);
                    buf.put_slice(&read_ahead[*pos..*pos + n]);
                    *pos += n;
                    if *pos == read_ahead.len() {
                        *read_ahead = Vec::new();
                        *pos = 0;
                    }
                    return Poll::Ready(Ok(()));
                }
                Pin::new(stream).poll_read(cx, buf)
            }
        }
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncWrite for TunnelStream<S> {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            TunnelStream::Sealed(s) => Pin::new(s).poll_write(cx, buf),
            TunnelStream::Plain { stream, .. } => Pin::new(stream).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            TunnelStream::Sealed(s) => Pin::new(s).poll_flush(cx),
            TunnelStream::Plain { stream, .. } => Pin::new(stream).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            TunnelStream::Sealed(s) => Pin::new(s).poll_shutdown(cx),
            TunnelStream::Plain { stream, .. } => Pin::new(stream).poll_shutdown(cx),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::address::Address;
    use crate::proto::socks5::ReplyCode;
    use crate::tunnel::AcceptedRequest;

    #[tokio::test]
    async fn plain_request_and_response_round_trip() {
        let (mut public, mut agent) = tokio::io::duplex(1024);
        let header = RequestHeader::connect(Address::Domain("wiki.campus.test".into(), 80), 1_700_000_000);
        send_request(&mut public, &header, b"GET / HTTP/1.0\r\n\r\n")
            .await
            .unwrap();
        public.write_all(b"after").await.unwrap();
        let request = AcceptedRequest::read_plain(&mut agent).await.unwrap();
        assert_eq!(request.header, header);
        assert_eq!(request.initial_data, b"GET / HTTP/1.0\r\n\r\n");
        let response = ResponseHeader::new(NO_SALT, ReplyCode::Succeeded, 1_700_000_001, Address::UNSPECIFIED);
        let key = crate::crypto::Key::from_bytes([7; 32]);
        let mut tunnel = request.respond(agent, &key, &response, b"early").await.unwrap();
        assert_eq!(read_response(&mut public).await.unwrap(), response);
        let mut got = [0u8; 10];
        tunnel.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"earlyafter");
    }

    #[tokio::test]
    async fn truncated_and_malformed_requests_fail_cleanly() {
        let (mut public, mut agent) = tokio::io::duplex(64);
        public.write_all(&[0, 9, 1, 2]).await.unwrap();
        drop(public);
        assert!(matches!(
            AcceptedRequest::read_plain(&mut agent).await,
            Err(HandshakeError::Closed)
        ));
        let (mut public, mut agent) = tokio::io::duplex(64);
        public.write_all(&[0, 3, 0xEE, 0xEE, 0xEE]).await.unwrap();
        assert!(matches!(
            AcceptedRequest::read_plain(&mut agent).await,
            Err(HandshakeError::Malformed(_))
        ));
    }
}
