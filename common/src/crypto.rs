//! Keys, session subkeys and the sealing of chunks and packets. Pure: no I/O.
//!
//! Each direction of each tunnel connection starts with a fresh random 32-byte salt (each UDP
//! packet session with a random 16-byte ID: `udp_session.rs`) and derives its own subkey, so no (key, nonce) pair is ever used twice. The HKDF
//! info label names the protocol and the direction ([`Purpose`], PROTOCOL.md §4), so bytes sealed
//! for one direction never open in another (a reflected packet or stream fails authentication):
//!
//! ```text
//! subkey = HKDF-SHA256(ikm = pre-shared key, salt = salt, info = Purpose::info(), L = 32)
//! nonce  = 96 bits: a 64-bit counter, little-endian, then 4 zero bytes; starts at 0 and
//!          increases by one after every seal or open (a length block and a payload use one each)
//! ```
//!
//! A chunk (`frame`) on the wire:
//!
//! ```text
//! +---------------------------+-----------------------------+
//! | u16 BE length, sealed     | payload (length bytes),     |
//! | 2 + 16-byte tag = 18      | sealed: length + 16 bytes   |
//! +---------------------------+-----------------------------+
//! ```
//!
//! Sealing and opening happen in place on a caller's buffer: no allocation per chunk.

use base64::Engine as _;
use chacha20poly1305::aead::{AeadInOut, KeyInit};
use chacha20poly1305::{ChaCha20Poly1305, Nonce, Tag};
use hkdf::Hkdf;
use rand::RngCore;
use sha2::Sha256;

pub const KEY_LEN: usize = 32;
pub const SALT_LEN: usize = 32;
pub const TAG_LEN: usize = 16;
/// A sealed length field: two bytes and their tag.
pub const LEN_BLOCK: usize = 2 + TAG_LEN;
/// Largest payload one chunk carries. 64 KiB - 1 (what the u16 length allows) so bulk transfers
/// pay the per-chunk cost (two tags, two nonces, one length) once per 64 KiB: see PROTOCOL.md.
pub const MAX_PAYLOAD: usize = 0xFFFF;
/// Largest chunk on the wire.
pub const MAX_FRAME: usize = frame_len(MAX_PAYLOAD);

/// What a subkey protects: one protocol in one direction (PROTOCOL.md §4). Each purpose has its
/// own HKDF info label, so a chunk or packet sealed for one purpose fails authentication when
/// offered as another: a remote → local packet sent back to the remote, or a recorded response
/// stream sent as a request, does not open. The labels carry the protocol version ("v2"); a new
/// use of the key (e.g. a sealed agent link) adds a variant with a label of its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Purpose {
    /// A tunnel connection's request direction: the side that sent the request header to the
    /// side that reads it (local → remote; agent → public remote for a registration).
    TcpRequest,
    /// A tunnel connection's response direction: the side that answered to the requester.
    TcpResponse,
    /// An encrypted UDP packet from a local to the remote (PROTOCOL.md §16.3).
    UdpToRemote,
    /// An encrypted UDP packet from the remote to a local.
    UdpToLocal,
    /// The mask over a request's user hint (PROTOCOL.md §19): derived from the remote's shared
    /// key and the request's salt.
    Identity,
}

impl Purpose {
    /// The HKDF-SHA256 info string of this purpose: ASCII, no terminator (PROTOCOL.md §4).
    pub const fn info(self) -> &'static [u8] {
        match self {
            Purpose::TcpRequest => b"warren v2 tcp request",
            Purpose::TcpResponse => b"warren v2 tcp response",
            Purpose::UdpToRemote => b"warren v2 udp session to remote",
            Purpose::UdpToLocal => b"warren v2 udp session to local",
            Purpose::Identity => b"warren v2 identity",
        }
    }
}

/// Bytes a chunk with `payload` plaintext bytes takes on the wire.
pub const fn frame_len(payload: usize) -> usize {
    LEN_BLOCK + payload + TAG_LEN
}

/// Why a key or a chunk was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CryptoError {
    /// The key text is not standard padded base64.
    #[error("key is not valid base64 (standard alphabet, with padding)")]
    KeyNotBase64,
    /// The key does not decode to 32 bytes.
    #[error("key must be 32 bytes, got {0}")]
    KeyLength(usize),
    /// A chunk's tag did not verify: wrong key, corruption, or tampering.
    #[error("authentication failed")]
    Authentication,
    /// The 64-bit nonce counter ran out (after 2^64 chunks; never in practice).
    #[error("nonce counter exhausted")]
    NonceExhausted,
    /// A payload longer than [`MAX_PAYLOAD`], or a frame buffer of the wrong size.
    #[error("chunk of {0} bytes does not fit the frame")]
    BadChunkLength(usize),
}

/// The pre-shared key. Its Debug output never shows the bytes.
#[derive(Clone, PartialEq, Eq)]
pub struct Key([u8; KEY_LEN]);

impl std::fmt::Debug for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Key(***)")
    }
}

