//! SOCKS4 and SOCKS4a (Ying-Da Lee's "SOCKS: A protocol for TCP proxy across firewalls" and
//! the SOCKS4A extension), as warren-local speaks them to applications on the SOCKS5 port.
//!
//! ```text
//! request   VN=4 | CD | DSTPORT (u16 BE) | DSTIP (4) | USERID ... | 0x00
//! SOCKS4a   VN=4 | CD | DSTPORT (u16 BE) | 0.0.0.x   | USERID ... | 0x00 | DOMAIN ... | 0x00
//!           (x != 0: the name after the USERID is resolved by the proxy; here, by the remote)
//! reply     VN=0 | CD | DSTPORT (u16 BE) | DSTIP (4)
//!
//! CD in a request: 1 CONNECT, 2 BIND.
//! CD in a reply:   0x5A granted, 0x5B rejected or failed,
//!                  0x5C / 0x5D identd unreachable / mismatch (never sent by warren).
//! ```
//!
//! USERID and DOMAIN are each at most 255 bytes before their NUL; a longer field is an error,
//! not an endless wait for a terminator.

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};

use bytes::{Buf, BufMut};

use super::address::{check_domain, Address, DomainRule};
use super::{need, version, Decode, DecodeError, Encode};

pub const VERSION: u8 = 0x04;
/// The version byte of every reply.
pub const REPLY_VERSION: u8 = 0x00;
/// Longest USERID or SOCKS4a DOMAIN accepted (bytes, without the NUL).
pub const MAX_FIELD: usize = 255;

/// What the client asks the proxy to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    Connect = 0x01,
    Bind = 0x02,
}

/// A SOCKS4 or SOCKS4a request. A SOCKS4a name becomes [`Address::Domain`]; a plain SOCKS4
/// request carries an IPv4 [`Address::Ip`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub command: Command,
    pub target: Address,
    /// The USERID field: opaque bytes, logged, never used for authentication.
    pub userid: Vec<u8>,
}

/// Reads a NUL-terminated field of at most [`MAX_FIELD`] bytes, consuming the NUL.
fn read_nul_terminated(buf: &mut impl Buf, field: &'static str) -> Result<Vec<u8>, DecodeError> {
    let mut out = Vec::new();
    loop {
        need(buf, 1)?;
        match buf.get_u8() {
            0 => return Ok(out),
            _ if out.len() == MAX_FIELD => return Err(DecodeError::BadField(field)),
            b => out.push(b),
        }
    }
}

impl Decode for Request {
    fn decode(buf: &mut impl Buf) -> Result<Self, DecodeError> {
        version(buf, 8, VERSION)?;
        let command = match buf.get_u8() {
            0x01 => Command::Connect,
            0x02 => Command::Bind,
            other => return Err(DecodeError::BadCommand(other)),
        };
        let port = buf.get_u16();
        let mut ip = [0u8; 4];
        buf.copy_to_slice(&mut ip);
        let userid = read_nul_terminated(buf, "USERID")?;
        let target = if is_socks4a_marker(ip) {
            let name = read_nul_terminated(buf, "DOMAIN")?;
            Address::from_host(check_domain(&name, DomainRule::Wire)?, port)?
        } else {
            Address::Ip(SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::from(ip), port)))
        };
        Ok(Request {
            command,
            target,
            userid,
        })
    }
}

/// Encodes the request: SOCKS4a for a domain, SOCKS4 for IPv4. An IPv6 target has no SOCKS4
/// form and is encoded as 0.0.0.0 (a client-side concern; warren never sends one).
impl Encode for Request {
    fn encode(&self, buf: &mut impl BufMut) {
        buf.put_u8(VERSION);
        buf.put_u8(self.command as u8);
        buf.put_u16(self.target.port());
        let name = socks4a_name(&self.target);
        match (&self.target, &name) {
            (Address::Ip(SocketAddr::V4(sa)), None) => buf.put_slice(&sa.ip().octets()),
            _ => buf.put_slice(&[0, 0, 0, 1]),
        }
        buf.put_slice(&self.userid);
        buf.put_u8(0);
        if let Some(name) = name {
            buf.put_slice(name.as_bytes());
            buf.put_u8(0);
        }
    }

    fn encoded_len(&self) -> usize {
        let name = socks4a_name(&self.target).map_or(0, |name| name.len() + 1);
        8 + self.userid.len() + 1 + name
    }
}

/// The SOCKS4a name a target travels as, or `None` for a plain DSTIP. Besides names, an IPv6
/// target and an IPv4 one in the marker range 0.0.0.1–0.0.0.255 cannot be a DSTIP (the latter
/// would read as "a name follows"), so they go as their literal text, which the decoder turns
/// back into the same IP (found by `cargo fuzz run socks`).
fn socks4a_name(target: &Address) -> Option<std::borrow::Cow<'_, str>> {
    match target {
        Address::Domain(name, _) => Some(name.as_str().into()),
        Address::Ip(SocketAddr::V4(sa)) if is_socks4a_marker(sa.ip().octets()) => Some(sa.ip().to_string().into()),
        Address::Ip(SocketAddr::V4(_)) => None,
        Address::Ip(SocketAddr::V6(sa)) => Some(sa.ip().to_string().into()),
    }
}

