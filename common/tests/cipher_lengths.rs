//! ChaCha20-Poly1305 (RFC 8439 §2.8) as warren builds it — the `chacha20poly1305` crate over
//! the patched `vendor/poly1305` (see its WARREN-PATCH.md) — against an independent
//! implementation: `data/cipher_lengths.txt`, written by `data/gen_cipher_lengths.py` with
//! Python's `cryptography` (OpenSSL). Every length from 0 to 320 bytes takes Poly1305's
//! finalisation through each of its cases (0–3 cached 16-byte blocks, with and without a
//! partial one) and the AAD's padding through all of its; a few larger lengths cover the
//! four-block path. `.ci/run` also runs this with the portable backends forced.

use chacha20poly1305::aead::{AeadInOut, KeyInit};
use chacha20poly1305::{ChaCha20Poly1305, Nonce};
use sha2::{Digest, Sha256};

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[test]
fn every_length_seals_and_opens_as_an_independent_implementation_does() {
    let key: [u8; 32] = std::array::from_fn(|i| i as u8);
    let aead = ChaCha20Poly1305::new(&key.into());
    let table = include_str!("data/cipher_lengths.txt");
    let mut checked = 0;
    for line in table.lines() {
        let fields: Vec<&str> = line.split(' ').collect();
        let [len, aad_len, tag_hex, digest_hex] = fields[..] else {
            panic!("malformed line: {line}");
        };
        let (len, aad_len): (usize, usize) = (len.parse().unwrap(), aad_len.parse().unwrap());
        let mut nonce = [0u8; 12];
        nonce[4..].copy_from_slice(&(len as u64).to_be_bytes());
        let plaintext: Vec<u8> = (0..len).map(|i| ((31 * i + len) % 251) as u8).collect();
        let aad: Vec<u8> = (0..aad_len).map(|i| ((17 * i + 3) % 256) as u8).collect();

        let mut buf = plaintext.clone();
        let tag = aead
            .encrypt_inout_detached(&Nonce::from(nonce), &aad, buf.as_mut_slice().into())
            .unwrap();
        assert_eq!(hex(&tag), tag_hex, "tag, length {len}");
        assert_eq!(hex(&Sha256::digest(&buf)), digest_hex, "ciphertext, length {len}");

        aead.decrypt_inout_detached(&Nonce::from(nonce), &aad, buf.as_mut_slice().into(), &tag)
            .unwrap_or_else(|_| panic!("open, length {len}"));
        assert_eq!(buf, plaintext, "round trip, length {len}");
        if len > 0 {
            buf[len / 2] ^= 1;
            let forged = aead.decrypt_inout_detached(&Nonce::from(nonce), &aad, buf.as_mut_slice().into(), &tag);
            assert!(forged.is_err(), "a flipped bit opened, length {len}");
        }
        checked += 1;
    }
    assert_eq!(checked, 328, "every line of the table was checked");
}
