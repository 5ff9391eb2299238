//! The tunnel's request and response headers: the plaintext of the first chunk in each
//! direction (see docs/PROTOCOL.md for the whole exchange and test vectors).
//!
//! Request (local → remote), first chunk after the local's salt:
//!
//! ```text
//! +-----+-----------+----------------------+---------+---------+---------------------+
//! | CMD | TIMESTAMP | ATYP | ADDR | PORT   | PADLEN  | PADDING | INITIAL DATA        |
//! | 1   | u64 BE    | target (address.rs)  | u16 BE  | PADLEN  | rest of the chunk   |
//! +-----+-----------+----------------------+---------+---------+---------------------+
//! ```
//!
//! Response (remote → local), first chunk after the remote's salt; it must fill the chunk:
//!
//! ```text
//! +--------------+--------+-----------+----------------------+---------+---------+
//! | REQUEST SALT | STATUS | TIMESTAMP | ATYP | ADDR | PORT   | PADLEN  | PADDING |
//! | 32           | 1      | u64 BE    | bound address        | u16 BE  | PADLEN  |
//! +--------------+--------+-----------+----------------------+---------+---------+
//! ```
//!
//! STATUS uses the SOCKS5 reply code values. Echoing the request's salt binds a response to its
//! request: a response recorded from another connection does not verify.

use bytes::{Buf, BufMut};
use rand::Rng;

use super::address::Address;
use super::socks5::ReplyCode;
use super::status::Status;
use super::{need, Decode, DecodeError, Encode};
use crate::crypto::SALT_LEN;

/// Largest padding either header may carry.
pub const MAX_PADDING: usize = 1024;
/// A request whose timestamp differs from the remote's clock by more than this many seconds is
/// refused (silently), and salts are remembered for as long as they could be replayed.
pub use crate::time::TIMESTAMP_WINDOW_SECS;

/// What the local asks the remote to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    /// Open a TCP connection to the target and relay bytes.
    Connect = 0x01,
    /// Listen for one inbound connection from the target's address (SOCKS5 BIND); the response
    /// names the listening address and a [`super::bind::BindNotice`] follows in the stream.
    Bind = 0x02,
    /// Relay UDP datagrams framed as [`super::udp::DatagramFrame`]s in the stream (the target is
    /// ignored: each frame names its destination).
    UdpOverTcp = 0x03,
    /// Resolve the target's name (port 0) with the far side's own resolver: the response's
    /// STATUS says whether it resolved (0x04: it did not; 0x02: the ACL forbids the name or every
    /// address), and after a success a [`super::resolve::ResolveAnswer`] is the rest of the
    /// stream (docs/PROTOCOL.md §20).
    Resolve = 0x04,
    /// A reverse-tunnel agent registers: the target is a domain-type address carrying the
    /// agent's name with port 0; after a success response both ends run a yamux session over
    /// the encrypted stream (docs/PROTOCOL.md, "Reverse tunnel").
    Agent = 0x10,
}

/// The first message of a tunnel connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestHeader {
    pub command: Command,
    /// Seconds since the Unix epoch on the local's clock.
    pub timestamp: u64,
    pub target: Address,
    /// Length of the zero padding whose only purpose is to vary the first chunk's length.
    pub padding_len: u16,
}

impl RequestHeader {
    /// A CONNECT request stamped `timestamp`, with a random amount of padding.
    pub fn connect(target: Address, timestamp: u64) -> RequestHeader {
        RequestHeader {
            command: Command::Connect,
            timestamp,
            target,
            padding_len: random_padding_len(),
        }
    }

    /// A request for `command` stamped `timestamp`, with a random amount of padding.
    pub fn new(command: Command, target: Address, timestamp: u64) -> RequestHeader {
        RequestHeader {
            command,
            timestamp,
            target,
            padding_len: random_padding_len(),
        }
    }
}

impl Encode for RequestHeader {
    /// Bytes the header takes (the chunk may carry initial data after it).
    fn encoded_len(&self) -> usize {
        1 + 8 + self.target.encoded_len() + 2 + padding_len(self.padding_len)
    }

    fn encode(&self, buf: &mut impl BufMut) {
        buf.put_u8(self.command as u8);
        buf.put_u64(self.timestamp);
        self.target.encode(buf);
        put_padding(buf, self.padding_len);
    }
}

impl Decode for RequestHeader {
    fn decode(buf: &mut impl Buf) -> Result<Self, DecodeError> {
        need(buf, 1 + 8)?;
        let command = match buf.get_u8() {
            0x01 => Command::Connect,
            0x02 => Command::Bind,
            0x03 => Command::UdpOverTcp,
            0x04 => Command::Resolve,
            0x10 => Command::Agent,
            other => return Err(DecodeError::BadCommand(other)),
        };
        let timestamp = buf.get_u64();
        let target = Address::decode(buf)?;
        let padding_len = get_padding(buf)?;
        Ok(RequestHeader {
            command,
            timestamp,
            target,
            padding_len,
        })
    }
}

/// The remote's answer, sent once the outbound connection succeeded or failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResponseHeader {
    /// The salt of the request this answers.
    pub request_salt: [u8; SALT_LEN],
    pub status: Status,
    /// Seconds since the Unix epoch on the remote's clock; the local warns about drift.
    pub timestamp: u64,
    /// The remote's local address of the outbound connection (SOCKS5 BND.ADDR/BND.PORT), or
    /// [`Address::UNSPECIFIED`] on failure.
    pub bound: Address,
    pub padding_len: u16,
}

