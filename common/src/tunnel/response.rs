//! The response step of the tunnel handshake (PROTOCOL.md): the remote answers with its own
//! salt and the response header (echoing the request's salt) in one chunk, and from then on
//! both ends speak the [`EncryptedStream`].
//!
//! ```text
//! remote → local:   salt_R (32) | chunk[ResponseHeader] | chunks ...
//! ```

use crate::proto::Encode;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};

use super::{push_chunk, read_first_chunk, AcceptedRequest, HandshakeError, PendingTunnel};
use crate::crypto::{frame_len, random_salt, Purpose, SessionCipher, SALT_LEN};
use crate::proto::decode_exact;
use crate::proto::header::ResponseHeader;
use crate::stream::EncryptedStream;

impl<S: AsyncRead + AsyncWrite + Unpin> PendingTunnel<S> {
    /// Waits for the remote's response; on success the connection becomes an encrypted stream.
    pub async fn read_response(mut self) -> Result<(ResponseHeader, EncryptedStream<S>), HandshakeError> {
        let (_, _, _salt, plaintext, recv) =
            read_first_chunk(&mut self.stream, &[&self.key], None, Purpose::TcpResponse, None).await?;
        let response: ResponseHeader = decode_exact(&plaintext)?;
        if response.request_salt != self.salt {
            return Err(HandshakeError::WrongRequestSalt);
        }
        Ok((response, EncryptedStream::new(self.stream, self.send, recv)))
    }
}

impl AcceptedRequest {
    /// Sends the response, sealed with the key that authenticated the request; the connection
    /// becomes an encrypted stream for the relay. `already_read` is ciphertext read from
    /// `stream` after the first chunk (while the remote was connecting); the stream opens it
    /// first.
    pub async fn respond<S: AsyncRead + AsyncWrite + Unpin>(
        self,
        mut stream: S,
        response: &ResponseHeader,
        already_read: &[u8],
    ) -> Result<EncryptedStream<S>, HandshakeError> {
        let salt = random_salt();
        let mut send = SessionCipher::new(&self.key, Purpose::TcpResponse, &salt);
        let mut plaintext = Vec::with_capacity(response.encoded_len());
        response.encode(&mut plaintext);
        let mut wire = Vec::with_capacity(SALT_LEN + frame_len(plaintext.len()));
        wire.extend_from_slice(&salt);
        push_chunk(&mut wire, &mut send, &plaintext)?;
        stream.write_all(&wire).await?;
        let mut tunnel = EncryptedStream::new(stream, send, self.recv);
        tunnel.prefill(already_read);
        Ok(tunnel)
    }
}
