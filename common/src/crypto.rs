//! Keys, session subkeys and the sealing of chunks. Pure: no I/O.
//!
//! Each direction of each tunnel connection starts with a fresh random 32-byte salt and derives
//! its own subkey, so no (key, nonce) pair is ever used twice:
//!
//! ```text
//! subkey = HKDF-SHA256(ikm = pre-shared key, salt = salt, info = "warren v1 subkey", L = 32)
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
use chacha20poly1305::aead::{AeadInPlace, KeyInit};
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
const SUBKEY_INFO: &[u8] = b"warren v1 subkey";

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

    pub fn to_base64(&self) -> String {
        base64::engine::general_purpose::STANDARD.encode(self.0)
    }

    /// The subkey for one direction of one connection.
    pub fn subkey(&self, salt: &[u8; SALT_LEN]) -> [u8; KEY_LEN] {
        let mut out = [0u8; KEY_LEN];
        // HKDF-Expand fails only for outputs longer than 255 hash lengths; 32 bytes never is.
        if Hkdf::<Sha256>::new(Some(salt), &self.0)
            .expand(SUBKEY_INFO, &mut out)
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
    pub fn new(key: &Key, salt: &[u8; SALT_LEN]) -> SessionCipher {
        let subkey = key.subkey(salt);
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
            .encrypt_in_place_detached(&nonce, &[], data)
            .map_err(|_| CryptoError::Authentication)
    }

    fn open(&mut self, data: &mut [u8], tag: &[u8]) -> Result<(), CryptoError> {
        let nonce = self.next_nonce()?;
        self.aead
            .decrypt_in_place_detached(&nonce, &[], data, Tag::from_slice(tag))
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

/// Bytes a sealed UDP packet adds to its plaintext: the salt and the tag.
pub const PACKET_OVERHEAD: usize = SALT_LEN + TAG_LEN;

/// Seals one UDP packet on its own: `salt | ChaCha20-Poly1305(subkey(salt), nonce 0, plaintext) |
/// tag`. Each packet has a fresh salt, so its subkey is used once and nonce 0 is never reused.
pub fn seal_packet(key: &Key, salt: &[u8; SALT_LEN], plaintext: &[u8]) -> Result<Vec<u8>, CryptoError> {
    let mut cipher = SessionCipher::new(key, salt);
    let mut out = Vec::with_capacity(PACKET_OVERHEAD + plaintext.len());
    out.extend_from_slice(salt);
    out.extend_from_slice(plaintext);
    let tag = cipher.seal(&mut out[SALT_LEN..])?;
    out.extend_from_slice(&tag);
    Ok(out)
}

/// Opens a packet sealed by [`seal_packet`]; returns its salt (the replay filter's key) and the
/// plaintext. Fails with [`CryptoError::Authentication`] on anything not sealed with `key`.
pub fn open_packet(key: &Key, packet: &[u8]) -> Result<([u8; SALT_LEN], Vec<u8>), CryptoError> {
    if packet.len() < PACKET_OVERHEAD {
        return Err(CryptoError::Authentication);
    }
    let mut salt = [0u8; SALT_LEN];
    salt.copy_from_slice(&packet[..SALT_LEN]);
    let (body, tag) = packet[SALT_LEN..].split_at(packet.len() - PACKET_OVERHEAD);
    let mut plaintext = body.to_vec();
    SessionCipher::new(key, &salt).open(&mut plaintext, tag)?;
    Ok((salt, plaintext))
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
        let mut sealer = SessionCipher::new(&key, &salt);
        let mut opener = SessionCipher::new(&key, &salt);
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
    fn packets_round_trip_and_refuse_tampering_and_other_keys() {
        let key = Key::generate();
        let salt = random_salt();
        let packet = seal_packet(&key, &salt, b"datagram").unwrap();
        assert_eq!(packet.len(), PACKET_OVERHEAD + 8);
        assert_eq!(open_packet(&key, &packet), Ok((salt, b"datagram".to_vec())));
        for i in [0, SALT_LEN, packet.len() - 1] {
            let mut bad = packet.clone();
            bad[i] ^= 1;
            assert_eq!(open_packet(&key, &bad), Err(CryptoError::Authentication), "byte {i}");
        }
        assert_eq!(open_packet(&Key::generate(), &packet), Err(CryptoError::Authentication));
        assert_eq!(open_packet(&key, &packet[..40]), Err(CryptoError::Authentication));
    }

    #[test]
    fn wrong_key_fails_on_the_length_block() {
        let salt = random_salt();
        let mut frame = vec![0u8; frame_len(10)];
        SessionCipher::new(&Key::generate(), &salt)
            .seal_frame(&mut frame)
            .unwrap();
        let mut block: [u8; LEN_BLOCK] = frame[..LEN_BLOCK].try_into().unwrap();
        assert_eq!(
            SessionCipher::new(&Key::generate(), &salt).open_length(&mut block),
            Err(CryptoError::Authentication)
        );
    }
}