impl Key {
    pub fn from_bytes(bytes: [u8; KEY_LEN]) -> Key {
        Key(bytes)
    }

    /// Parses standard padded base64 of exactly 32 bytes.
    pub fn from_base64(text: &str) -> Result<Key, CryptoError> {
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(text.trim())
            .map_err(|_| CryptoError::KeyNotBase64)?;
        let bytes: [u8; KEY_LEN] = bytes
            .as_slice()
            .try_into()
            .map_err(|_| CryptoError::KeyLength(bytes.len()))?;
        Ok(Key(bytes))
    }

    /// A fresh key from the operating system's random generator.
    pub fn generate() -> Key {
        let mut bytes = [0u8; KEY_LEN];
        rand::rngs::OsRng.fill_bytes(&mut bytes);
        Key(bytes)
    }

    /// A short public name for the key: the first 4 bytes of SHA-256("warren key id" || key)
    /// as 8 hex digits. `check` prints it beside `***` so two ends can compare keys without
    /// showing them; it reveals nothing usable about a random 32-byte key.
    pub fn id(&self) -> String {
        use sha2::Digest;
        let digest = sha2::Sha256::new()
            .chain_update(b"warren key id")
            .chain_update(self.0)
            .finalize();
        digest.iter().take(4).map(|b| format!("{b:02x}")).collect()
    }

    /// The 16-byte identity a user's key is looked up by on the remote (PROTOCOL.md §19):
    /// the first 16 bytes of SHA-256("warren user id" || key). Public among the users who share
    /// the remote's key; it reveals nothing usable about the key itself.
    pub fn user_id(&self) -> [u8; 16] {
        use sha2::Digest;
        let digest = sha2::Sha256::new()
            .chain_update(b"warren user id")
            .chain_update(self.0)
            .finalize();
        let mut id = [0u8; 16];
        for (out, byte) in id.iter_mut().zip(digest.iter()) {
            *out = *byte;
        }
        id
    }

    pub fn to_base64(&self) -> String {
        base64::engine::general_purpose::STANDARD.encode(self.0)
    }

    /// The subkey for one direction of one connection (`salt`: its 32-byte salt) or of one UDP
    /// packet session (`salt`: its 16-byte session ID, PROTOCOL.md §16.3), for `purpose`.
    pub fn subkey(&self, purpose: Purpose, salt: &[u8]) -> [u8; KEY_LEN] {
        let mut out = [0u8; KEY_LEN];
        // HKDF-Expand fails only for outputs longer than 255 hash lengths; 32 bytes never is.
        if Hkdf::<Sha256>::new(Some(salt), &self.0)
            .expand(purpose.info(), &mut out)
            .is_err()
        {
            unreachable!("HKDF-SHA256 can always expand to 32 bytes");
        }
        out
    }
}

/// A fresh random salt.
pub fn random_salt() -> [u8; SALT_LEN] {
    let mut salt = [0u8; SALT_LEN];
    rand::thread_rng().fill_bytes(&mut salt);
    salt
}

/// One direction's AEAD state: the subkey and the nonce counter.
pub struct SessionCipher {
    aead: ChaCha20Poly1305,
    counter: u64,
}

impl SessionCipher {
    /// The cipher for the direction `purpose` that starts with `salt`; its counter starts at 0.
    pub fn new(key: &Key, purpose: Purpose, salt: &[u8; SALT_LEN]) -> SessionCipher {
        let subkey = key.subkey(purpose, salt);
        SessionCipher {
            aead: ChaCha20Poly1305::new(&subkey.into()),
            counter: 0,
        }
    }

    fn next_nonce(&mut self) -> Result<Nonce, CryptoError> {
        let mut nonce = [0u8; 12];
        nonce[..8].copy_from_slice(&self.counter.to_le_bytes());
        self.counter = self.counter.checked_add(1).ok_or(CryptoError::NonceExhausted)?;
        Ok(nonce.into())
    }

    /// Seals `data` in place and returns its tag.
    fn seal(&mut self, data: &mut [u8]) -> Result<Tag, CryptoError> {
        let nonce = self.next_nonce()?;
        self.aead
            .encrypt_inout_detached(&nonce, &[], data.into())
            .map_err(|_| CryptoError::Authentication)
    }

    fn open(&mut self, data: &mut [u8], tag: &[u8]) -> Result<(), CryptoError> {
        let nonce = self.next_nonce()?;
        let tag = Tag::try_from(tag).map_err(|_| CryptoError::Authentication)?;
        self.aead
            .decrypt_inout_detached(&nonce, &[], data.into(), &tag)
            .map_err(|_| CryptoError::Authentication)
    }

