#!/usr/bin/env python3
"""Writes cipher_lengths.txt: ChaCha20-Poly1305 (RFC 8439 §2.8) by an independent
implementation (Python `cryptography`, i.e. OpenSSL) for every message length from 0 to 320
bytes and a few larger ones, with AAD of varying length. common/tests/cipher_lengths.rs checks
warren's build of the cipher (chacha20poly1305 + the patched vendor/poly1305) against it.

Each line: LEN AAD_LEN TAG_HEX SHA256_OF_CIPHERTEXT_HEX. Inputs are derived from the lengths:
key = bytes 0..31, nonce = LEN as 12 big-endian bytes, plaintext[i] = (31*i + LEN) % 251,
aad[i] = (17*i + 3) % 256, AAD_LEN = LEN % 37.
"""
import hashlib
import os

from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

LENGTHS = list(range(0, 321)) + [1023, 1024, 1200, 1452, 4096, 16384, 65535]
key = bytes(range(32))
out = os.path.join(os.path.dirname(os.path.abspath(__file__)), "cipher_lengths.txt")
with open(out, "w") as f:
    for n in LENGTHS:
        nonce = n.to_bytes(12, "big")
        plaintext = bytes((31 * i + n) % 251 for i in range(n))
        aad_len = n % 37
        aad = bytes((17 * i + 3) % 256 for i in range(aad_len))
        sealed = ChaCha20Poly1305(key).encrypt(nonce, plaintext, aad)
        ciphertext, tag = sealed[:-16], sealed[-16:]
        f.write(f"{n} {aad_len} {tag.hex()} {hashlib.sha256(ciphertext).hexdigest()}\n")