/// Whether a DSTIP is SOCKS4a's "0.0.0.x, x != 0": the real target is the name after USERID.
fn is_socks4a_marker(ip: [u8; 4]) -> bool {
    ip[..3] == [0, 0, 0] && ip[3] != 0
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum ReplyCode {
    Granted = 0x5A,
    /// Rejected or failed: every refusal warren sends.
    Rejected = 0x5B,
    /// The client's identd could not be reached.
    IdentUnreachable = 0x5C,
    /// The client's identd reported a different user.
    IdentMismatch = 0x5D,
}

/// A SOCKS4 reply. `bound` is meaningful for BIND; CONNECT clients ignore it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reply {
    pub code: ReplyCode,
    pub bound: SocketAddrV4,
}

impl Reply {
    /// A reply with 0.0.0.0:0 as the address.
    pub fn new(code: ReplyCode) -> Reply {
        Reply {
            code,
            bound: SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 0),
        }
    }

    /// A reply carrying `bound` if it is an IPv4 address, else 0.0.0.0:0 (SOCKS4 has no other
    /// address form).
    pub fn with_address(code: ReplyCode, bound: &Address) -> Reply {
        match bound {
            Address::Ip(SocketAddr::V4(sa)) => Reply { code, bound: *sa },
            _ => Reply::new(code),
        }
    }
}

impl Encode for Reply {
    fn encode(&self, buf: &mut impl BufMut) {
        buf.put_u8(REPLY_VERSION);
        buf.put_u8(self.code as u8);
        buf.put_u16(self.bound.port());
        buf.put_slice(&self.bound.ip().octets());
    }

    fn encoded_len(&self) -> usize {
        8
    }
}

