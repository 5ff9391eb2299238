//! The request step of the tunnel handshake (PROTOCOL.md): the local sends its salt and the
//! request header sealed in one chunk with its first client bytes; the remote reads and
//! authenticates it.
//!
//! ```text
//! local  → remote:  salt_L (32) | chunk[RequestHeader | initial data]
//! ```

use crate::proto::Encode;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};

use super::{push_chunk, read_first_chunk, AcceptedRequest, HandshakeError, PendingTunnel};
use crate::crypto::{frame_len, random_salt, Key, Purpose, SessionCipher, SALT_LEN};
use crate::proto::decode_prefix;
use crate::proto::header::RequestHeader;

impl<S: AsyncRead + AsyncWrite + Unpin> PendingTunnel<S> {
    /// Sends the salt and the request header (with `initial` client bytes in the same chunk).
    pub async fn send_request(
        mut stream: S,
        key: &Key,
        header: &RequestHeader,
        initial: &[u8],
    ) -> Result<Self, HandshakeError> {
        let salt = random_salt();
        let mut send = SessionCipher::new(key, Purpose::TcpRequest, &salt);
        let mut plaintext = Vec::with_capacity(header.encoded_len() + initial.len());
        header.encode(&mut plaintext);
        plaintext.extend_from_slice(initial);
        let mut wire = Vec::with_capacity(SALT_LEN + frame_len(plaintext.len()));
        wire.extend_from_slice(&salt);
        push_chunk(&mut wire, &mut send, &plaintext)?;
        stream.write_all(&wire).await?;
        // Over another tunnel (a chain's hop), a write may wait in that tunnel's buffer.
        stream.flush().await?;
        Ok(PendingTunnel {
            stream,
            key: key.clone(),
            salt,
            send,
        })
    }
}

impl AcceptedRequest {
    /// Reads the salt and the first chunk, authenticated by any one of `keys` (keeping a copy of
    /// them as they arrived if `keep_raw`). Callers must stay silent on
    /// [`HandshakeError::Unauthenticated`] (see the remote's probe handling).
    pub async fn read<S: AsyncRead + Unpin>(
        stream: &mut S,
        keys: &[&Key],
        keep_raw: bool,
    ) -> Result<Self, HandshakeError> {
        let mut raw = keep_raw.then(Vec::new);
        let (key_index, salt, mut plaintext, recv) =
            read_first_chunk(stream, keys, Purpose::TcpRequest, raw.as_mut()).await?;
        let key = keys
            .get(key_index)
            .map(|k| (*k).clone())
            .ok_or(HandshakeError::Unauthenticated)?;
        let (header, used) = decode_prefix::<RequestHeader>(&plaintext)?;
        plaintext.drain(..used);
        let initial_data = plaintext;
        Ok(AcceptedRequest {
            header,
            salt,
            initial_data,
            raw,
            key_index,
            key,
            recv,
        })
    }
}
