//! The tunnel handshake on both ends: the local sends its salt and the request header, the remote
//! answers with its salt and the response header, then both wrap the connection in an
//! [`EncryptedStream`](crate::stream::EncryptedStream).
//!
//! One file per step, in the order a request walks: `request.rs` (the local sends it, the
//! remote reads and authenticates it), then `response.rs` (the remote answers, the local reads
//! the answer); this file holds the two types and the chunk helpers both steps use.
//!
//! ```text
//! local  → remote:  salt_L (32) | chunk[RequestHeader | initial data] | chunks ...
//! remote → local:   salt_R (32) | chunk[ResponseHeader]               | chunks ...
//! ```

mod request;
mod response;
pub mod users;

use std::io;

use tokio::io::{AsyncRead, AsyncReadExt};

use crate::crypto::{Key, Purpose, SessionCipher, LEN_BLOCK, MAX_PAYLOAD, SALT_LEN, TAG_LEN};
use crate::proto::header::RequestHeader;
use crate::proto::DecodeError;
pub use users::Users;
use users::HINT_LEN;

/// Why a tunnel handshake failed.
#[derive(Debug, thiserror::Error)]
pub enum HandshakeError {
    /// The socket failed or closed.
    #[error("{0}")]
    Io(#[from] io::Error),
    /// The peer closed the connection before its header arrived.
    #[error("closed by the peer before its header")]
    Closed,
    /// The first chunk did not verify: the peer holds another key, or is not a warren peer.
    #[error("header failed authentication")]
    Unauthenticated,
    /// The header verified but does not parse.
    #[error("malformed header: {0}")]
    Malformed(#[from] DecodeError),
    /// A response that echoes another request's salt.
    #[error("response does not answer this request")]
    WrongRequestSalt,
    /// Header and initial data do not fit in one chunk.
    #[error("request header and initial data exceed one chunk")]
    TooLarge,
}

/// Seals one chunk whose plaintext is `plaintext` onto the end of `out`.
fn push_chunk(out: &mut Vec<u8>, cipher: &mut SessionCipher, plaintext: &[u8]) -> Result<(), HandshakeError> {
    if plaintext.len() > MAX_PAYLOAD {
        return Err(HandshakeError::TooLarge);
    }
    let start = out.len();
    out.extend_from_slice(&[0u8; LEN_BLOCK]);
    out.extend_from_slice(plaintext);
    out.extend_from_slice(&[0u8; TAG_LEN]);
    cipher
        .seal_frame(&mut out[start..])
        .map_err(|e| io::Error::other(e.to_string()))?;
    Ok(())
}

/// Which key opened a request's first chunk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Opener {
    /// The key at this index of the list offered (the shared key, an agent's key).
    Listed(usize),
    /// The user at this index of the [`Users`] table, found by the request's hint.
    User(usize),
}

/// Reads one salt and the first chunk after it, sealed for `purpose` (a request's direction or a
/// response's), returning which key authenticated it, the salt, the opened plaintext and the
/// receive cipher (its counter past that chunk). Each of `keys` is tried on the 18-byte length
/// block only (one ChaCha20 block and a 2-byte Poly1305 each), so a remote that accepts a few
/// keys pays almost nothing for them; then, if `users` is given, the 16 bytes after the salt are
/// taken as a user hint (§19) and the length block after them is opened with that user's key.
/// `raw`, when given, gets the bytes exactly as they arrived.
async fn read_first_chunk<S: AsyncRead + Unpin>(
    stream: &mut S,
    keys: &[&Key],
    users: Option<&Users>,
    purpose: Purpose,
    raw: Option<&mut Vec<u8>>,
) -> Result<(Opener, Key, [u8; SALT_LEN], Vec<u8>, SessionCipher), HandshakeError> {
    let mut head = [0u8; SALT_LEN + LEN_BLOCK];
    read_exact_or_closed(stream, &mut head).await?;
    let mut salt = [0u8; SALT_LEN];
    salt.copy_from_slice(&head[..SALT_LEN]);
    let listed = keys.iter().enumerate().find_map(|(i, key)| {
        let mut cipher = SessionCipher::new(key, purpose, &salt);
        let mut block = [0u8; LEN_BLOCK];
        block.copy_from_slice(&head[SALT_LEN..]);
        cipher
            .open_length(&mut block)
            .ok()
            .map(|n| (Opener::Listed(i), (*key).clone(), n, cipher))
    });
    // With a hint the length block starts HINT_LEN bytes later: its last HINT_LEN bytes follow.
    let mut rest_of_block = [0u8; HINT_LEN];
    let (opener, key, n, mut cipher) = match (listed, users) {
        (Some(found), _) => found,
        (None, Some(users)) if !users.is_empty() => {
            read_exact_or_closed(stream, &mut rest_of_block).await?;
            let mut hint = [0u8; HINT_LEN];
            hint.copy_from_slice(&head[SALT_LEN..SALT_LEN + HINT_LEN]);
            let (i, key) = users.find(&salt, hint).ok_or(HandshakeError::Unauthenticated)?;
            let mut block = [0u8; LEN_BLOCK];
            block[..LEN_BLOCK - HINT_LEN].copy_from_slice(&head[SALT_LEN + HINT_LEN..]);
            block[LEN_BLOCK - HINT_LEN..].copy_from_slice(&rest_of_block);
            let mut cipher = SessionCipher::new(key, purpose, &salt);
            let n = cipher
                .open_length(&mut block)
                .map_err(|_| HandshakeError::Unauthenticated)?;
            (Opener::User(i), key.clone(), n, cipher)
        }
        (None, _) => return Err(HandshakeError::Unauthenticated),
    };
    let mut payload = vec![0u8; n + TAG_LEN];
    read_exact_or_closed(stream, &mut payload).await?;
    if let Some(raw) = raw {
        raw.clear();
        raw.extend_from_slice(&head);
        if matches!(opener, Opener::User(_)) {
            raw.extend_from_slice(&rest_of_block);
        }
        raw.extend_from_slice(&payload);
    }
    cipher
        .open_payload(&mut payload)
        .map_err(|_| HandshakeError::Unauthenticated)?;
    payload.truncate(n);
    Ok((opener, key, salt, payload, cipher))
}

async fn read_exact_or_closed<S: AsyncRead + Unpin>(stream: &mut S, buf: &mut [u8]) -> Result<(), HandshakeError> {
    match stream.read_exact(buf).await {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => Err(HandshakeError::Closed),
        Err(e) => Err(e.into()),
    }
}

/// The local's half: a request sent, its response awaited.
pub struct PendingTunnel<S> {
    stream: S,
    key: Key,
    salt: [u8; SALT_LEN],
    send: SessionCipher,
}

/// A request the remote has read and authenticated, not yet answered.
pub struct AcceptedRequest {
    pub header: RequestHeader,
    /// The request's salt: the replay filter's key, and echoed in the response.
    pub salt: [u8; SALT_LEN],
    /// Client bytes that travelled in the header's chunk.
    pub initial_data: Vec<u8>,
    /// The salt and first chunk exactly as they arrived, when asked for: a remote that relays
    /// requests to a reverse-tunnel agent passes them on unopened (the agent authenticates them
    /// again). Others skip the copy.
    pub raw: Option<Vec<u8>>,
    /// Which key authenticated the request: one of those offered to [`AcceptedRequest::read`]
    /// (an index into that slice), or a user of its table.
    pub opener: Opener,
    /// That key: the response is sealed with it.
    key: Key,
    recv: SessionCipher,
}

impl AcceptedRequest {
    /// Whether `ciphertext` (bytes read after the first chunk, before the response) is whole,
    /// authentic chunks ending in the end-of-stream chunk (PROTOCOL.md §9): the local
    /// half-closed and still wants the response. A TCP EOF after anything else (a partial or
    /// forged chunk, no end-of-stream chunk) is a local that left. The chunks are opened with a
    /// copy of the receive state; the stream opens them again for the relay.
    pub fn ends_with_end_of_stream(&self, ciphertext: &[u8]) -> bool {
        let mut recv = self.recv.copy_for_opening();
        let mut rest = ciphertext;
        let mut ended = false;
        while !rest.is_empty() {
            // Nothing may follow an end-of-stream chunk.
            if ended {
                return false;
            }
            let Some((block, after)) = rest.split_first_chunk::<LEN_BLOCK>() else {
                return false;
            };
            let mut block = *block;
            let Ok(n) = recv.open_length(&mut block) else {
                return false;
            };
            let Some(sealed) = after.get(..n + TAG_LEN) else {
                return false;
            };
            if recv.open_payload(&mut sealed.to_vec()).is_err() {
                return false;
            }
            rest = after.get(n + TAG_LEN..).unwrap_or_default();
            ended = n == 0;
        }
        ended
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::address::Address;
    use crate::time::unix_now;

    /// A request read by the remote, and the local's send state to seal what follows it.
    async fn accepted() -> (AcceptedRequest, SessionCipher) {
        let key = Key::from_base64("AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=").expect("key");
        let (local, mut remote) = tokio::io::duplex(4096);
        let header = RequestHeader::connect(Address::UNSPECIFIED, unix_now());
        let pending = PendingTunnel::send_request(local, &key, &header, b"hi")
            .await
            .expect("send");
        let request = AcceptedRequest::read(&mut remote, &[&key], None, false)
            .await
            .expect("read");
        (request, pending.send)
    }

    fn chunks(send: &mut SessionCipher, payloads: &[&[u8]]) -> Vec<u8> {
        let mut wire = Vec::new();
        for payload in payloads {
            push_chunk(&mut wire, send, payload).expect("seal");
        }
        wire
    }

    #[tokio::test]
    async fn only_whole_authentic_chunks_ending_in_end_of_stream_count() {
        let (request, mut send) = accepted().await;
        let ended = chunks(&mut send, &[b"data", b""]);
        assert!(request.ends_with_end_of_stream(&ended));
        assert!(!request.ends_with_end_of_stream(&[]), "a bare EOF");
        assert!(
            !request.ends_with_end_of_stream(&ended[..LEN_BLOCK + 4 + TAG_LEN]),
            "data, no end"
        );
        assert!(
            !request.ends_with_end_of_stream(&ended[..ended.len() - 1]),
            "a cut chunk"
        );
        let mut forged = ended.clone();
        if let Some(last) = forged.last_mut() {
            *last ^= 1;
        }
        assert!(!request.ends_with_end_of_stream(&forged), "a forged chunk");
        let mut after = ended.clone();
        after.extend_from_slice(&chunks(&mut send, &[b"more"]));
        assert!(!request.ends_with_end_of_stream(&after), "bytes after the end");

        let (request, mut send) = accepted().await;
        assert!(
            request.ends_with_end_of_stream(&chunks(&mut send, &[b""])),
            "the end alone"
        );
    }
}