impl ResponseHeader {
    pub fn new(request_salt: [u8; SALT_LEN], status: Status, timestamp: u64, bound: Address) -> Self {
        ResponseHeader {
            request_salt,
            status,
            timestamp,
            bound,
            padding_len: random_padding_len(),
        }
    }
}

impl Encode for ResponseHeader {
    fn encoded_len(&self) -> usize {
        SALT_LEN + 1 + 8 + self.bound.encoded_len() + 2 + padding_len(self.padding_len)
    }

    fn encode(&self, buf: &mut impl BufMut) {
        buf.put_slice(&self.request_salt);
        buf.put_u8(self.status.socks5() as u8);
        buf.put_u64(self.timestamp);
        self.bound.encode(buf);
        put_padding(buf, self.padding_len);
    }
}

impl Decode for ResponseHeader {
    fn decode(buf: &mut impl Buf) -> Result<Self, DecodeError> {
        need(buf, SALT_LEN + 1 + 8)?;
        let mut request_salt = [0u8; SALT_LEN];
        buf.copy_to_slice(&mut request_salt);
        let status = ReplyCode::from_u8(buf.get_u8())
            .map(Status::from)
            .ok_or(DecodeError::BadField("STATUS"))?;
        let timestamp = buf.get_u64();
        let bound = Address::decode(buf)?;
        let padding_len = get_padding(buf)?;
        Ok(ResponseHeader {
            request_salt,
            status,
            timestamp,
            bound,
            padding_len,
        })
    }
}

fn random_padding_len() -> u16 {
    // Up to 255 bytes: enough to blur the first chunk's length, cheap on every connection.
    rand::thread_rng().gen_range(0..=255)
}

fn put_padding(buf: &mut impl BufMut, len: u16) {
    let len = padding_len(len);
    buf.put_u16(len as u16);
    // Zero bytes: the padding is encrypted with the rest of the chunk, so only its length shows
    // on the wire, and zeros keep encoding deterministic (test vectors).
    buf.put_bytes(0, len);
}

/// The padding actually encoded: at most [`MAX_PADDING`], as decoders require.
fn padding_len(len: u16) -> usize {
    usize::from(len).min(MAX_PADDING)
}

fn get_padding(buf: &mut impl Buf) -> Result<u16, DecodeError> {
    need(buf, 2)?;
    let len = buf.get_u16();
    if usize::from(len) > MAX_PADDING {
        return Err(DecodeError::BadField("PADLEN"));
    }
    need(buf, usize::from(len))?;
    buf.advance(usize::from(len));
    Ok(len)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::{decode_exact, decode_prefix};
    use proptest::prelude::*;

    #[test]
    fn request_leaves_initial_data() {
        let header = RequestHeader::connect(Address::domain("example.com", 80).unwrap(), 1_700_000_000);
        let mut buf = Vec::new();
        header.encode(&mut buf);
        assert_eq!(buf.len(), header.encoded_len());
        buf.extend_from_slice(b"GET / HTTP/1.1\r\n");
        let (decoded, used) = decode_prefix::<RequestHeader>(&buf).unwrap();
        assert_eq!(decoded, header);
        assert_eq!(&buf[used..], b"GET / HTTP/1.1\r\n");
    }

    /// The AGENT registration of docs/PROTOCOL.md §14 and §17, byte for byte.
    #[test]
    fn agent_registration_vector() {
        let wire: &[u8] = &[
            0x10, 0, 0, 0, 0, 0x65, 0x53, 0xF1, 0x00, // CMD AGENT, TIMESTAMP 1700000000
            0x03, 6, b'c', b'a', b'm', b'p', b'u', b's', 0, 0, // Domain("campus", 0)
            0, 0, // PADLEN 0
        ];
        let header = RequestHeader {
            command: Command::Agent,
            timestamp: 1_700_000_000,
            target: Address::domain("campus", 0).unwrap(),
            padding_len: 0,
        };
        let mut buf = Vec::new();
        header.encode(&mut buf);
        assert_eq!(buf, wire);
        assert_eq!(decode_exact::<RequestHeader>(wire), Ok(header));
    }

    #[test]
    fn response_must_fill_its_chunk() {
        let resp = ResponseHeader::new([9; 32], Status::ConnectionRefused, 5, Address::UNSPECIFIED);
        let mut buf = Vec::new();
        resp.encode(&mut buf);
        assert_eq!(decode_exact::<ResponseHeader>(&buf), Ok(resp));
        buf.push(0);
        assert_eq!(decode_exact::<ResponseHeader>(&buf), Err(DecodeError::TrailingBytes(1)));
    }

    #[test]
    fn rejects_oversized_padding_and_unknown_command() {
        let mut buf = vec![0x01];
        buf.extend_from_slice(&0u64.to_be_bytes());
        Address::UNSPECIFIED.encode(&mut buf);
        buf.extend_from_slice(&2000u16.to_be_bytes());
        assert_eq!(
            decode_prefix::<RequestHeader>(&buf).map(|_| ()),
            Err(DecodeError::BadField("PADLEN"))
        );
        assert_eq!(
            decode_prefix::<RequestHeader>(&[0x09; 20]).map(|_| ()),
            Err(DecodeError::BadCommand(9))
        );
    }

    proptest! {
        #[test]
        fn decoders_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
            let _ = decode_prefix::<RequestHeader>(&bytes);
            let _ = decode_prefix::<ResponseHeader>(&bytes);
        }
    }
}