impl Decode for Reply {
    fn decode(buf: &mut impl Buf) -> Result<Self, DecodeError> {
        version(buf, 8, REPLY_VERSION)?;
        let code = match buf.get_u8() {
            0x5A => ReplyCode::Granted,
            0x5B => ReplyCode::Rejected,
            0x5C => ReplyCode::IdentUnreachable,
            0x5D => ReplyCode::IdentMismatch,
            _ => return Err(DecodeError::BadField("CD")),
        };
        let port = buf.get_u16();
        let mut ip = [0u8; 4];
        buf.copy_to_slice(&mut ip);
        Ok(Reply {
            code,
            bound: SocketAddrV4::new(Ipv4Addr::from(ip), port),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::{decode_exact, decode_prefix};
    use proptest::prelude::*;

    /// The CONNECT example of the SOCKS4 reference (003): 127.0.0.1:80, USERID "fred".
    #[test]
    fn socks4_connect() {
        let req: Request = decode_exact(b"\x04\x01\x00\x50\x7f\x00\x00\x01fred\x00").unwrap();
        assert_eq!(req.command, Command::Connect);
        assert_eq!(req.target, Address::Ip("127.0.0.1:80".parse().unwrap()));
        assert_eq!(req.userid, b"fred");
    }

    #[test]
    fn socks4a_domain_and_bind() {
        let req: Request = decode_exact(b"\x04\x02\x01\xbb\x00\x00\x00\x07\x00example.com\x00").unwrap();
        assert_eq!(req.command, Command::Bind);
        assert_eq!(req.target, Address::domain("example.com", 443).unwrap());
        assert!(req.userid.is_empty());
        // 0.0.0.0 is an IPv4 address, not the SOCKS4a marker.
        let req: Request = decode_exact(b"\x04\x01\x00\x50\x00\x00\x00\x00\x00").unwrap();
        assert_eq!(req.target, Address::Ip("0.0.0.0:80".parse().unwrap()));
    }

    #[test]
    fn ip_targets_in_the_socks4a_marker_range_round_trip() {
        // Found by `cargo fuzz run socks`: 0.0.0.x (x != 0) is the SOCKS4a marker, so such a
        // target, and an IPv6 one, cannot be a plain DSTIP; both decode from SOCKS4a names.
        // The fuzzer's input: a SOCKS4a name that is an IP literal in the marker range.
        let decoded: Request = decode_exact(b"\x04\x01\x00\x50\x00\x00\x00\x01\x00\x30.0.0.2\x00").unwrap();
        assert_eq!(decoded.target, Address::Ip("0.0.0.2:80".parse().unwrap()));
        for target in [decoded.target, Address::Ip("[2001:db8::1]:80".parse().unwrap())] {
            let req = Request {
                command: Command::Connect,
                target,
                userid: b"fred".to_vec(),
            };
            let mut buf = Vec::new();
            req.encode(&mut buf);
            assert_eq!(buf.len(), req.encoded_len());
            assert_eq!(decode_exact::<Request>(&buf), Ok(req));
        }
    }

    #[test]
    fn replies() {
        let mut buf = Vec::new();
        Reply::new(ReplyCode::Rejected).encode(&mut buf);
        assert_eq!(buf, [0x00, 0x5B, 0, 0, 0, 0, 0, 0]);
        buf.clear();
        Reply::with_address(ReplyCode::Granted, &Address::Ip("10.1.2.3:4660".parse().unwrap())).encode(&mut buf);
        assert_eq!(buf, [0x00, 0x5A, 0x12, 0x34, 10, 1, 2, 3]);
        assert_eq!(
            decode_exact::<Reply>(&buf).unwrap().bound,
            "10.1.2.3:4660".parse().unwrap()
        );
        buf.clear();
        Reply::with_address(ReplyCode::Granted, &Address::Ip("[::1]:80".parse().unwrap())).encode(&mut buf);
        assert_eq!(buf, [0x00, 0x5A, 0, 0, 0, 0, 0, 0]);
        assert_eq!(
            decode_exact::<Reply>(&[1, 0x5A, 0, 0, 0, 0, 0, 0]),
            Err(DecodeError::BadVersion(1))
        );
        assert_eq!(
            decode_exact::<Reply>(&[0, 0x10, 0, 0, 0, 0, 0, 0]),
            Err(DecodeError::BadField("CD"))
        );
    }

    #[test]
    fn malformed_requests() {
        assert_eq!(
            decode_exact::<Request>(b"\x05\x01\x00\x50\x7f\x00\x00\x01\x00"),
            Err(DecodeError::BadVersion(5))
        );
        assert_eq!(
            decode_exact::<Request>(b"\x04\x03\x00\x50\x7f\x00\x00\x01\x00"),
            Err(DecodeError::BadCommand(3))
        );
        // No NUL yet: more bytes may come.
        assert_eq!(
            decode_exact::<Request>(b"\x04\x01\x00\x50\x7f\x00\x00\x01ab"),
            Err(DecodeError::Incomplete)
        );
        assert_eq!(
            decode_exact::<Request>(b"\x04\x01\x00\x50\x00\x00\x00\x01\x00exa"),
            Err(DecodeError::Incomplete)
        );
        // 256 bytes without a NUL: too long, whatever follows.
        let mut long = b"\x04\x01\x00\x50\x7f\x00\x00\x01".to_vec();
        long.extend(std::iter::repeat_n(b'u', 256));
        assert_eq!(
            decode_prefix::<Request>(&long).map(|_| ()),
            Err(DecodeError::BadField("USERID"))
        );
        let mut long = b"\x04\x01\x00\x50\x00\x00\x00\x01\x00".to_vec();
        long.extend(std::iter::repeat_n(b'd', 256));
        assert_eq!(
            decode_prefix::<Request>(&long).map(|_| ()),
            Err(DecodeError::BadField("DOMAIN"))
        );
        // An empty or non-UTF-8 SOCKS4a name.
        assert_eq!(
            decode_exact::<Request>(b"\x04\x01\x00\x50\x00\x00\x00\x01\x00\x00"),
            Err(DecodeError::BadDomain)
        );
        assert_eq!(
            decode_exact::<Request>(b"\x04\x01\x00\x50\x00\x00\x00\x01\x00\xff\x00"),
            Err(DecodeError::BadDomain)
        );
        assert_eq!(
            decode_exact::<Request>(b"\x04\x01\x00\x50\x7f\x00\x00\x01\x00\x99"),
            Err(DecodeError::TrailingBytes(1))
        );
    }

    fn any_request() -> impl Strategy<Value = Request> {
        let target = prop_oneof![
            (any::<u32>(), any::<u16>())
                .prop_filter("not the SOCKS4a marker", |(ip, _)| *ip == 0 || *ip > 255)
                .prop_map(|(ip, port)| Address::Ip(SocketAddr::V4(SocketAddrV4::new(ip.into(), port)))),
            ("[a-z0-9.-]{1,255}", any::<u16>())
                .prop_filter("a name, not an IP literal", |(n, _)| crate::proto::address::ip_literal(
                    n.as_bytes()
                )
                .is_none())
                .prop_map(|(n, p)| Address::domain(&n, p).unwrap()),
        ];
        let command = prop_oneof![Just(Command::Connect), Just(Command::Bind)];
        (command, target, proptest::collection::vec(1u8..=255, 0..=255)).prop_map(|(command, target, userid)| Request {
            command,
            target,
            userid,
        })
    }

    proptest! {
        #[test]
        fn requests_round_trip(req in any_request()) {
            let mut buf = Vec::new();
            req.encode(&mut buf);
            prop_assert_eq!(decode_exact::<Request>(&buf), Ok(req));
            for cut in 0..buf.len() {
                prop_assert_eq!(decode_prefix::<Request>(&buf[..cut]).map(|_| ()), Err(DecodeError::Incomplete));
            }
        }

        #[test]
        fn decoders_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
            let _ = decode_prefix::<Request>(&bytes);
            let _ = decode_prefix::<Reply>(&bytes);
        }
    }
}
