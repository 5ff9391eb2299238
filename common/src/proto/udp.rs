//! UDP relay messages: the SOCKS5 UDP request header (RFC 1928 §7) that applications put on each
//! datagram, and the length-prefixed datagram frame that carries one datagram inside a tunnel
//! stream (UDP-over-TCP, tunnel command `0x03`).
//!
//! SOCKS5 UDP datagram (application ↔ warren-local, both directions):
//!
//! ```text
//! +-----+------+------+----------+----------+----------+
//! | RSV | FRAG | ATYP | DST.ADDR | DST.PORT |   DATA   |
//! |  2  |  1   |  1   | Variable |    2     | Variable |
//! +-----+------+------+----------+----------+----------+
//! ```
//!
//! Towards the application the address names the datagram's source. FRAG ≠ 0 (fragments) is
//! decoded so callers can drop it; warren never reassembles.
//!
//! Datagram frame (inside the encrypted stream of a UDP-over-TCP tunnel, both directions):
//!
//! ```text
//! +--------+------+------+------+---------------+
//! | LEN    | ATYP | ADDR | PORT | DATA          |
//! | u16 BE | address (address.rs) | LEN - addr  |
//! +--------+------+------+------+---------------+
//! ```
//!
//! LEN counts the address and the data. Local → remote the address is the destination;
//! remote → local it is the source of the reply.
//!
//! Encrypted UDP packet plaintext (`local.udp_transport: udp`; sealed in a packet session by
//! `udp_session::PacketSealer` as `SESSION_ID (16) | PACKET_ID (8) | sealed plaintext | TAG (16)`,
//! under the direction's purpose, PROTOCOL.md §16.3). KIND `0x01`, a datagram, both directions:
//!
//! ```text
//! +------+-----------+------+------+------+------+
//! | KIND | TIMESTAMP | ATYP | ADDR | PORT | DATA |
//! | 0x01 | u64 BE    | address (address.rs)| rest |
//! +------+-----------+------+------+------+------+
//! ```
//!
//! KIND `0x02`, end of association (local → remote only): the local's association is over, the
//! remote drops its NAT entry and outbound sockets at once. Nothing follows the timestamp:
//!
//! ```text
//! +------+-----------+
//! | KIND | TIMESTAMP |
//! | 0x02 | u64 BE    |
//! +------+-----------+
//! ```

use bytes::{Buf, BufMut};

use super::address::Address;
use super::{need, Decode, DecodeError, Encode};

/// Largest datagram payload warren relays (an IPv6 UDP payload without jumbograms, minus room
/// for the largest address in a 16-bit frame).
pub const MAX_DATAGRAM: usize = 65535 - 2 - 259;

/// One SOCKS5 UDP datagram: header and payload. It fills its datagram: `decode` takes every
/// remaining byte as DATA.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Socks5Datagram {
    /// Fragment number; 0 means a standalone datagram.
    pub frag: u8,
    /// Destination (from the application) or source (towards it).
    pub address: Address,
    pub data: Vec<u8>,
}

impl Encode for Socks5Datagram {
    fn encode(&self, buf: &mut impl BufMut) {
        buf.put_u16(0);
        buf.put_u8(self.frag);
        self.address.encode(buf);
        buf.put_slice(&self.data);
    }

    fn encoded_len(&self) -> usize {
        3 + self.address.encoded_len() + self.data.len()
    }
}

impl Socks5Datagram {
    /// Writes a header for `address` followed by `data`, without building a datagram first.
    pub fn encode_parts(address: &Address, data: &[u8], buf: &mut impl BufMut) {
        buf.put_u16(0);
        buf.put_u8(0);
        address.encode(buf);
        buf.put_slice(data);
    }
}

impl Decode for Socks5Datagram {
    fn decode(buf: &mut impl Buf) -> Result<Self, DecodeError> {
        need(buf, 3)?;
        if buf.get_u16() != 0 {
            return Err(DecodeError::BadField("RSV"));
        }
        let frag = buf.get_u8();
        let address = Address::decode(buf)?;
        let mut data = vec![0u8; buf.remaining()];
        buf.copy_to_slice(&mut data);
        Ok(Socks5Datagram { frag, address, data })
    }
}

/// One datagram inside a UDP-over-TCP tunnel stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DatagramFrame {
    pub address: Address,
    pub data: Vec<u8>,
}

impl DatagramFrame {
    /// Frames `address` and `data`; `None` if they do not fit the 16-bit length.
    pub fn encode_parts(address: &Address, data: &[u8], buf: &mut impl BufMut) -> Option<()> {
        let len = u16::try_from(address.encoded_len() + data.len()).ok()?;
        buf.put_u16(len);
        address.encode(buf);
        buf.put_slice(data);
        Some(())
    }

