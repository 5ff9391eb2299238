//! Pure codecs for every message warren reads or writes: SOCKS5 on the local side, and the
//! tunnel's request and response headers. No I/O here: each message type has one
//! [`Decode::decode`] and one [`Encode::encode`] (`crate::framed` puts them on sockets).
//!
//! `decode` consumes exactly one message from the front of the buffer and leaves anything after
//! it (a stream may carry the client's next bytes). Where a message must fill its container
//! exactly (a chunk payload, a datagram), callers use [`decode_exact`], which rejects trailing
//! bytes. On [`DecodeError::Incomplete`] the buffer's position is unspecified: callers decode
//! from a copy of the cursor (see [`decode_prefix`]) and retry once more bytes have arrived.

pub mod address;
pub mod bind;
pub mod chunked;
pub mod header;
pub mod http;
pub mod resolve;
pub mod socks4;
pub mod socks5;
pub mod status;
pub mod udp;

use bytes::{Buf, BufMut};

/// Why a byte sequence is not a valid message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// The bytes so far are a valid prefix; the message needs more of them.
    #[error("message incomplete: more bytes needed")]
    Incomplete,
    /// A version byte other than the one this message expects.
    #[error("unsupported protocol version {0:#04x}")]
    BadVersion(u8),
    /// An address type byte that is not IPv4 (1), domain (3) or IPv6 (4).
    #[error("unsupported address type {0:#04x}")]
    BadAddressType(u8),
    /// A domain name that is empty or is not valid UTF-8 / contains control characters.
    #[error("invalid domain name")]
    BadDomain,
    /// A command byte this message does not define.
    #[error("unsupported command {0:#04x}")]
    BadCommand(u8),
    /// A field whose value is outside what the message allows.
    #[error("invalid value in field {0}")]
    BadField(&'static str),
    /// Bytes left over after a message that must fill its container exactly.
    #[error("{0} trailing bytes after the message")]
    TrailingBytes(usize),
}

/// A message with one checked decoder.
pub trait Decode: Sized {
    /// Decodes one message from the front of `buf`, advancing past it.
    fn decode(buf: &mut impl Buf) -> Result<Self, DecodeError>;
}

/// A message with one encoder. Encoding cannot fail: constructors and decoders keep every field
/// within what the wire form can carry (a message that can be too long for its length field,
/// like [`udp::DatagramFrame`], keeps a fallible inherent `encode` instead).
pub trait Encode {
    /// Appends the message's wire form to `buf`.
    fn encode(&self, buf: &mut impl BufMut);

    /// Bytes [`Encode::encode`] appends. The default encodes into a scratch buffer; messages
    /// whose length is cheap to compute override it.
    fn encoded_len(&self) -> usize {
        let mut scratch = Vec::new();
        self.encode(&mut scratch);
        scratch.len()
    }
}

/// Decodes a message that must use every byte of `bytes`.
pub fn decode_exact<T: Decode>(mut bytes: &[u8]) -> Result<T, DecodeError> {
    let msg = T::decode(&mut bytes)?;
    if bytes.is_empty() {
        Ok(msg)
    } else {
        Err(DecodeError::TrailingBytes(bytes.len()))
    }
}

/// Decodes a message from the front of `bytes` and returns it with the number of bytes it used;
/// `bytes` is untouched, so on `Incomplete` the caller reads more and calls again.
pub fn decode_prefix<T: Decode>(bytes: &[u8]) -> Result<(T, usize), DecodeError> {
    let mut cursor = bytes;
    let msg = T::decode(&mut cursor)?;
    Ok((msg, bytes.len() - cursor.len()))
}

/// Checks that `buf` holds at least `n` more bytes (the version byte among them) and consumes
/// the version byte, which must be `expected`: how every SOCKS message starts.
pub(crate) fn version(buf: &mut impl Buf, n: usize, expected: u8) -> Result<(), DecodeError> {
    need(buf, n)?;
    match buf.get_u8() {
        v if v == expected => Ok(()),
        other => Err(DecodeError::BadVersion(other)),
    }
}

/// Checks that `buf` holds at least `n` more bytes.
pub(crate) fn need(buf: &impl Buf, n: usize) -> Result<(), DecodeError> {
    if buf.remaining() < n {
        Err(DecodeError::Incomplete)
    } else {
        Ok(())
    }
}