    /// Seals a chunk in place. `frame` is `frame_len(n)` bytes with the plaintext payload at
    /// `frame[LEN_BLOCK..LEN_BLOCK + n]`; the length block and both tags are written here.
    pub fn seal_frame(&mut self, frame: &mut [u8]) -> Result<(), CryptoError> {
        let n = frame
            .len()
            .checked_sub(frame_len(0))
            .ok_or(CryptoError::BadChunkLength(frame.len()))?;
        let len = u16::try_from(n).map_err(|_| CryptoError::BadChunkLength(n))?;
        let (len_block, rest) = frame.split_at_mut(LEN_BLOCK);
        len_block[..2].copy_from_slice(&len.to_be_bytes());
        let (len_plain, len_tag) = len_block.split_at_mut(2);
        len_tag.copy_from_slice(&self.seal(len_plain)?);
        let (payload, tag) = rest.split_at_mut(n);
        tag.copy_from_slice(&self.seal(payload)?);
        Ok(())
    }

    /// A copy of this state for opening ahead: checking chunks that were read before the stream
    /// that will open them exists. Never seal with a copy: both would use the same nonces.
    pub(crate) fn copy_for_opening(&self) -> SessionCipher {
        SessionCipher {
            aead: self.aead.clone(),
            counter: self.counter,
        }
    }

    /// Opens a sealed length block and returns the payload length that follows it.
    pub fn open_length(&mut self, block: &mut [u8; LEN_BLOCK]) -> Result<usize, CryptoError> {
        let (len, tag) = block.split_at_mut(2);
        self.open(len, tag)?;
        Ok(usize::from(u16::from_be_bytes([len[0], len[1]])))
    }

    /// Opens a sealed payload (`length + 16` bytes) in place; the plaintext is its first
    /// `length` bytes.
    pub fn open_payload(&mut self, sealed: &mut [u8]) -> Result<(), CryptoError> {
        let n = sealed
            .len()
            .checked_sub(TAG_LEN)
            .ok_or(CryptoError::BadChunkLength(sealed.len()))?;
        let (payload, tag) = sealed.split_at_mut(n);
        self.open(payload, tag)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_parsing_names_the_problem() {
        assert_eq!(Key::from_base64("not base64!"), Err(CryptoError::KeyNotBase64));
        assert_eq!(Key::from_base64("AAAA"), Err(CryptoError::KeyLength(3)));
        let key = Key::generate();
        assert_eq!(Key::from_base64(&key.to_base64()), Ok(key.clone()));
        assert_eq!(format!("{key:?}"), "Key(***)");
    }

    #[test]
    fn frames_round_trip_and_detect_tampering() {
        let key = Key::generate();
        let salt = random_salt();
        let mut sealer = SessionCipher::new(&key, Purpose::TcpRequest, &salt);
        let mut opener = SessionCipher::new(&key, Purpose::TcpRequest, &salt);
        for payload in [&b""[..], b"hello", &[7u8; MAX_PAYLOAD]] {
            let mut frame = vec![0u8; frame_len(payload.len())];
            frame[LEN_BLOCK..LEN_BLOCK + payload.len()].copy_from_slice(payload);
            sealer.seal_frame(&mut frame).unwrap();
            let mut block: [u8; LEN_BLOCK] = frame[..LEN_BLOCK].try_into().unwrap();
            let n = opener.open_length(&mut block).unwrap();
            assert_eq!(n, payload.len());
            opener.open_payload(&mut frame[LEN_BLOCK..]).unwrap();
            assert_eq!(&frame[LEN_BLOCK..LEN_BLOCK + n], payload);
        }
        // A flipped bit anywhere fails authentication.
        let mut frame = vec![0u8; frame_len(3)];
        sealer.seal_frame(&mut frame).unwrap();
        frame[LEN_BLOCK] ^= 1;
        let mut block: [u8; LEN_BLOCK] = frame[..LEN_BLOCK].try_into().unwrap();
        opener.open_length(&mut block).unwrap();
        assert_eq!(
            opener.open_payload(&mut frame[LEN_BLOCK..]),
            Err(CryptoError::Authentication)
        );
    }

    #[test]
    fn every_purpose_has_its_own_subkey_and_refuses_the_others() {
        let key = Key::generate();
        let salt = random_salt();
        let all = [
            Purpose::TcpRequest,
            Purpose::TcpResponse,
            Purpose::UdpToRemote,
            Purpose::UdpToLocal,
        ];
        for a in all {
            assert!(a.info().starts_with(b"warren v2 "), "{a:?} names the version");
            for b in all {
                assert_eq!(a == b, key.subkey(a, &salt) == key.subkey(b, &salt), "{a:?} vs {b:?}");
            }
        }
    }

    #[test]
    fn wrong_key_fails_on_the_length_block() {
        let salt = random_salt();
        let mut frame = vec![0u8; frame_len(10)];
        SessionCipher::new(&Key::generate(), Purpose::TcpRequest, &salt)
            .seal_frame(&mut frame)
            .unwrap();
        let mut block: [u8; LEN_BLOCK] = frame[..LEN_BLOCK].try_into().unwrap();
        assert_eq!(
            SessionCipher::new(&Key::generate(), Purpose::TcpRequest, &salt).open_length(&mut block),
            Err(CryptoError::Authentication)
        );
    }
}