    pub fn encode(&self, buf: &mut impl BufMut) -> Option<()> {
        DatagramFrame::encode_parts(&self.address, &self.data, buf)
    }
}

impl Decode for DatagramFrame {
    fn decode(buf: &mut impl Buf) -> Result<Self, DecodeError> {
        need(buf, 2)?;
        let len = usize::from(buf.get_u16());
        need(buf, len)?;
        let mut body = buf.copy_to_bytes(len);
        let address = match Address::decode(&mut body) {
            Err(DecodeError::Incomplete) => return Err(DecodeError::BadField("LEN")),
            other => other?,
        };
        Ok(DatagramFrame {
            address,
            data: body.to_vec(),
        })
    }
}

/// KIND of a packet carrying one datagram.
pub const KIND_DATAGRAM: u8 = 0x01;
/// KIND of a packet ending an association (local → remote).
pub const KIND_END: u8 = 0x02;

/// The plaintext of one encrypted UDP packet that carries a datagram (KIND `0x01`). It fills
/// its packet: DATA is the rest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PacketPlaintext {
    /// Seconds since the Unix epoch on the sender's clock (checked against the replay window).
    pub timestamp: u64,
    /// Destination (local → remote) or source of the reply (remote → local).
    pub address: Address,
    pub data: Vec<u8>,
}

impl PacketPlaintext {
    /// Encodes the parts (KIND included) without building a message first.
    pub fn encode_parts(timestamp: u64, address: &Address, data: &[u8], buf: &mut impl BufMut) {
        buf.put_u8(KIND_DATAGRAM);
        buf.put_u64(timestamp);
        address.encode(buf);
        buf.put_slice(data);
    }
}

impl Encode for PacketPlaintext {
    fn encode(&self, buf: &mut impl BufMut) {
        PacketPlaintext::encode_parts(self.timestamp, &self.address, &self.data, buf);
    }

    fn encoded_len(&self) -> usize {
        1 + 8 + self.address.encoded_len() + self.data.len()
    }
}

impl Decode for PacketPlaintext {
    /// Only a datagram packet: any other KIND is `BadField("KIND")` (see [`Packet`]).
    fn decode(buf: &mut impl Buf) -> Result<Self, DecodeError> {
        match Packet::decode(buf)? {
            Packet::Datagram(p) => Ok(p),
            Packet::End { .. } => Err(DecodeError::BadField("KIND")),
        }
    }
}

/// Any encrypted UDP packet's plaintext, by KIND.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Packet {
    /// KIND `0x01`: one datagram.
    Datagram(PacketPlaintext),
    /// KIND `0x02`: the sender's association is over (sent by the local when it ends one).
    End {
        /// Seconds since the Unix epoch on the sender's clock.
        timestamp: u64,
    },
}

impl Packet {
    /// The sender's stamp, whatever the kind (the replay filter checks it).
    pub fn timestamp(&self) -> u64 {
        match self {
            Packet::Datagram(p) => p.timestamp,
            Packet::End { timestamp } => *timestamp,
        }
    }
}

impl Encode for Packet {
    fn encode(&self, buf: &mut impl BufMut) {
        match self {
            Packet::Datagram(p) => p.encode(buf),
            Packet::End { timestamp } => {
                buf.put_u8(KIND_END);
                buf.put_u64(*timestamp);
            }
        }
    }

    fn encoded_len(&self) -> usize {
        match self {
            Packet::Datagram(p) => p.encoded_len(),
            Packet::End { .. } => 1 + 8,
        }
    }
}

