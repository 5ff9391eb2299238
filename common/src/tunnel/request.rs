//! The request step of the tunnel handshake (PROTOCOL.md): the local sends its salt and the
//! request header sealed in one chunk with its first client bytes; the remote reads and
//! authenticates it.
//!
//! ```text
//! local  → remote:  salt_L (32) | chunk[RequestHeader | initial data]
//! ```

use crate::proto::Encode;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};

use super::users::{self, Users, HINT_LEN};
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

impl<S: AsyncRead + AsyncWrite + Unpin> PendingTunnel<S> {
    /// [`PendingTunnel::send_request`] for a user of a remote with per-user keys (PROTOCOL.md
    /// §19): the salt, the hint that names `user` to a remote whose shared key is `server`, and
    /// the request sealed with `user`, which also opens the response.
    pub async fn send_request_as_user(
        mut stream: S,
        server: &Key,
        user: &Key,
        header: &RequestHeader,
        initial: &[u8],
    ) -> Result<Self, HandshakeError> {
        let salt = random_salt();
        let mut send = SessionCipher::new(user, Purpose::TcpRequest, &salt);
        let mut plaintext = Vec::with_capacity(header.encoded_len() + initial.len());
        header.encode(&mut plaintext);
        plaintext.extend_from_slice(initial);
        let mut wire = Vec::with_capacity(SALT_LEN + HINT_LEN + frame_len(plaintext.len()));
        wire.extend_from_slice(&salt);
        wire.extend_from_slice(&users::hint(server, user, &salt));
        push_chunk(&mut wire, &mut send, &plaintext)?;
        stream.write_all(&wire).await?;
        stream.flush().await?;
        Ok(PendingTunnel {
            stream,
            key: user.clone(),
            salt,
            send,
        })
    }
}

impl AcceptedRequest {
    /// Reads the salt and the first chunk, authenticated by any one of `keys`, or by a user of
    /// `users` named by a hint after the salt (keeping a copy of them as they arrived if
    /// `keep_raw`). Callers must stay silent on
    /// [`HandshakeError::Unauthenticated`] (see the remote's probe handling).
    pub async fn read<S: AsyncRead + Unpin>(
        stream: &mut S,
        keys: &[&Key],
        users: Option<&Users>,
        keep_raw: bool,
    ) -> Result<Self, HandshakeError> {
        let mut raw = keep_raw.then(Vec::new);
        let (opener, key, salt, mut plaintext, recv) =
            read_first_chunk(stream, keys, users, Purpose::TcpRequest, raw.as_mut()).await?;
        let (header, used) = decode_prefix::<RequestHeader>(&plaintext)?;
        plaintext.drain(..used);
        let initial_data = plaintext;
        Ok(AcceptedRequest {
            header,
            salt,
            initial_data,
            raw,
            opener,
            key,
            recv,
        })
    }
}
