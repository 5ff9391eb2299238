//! BIND's second reply as it crosses the tunnel. The tunnel response header carries BIND's first
//! reply (the address the peer must connect to); this notice is the first thing in the
//! remote → local encrypted stream after it, as ordinary payload, so a hop that forwards tunnel
//! streams relays it without knowing the command.
//!
//! ```text
//! +--------+------+------+------+
//! | STATUS | ATYP | ADDR | PORT |
//! | 1      | peer (address.rs)  |
//! +--------+------+------+------+
//! ```
//!
//! STATUS uses the SOCKS5 reply codes: `0x00` a peer connected (ADDR/PORT name it) and the
//! stream continues with the peer's bytes; `0x02` the peer's address did not match the request
//! (ADDR/PORT name it), `0x06` no peer came before the remote's BIND timeout, `0x01` any other
//! failure (ADDR/PORT unspecified); after a failure the remote ends the stream.

use bytes::{Buf, BufMut};

use super::address::Address;
use super::socks5::ReplyCode;
use super::status::Status;
use super::{need, Decode, DecodeError, Encode};

/// The outcome of a BIND's wait for its peer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BindNotice {
    pub status: Status,
    /// The peer that connected, or [`Address::UNSPECIFIED`].
    pub peer: Address,
}

impl Encode for BindNotice {
    fn encoded_len(&self) -> usize {
        1 + self.peer.encoded_len()
    }

    fn encode(&self, buf: &mut impl BufMut) {
        buf.put_u8(self.status.socks5() as u8);
        self.peer.encode(buf);
    }
}

impl Decode for BindNotice {
    fn decode(buf: &mut impl Buf) -> Result<Self, DecodeError> {
        need(buf, 1)?;
        let status = ReplyCode::from_u8(buf.get_u8())
            .map(Status::from)
            .ok_or(DecodeError::BadField("STATUS"))?;
        let peer = Address::decode(buf)?;
        Ok(BindNotice { status, peer })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::decode_prefix;
    use proptest::prelude::*;

    #[test]
    fn notice_round_trips_and_leaves_peer_bytes() {
        let n = BindNotice {
            status: Status::Succeeded,
            peer: Address::Ip("10.1.2.3:4567".parse().unwrap()),
        };
        let mut buf = Vec::new();
        n.encode(&mut buf);
        assert_eq!(buf, [0x00, 0x01, 10, 1, 2, 3, 0x11, 0xD7]);
        assert_eq!(buf.len(), n.encoded_len());
        buf.extend_from_slice(b"data");
        let (decoded, used) = decode_prefix::<BindNotice>(&buf).unwrap();
        assert_eq!(decoded, n);
        assert_eq!(&buf[used..], b"data");
    }

    #[test]
    fn notice_rejects_unknown_status() {
        assert_eq!(
            decode_prefix::<BindNotice>(&[0x09, 1, 0, 0, 0, 0, 0, 0]).map(|_| ()),
            Err(DecodeError::BadField("STATUS"))
        );
        assert_eq!(
            decode_prefix::<BindNotice>(&[0x00, 1, 0]).map(|_| ()),
            Err(DecodeError::Incomplete)
        );
    }

    proptest! {
        #[test]
        fn decoder_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = decode_prefix::<BindNotice>(&bytes);
        }
    }
}