impl Decode for Packet {
    /// Unknown KINDs are `BadField("KIND")`; an end packet must hold nothing after its stamp
    /// (checked by `decode_exact`).
    fn decode(buf: &mut impl Buf) -> Result<Self, DecodeError> {
        need(buf, 1 + 8)?;
        let kind = buf.get_u8();
        let timestamp = buf.get_u64();
        match kind {
            KIND_DATAGRAM => {
                let address = Address::decode(buf)?;
                let mut data = vec![0u8; buf.remaining()];
                buf.copy_to_slice(&mut data);
                Ok(Packet::Datagram(PacketPlaintext {
                    timestamp,
                    address,
                    data,
                }))
            }
            KIND_END => Ok(Packet::End { timestamp }),
            _ => Err(DecodeError::BadField("KIND")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::{decode_exact, decode_prefix};
    use proptest::prelude::*;

    #[test]
    fn socks5_datagram_round_trips_and_keeps_frag() {
        let d = Socks5Datagram {
            frag: 0,
            address: Address::Ip("127.0.0.1:53".parse().unwrap()),
            data: b"hello".to_vec(),
        };
        let mut buf = Vec::new();
        d.encode(&mut buf);
        assert_eq!(buf, [0, 0, 0, 1, 127, 0, 0, 1, 0, 53, b'h', b'e', b'l', b'l', b'o']);
        assert_eq!(decode_exact::<Socks5Datagram>(&buf), Ok(d));
        buf[2] = 1;
        assert_eq!(decode_exact::<Socks5Datagram>(&buf).unwrap().frag, 1);
    }

    #[test]
    fn socks5_datagram_rejects_bad_headers() {
        assert_eq!(decode_exact::<Socks5Datagram>(&[0, 0]), Err(DecodeError::Incomplete));
        assert_eq!(
            decode_exact::<Socks5Datagram>(&[0, 1, 0, 1, 1, 2, 3, 4, 0, 1]),
            Err(DecodeError::BadField("RSV"))
        );
        assert_eq!(
            decode_exact::<Socks5Datagram>(&[0, 0, 0, 9, 1, 2]),
            Err(DecodeError::BadAddressType(9))
        );
        assert_eq!(
            decode_exact::<Socks5Datagram>(&[0, 0, 0, 1, 1, 2]),
            Err(DecodeError::Incomplete)
        );
    }

    #[test]
    fn frame_round_trips_and_leaves_the_next_frame() {
        let f = DatagramFrame {
            address: Address::domain("localhost", 7).unwrap(),
            data: vec![1, 2, 3],
        };
        let mut buf = Vec::new();
        f.encode(&mut buf).unwrap();
        assert_eq!(&buf[..2], &[0, 1 + 1 + 9 + 2 + 3]);
        buf.extend_from_slice(&[0, 0]);
        let (decoded, used) = decode_prefix::<DatagramFrame>(&buf).unwrap();
        assert_eq!(decoded, f);
        assert_eq!(used, buf.len() - 2);
    }

    #[test]
    fn frame_whose_address_overruns_its_length_is_refused() {
        assert_eq!(
            decode_prefix::<DatagramFrame>(&[0, 3, 1, 127, 0]).map(|_| ()),
            Err(DecodeError::BadField("LEN"))
        );
        assert_eq!(
            decode_prefix::<DatagramFrame>(&[0, 9, 1]).map(|_| ()),
            Err(DecodeError::Incomplete)
        );
    }

    #[test]
    fn packet_kinds_decode_and_unknown_or_overlong_ones_are_refused() {
        let end = Packet::End { timestamp: 7 };
        let mut buf = Vec::new();
        end.encode(&mut buf);
        assert_eq!(buf, [2, 0, 0, 0, 0, 0, 0, 0, 7]);
        assert_eq!(decode_exact::<Packet>(&buf), Ok(end));
        assert_eq!(
            decode_exact::<PacketPlaintext>(&buf),
            Err(DecodeError::BadField("KIND"))
        );
        buf.push(0);
        assert_eq!(decode_exact::<Packet>(&buf), Err(DecodeError::TrailingBytes(1)));
        buf[0] = 9;
        assert_eq!(decode_exact::<Packet>(&buf), Err(DecodeError::BadField("KIND")));
    }

    proptest! {
        #[test]
        fn decoders_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
            let _ = decode_exact::<Socks5Datagram>(&bytes);
            let _ = decode_prefix::<DatagramFrame>(&bytes);
            let _ = decode_exact::<PacketPlaintext>(&bytes);
            let _ = decode_exact::<Packet>(&bytes);
        }

        #[test]
        fn packet_plaintext_round_trips(ts in any::<u64>(), port in any::<u16>(), data in proptest::collection::vec(any::<u8>(), 0..1500)) {
            let p = PacketPlaintext { timestamp: ts, address: Address::Ip(([10, 0, 0, 1], port).into()), data };
            let mut buf = Vec::new();
            p.encode(&mut buf);
            prop_assert_eq!(decode_exact::<PacketPlaintext>(&buf), Ok(p.clone()));
            prop_assert_eq!(decode_exact::<Packet>(&buf), Ok(Packet::Datagram(p)));
        }

        #[test]
        fn frames_round_trip(port in any::<u16>(), ip in any::<[u8; 16]>(), data in proptest::collection::vec(any::<u8>(), 0..2000)) {
            let f = DatagramFrame { address: Address::Ip((std::net::Ipv6Addr::from(ip), port).into()), data };
            let mut buf = Vec::new();
            f.encode(&mut buf).unwrap();
            prop_assert_eq!(decode_exact::<DatagramFrame>(&buf), Ok(f.clone()));
            let d = Socks5Datagram { frag: 0, address: f.address.clone(), data: f.data.clone() };
            let mut buf = Vec::new();
            d.encode(&mut buf);
            prop_assert_eq!(decode_exact::<Socks5Datagram>(&buf), Ok(d));
        }
    }
}
