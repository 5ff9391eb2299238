//! RESOLVE's answer as it crosses the tunnel (docs/PROTOCOL.md §20). The tunnel response header
//! carries the outcome (STATUS `0x00`, or the refusal); after a success this list is the whole
//! remote → local stream, then the remote ends it. A hop that forwards tunnel streams (the
//! public remote handing a name to its agent) relays it without knowing the command.
//!
//! ```text
//! +-------+------+------+------+------+-----
//! | COUNT | ATYP | ADDR | ATYP | ADDR | ...   COUNT (0..=64) addresses, no ports
//! | 1     | 1    | 4/16 | 1    | 4/16 |
//! +-------+------+------+------+------+-----
//! ```
//!
//! ATYP is RFC 1928's: `0x01` IPv4 (4 bytes), `0x04` IPv6 (16 bytes); names are not allowed.
//! The list holds the addresses the far side's own resolver gave for the name, in its order,
//! after its ACL (an address it would not connect to is not told either).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use bytes::{Buf, BufMut};

use super::{need, Decode, DecodeError, Encode};

/// Most addresses one answer carries (more are cut off by the sender).
pub const MAX_ADDRESSES: usize = 64;

/// The addresses a name resolved to on the far side.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ResolveAnswer {
    addresses: Vec<IpAddr>,
}

impl ResolveAnswer {
    /// An answer carrying the first [`MAX_ADDRESSES`] of `addresses`.
    pub fn new(addresses: impl IntoIterator<Item = IpAddr>) -> ResolveAnswer {
        ResolveAnswer {
            addresses: addresses.into_iter().take(MAX_ADDRESSES).collect(),
        }
    }

    /// The addresses, in the far side's order.
    pub fn addresses(&self) -> &[IpAddr] {
        &self.addresses
    }
}

impl Encode for ResolveAnswer {
    fn encoded_len(&self) -> usize {
        1 + self
            .addresses
            .iter()
            .map(|a| if a.is_ipv4() { 5 } else { 17 })
            .sum::<usize>()
    }

    fn encode(&self, buf: &mut impl BufMut) {
        // `new` keeps the list within MAX_ADDRESSES, which fits the count byte.
        buf.put_u8(self.addresses.len() as u8);
        for address in &self.addresses {
            match address {
                IpAddr::V4(v4) => {
                    buf.put_u8(0x01);
                    buf.put_slice(&v4.octets());
                }
                IpAddr::V6(v6) => {
                    buf.put_u8(0x04);
                    buf.put_slice(&v6.octets());
                }
            }
        }
    }
}

impl Decode for ResolveAnswer {
    fn decode(buf: &mut impl Buf) -> Result<Self, DecodeError> {
        need(buf, 1)?;
        let count = usize::from(buf.get_u8());
        if count > MAX_ADDRESSES {
            return Err(DecodeError::BadField("COUNT"));
        }
        let mut addresses = Vec::with_capacity(count);
        for _ in 0..count {
            need(buf, 1)?;
            let address = match buf.get_u8() {
                0x01 => {
                    need(buf, 4)?;
                    let mut octets = [0u8; 4];
                    buf.copy_to_slice(&mut octets);
                    IpAddr::V4(Ipv4Addr::from(octets))
                }
                0x04 => {
                    need(buf, 16)?;
                    let mut octets = [0u8; 16];
                    buf.copy_to_slice(&mut octets);
                    IpAddr::V6(Ipv6Addr::from(octets))
                }
                other => return Err(DecodeError::BadAddressType(other)),
            };
            addresses.push(address);
        }
        Ok(ResolveAnswer { addresses })
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::proto::{decode_exact, decode_prefix};

    #[test]
    fn answer_has_the_documented_bytes() {
        let answer = ResolveAnswer::new(["10.77.3.1".parse().unwrap(), "2001:db8::1".parse().unwrap()]);
        let mut buf = Vec::new();
        answer.encode(&mut buf);
        let mut expected = vec![2, 0x01, 10, 77, 3, 1, 0x04, 0x20, 0x01, 0x0d, 0xb8];
        expected.extend_from_slice(&[0; 11]);
        expected.push(1);
        assert_eq!(buf, expected);
        assert_eq!(buf.len(), answer.encoded_len());
        assert_eq!(decode_exact::<ResolveAnswer>(&buf).unwrap(), answer);
    }

    #[test]
    fn bad_answers_are_refused_or_incomplete() {
        assert_eq!(decode_prefix::<ResolveAnswer>(&[]), Err(DecodeError::Incomplete));
        assert_eq!(
            decode_prefix::<ResolveAnswer>(&[1, 0x01, 10]),
            Err(DecodeError::Incomplete)
        );
        assert_eq!(
            decode_prefix::<ResolveAnswer>(&[1, 0x03, 1, b'a']),
            Err(DecodeError::BadAddressType(0x03))
        );
        assert_eq!(
            decode_prefix::<ResolveAnswer>(&[65]),
            Err(DecodeError::BadField("COUNT"))
        );
    }

    #[test]
    fn a_long_list_is_cut_to_the_maximum() {
        let many = (0..200u32).map(|i| IpAddr::V4(Ipv4Addr::from(i)));
        assert_eq!(ResolveAnswer::new(many).addresses().len(), MAX_ADDRESSES);
    }

    proptest! {
        #[test]
        fn round_trips(v4 in proptest::collection::vec(any::<u32>(), 0..40), v6 in proptest::collection::vec(any::<u128>(), 0..40)) {
            let addresses = v4.into_iter().map(|a| IpAddr::V4(a.into())).chain(v6.into_iter().map(|a| IpAddr::V6(a.into())));
            let answer = ResolveAnswer::new(addresses);
            let mut buf = Vec::new();
            answer.encode(&mut buf);
            prop_assert_eq!(buf.len(), answer.encoded_len());
            prop_assert_eq!(decode_exact::<ResolveAnswer>(&buf).unwrap(), answer);
        }
    }
}
