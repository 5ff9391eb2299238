//! The target address, in the SOCKS5 encoding (RFC 1928 §5), shared by SOCKS5 requests and
//! replies and by the tunnel headers, so there is exactly one address parser in warren.
//!
//! ```text
//! +------+----------------------+----------+
//! | ATYP | ADDR                 | PORT     |
//! +------+----------------------+----------+
//! | 0x01 | 4 bytes IPv4         | u16 BE   |
//! | 0x03 | 1 byte len + name    | u16 BE   |   len 1..=255, UTF-8, no control characters
//! | 0x04 | 16 bytes IPv6        | u16 BE   |
//! +------+----------------------+----------+
//! ```

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use bytes::{Buf, BufMut};

use super::{inherent_encode, need, Decode, DecodeError, Encode};

pub const ATYP_IPV4: u8 = 0x01;
pub const ATYP_DOMAIN: u8 = 0x03;
pub const ATYP_IPV6: u8 = 0x04;

/// Where a client wants to go: an IP socket address, or a name the remote resolves.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Address {
    Ip(SocketAddr),
    /// A domain name (1..=255 bytes) and port; resolved by the remote, never by the local.
    Domain(String, u16),
}

impl Address {
    /// The unspecified IPv4 address and port 0: what a SOCKS reply carries when there is no
    /// meaningful bound address (every error reply).
    pub const UNSPECIFIED: Address = Address::Ip(SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 0));

    pub fn port(&self) -> u16 {
        match self {
            Address::Ip(sa) => sa.port(),
            Address::Domain(_, port) => *port,
        }
    }

    /// Builds a domain address, checking the same rules as the decoder.
    pub fn domain(name: &str, port: u16) -> Result<Address, DecodeError> {
        check_domain(name.as_bytes(), DomainRule::Wire)?;
        Ok(Address::Domain(name.to_owned(), port))
    }
}

/// Which domain names a context accepts; every rule also implies [`DomainRule::Wire`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DomainRule {
    /// What the wire carries (SOCKS5, SOCKS4a, the tunnel): 1..=255 bytes of UTF-8 without
    /// control characters or spaces. Anything else is [`DecodeError::BadDomain`].
    Wire,
    /// The host of an HTTP authority (RFC 3986 §3.2.2 reg-name, unreserved characters only:
    /// ALPHA DIGIT `-` `.` `_` `~`). A character outside them is `BadField("authority")`.
    UriHost,
    /// A name in configuration (ACL and routing rules): dot-separated labels of 1..=63 ASCII
    /// letters, digits, `-` or `_`, at most 253 bytes in all. Anything else is `BadDomain`.
    Labels,
}

/// Checks `name` against `rule` and returns it as text: the one domain-name validator, used by
/// the address codec, SOCKS4a, HTTP authorities and the ACL and routing rules.
pub fn check_domain(name: &[u8], rule: DomainRule) -> Result<&str, DecodeError> {
    let valid = match rule {
        DomainRule::Wire => true,
        DomainRule::UriHost => {
            if name.is_empty() || !name.iter().all(|b| b.is_ascii_alphanumeric() || b"-._~".contains(b)) {
                return Err(DecodeError::BadField("authority"));
            }
            true
        }
        DomainRule::Labels => {
            name.len() <= 253
                && name.split(|b| *b == b'.').all(|label| {
                    !label.is_empty()
                        && label.len() <= 63
                        && label
                            .iter()
                            .all(|b| b.is_ascii_alphanumeric() || *b == b'-' || *b == b'_')
                })
        }
    };
    let wire = !name.is_empty() && name.len() <= 255 && !name.iter().any(|b| b.is_ascii_control() || *b == b' ');
    match std::str::from_utf8(name) {
        Ok(text) if valid && wire => Ok(text),
        _ => Err(DecodeError::BadDomain),
    }
}

impl Encode for Address {
    /// Bytes this address takes on the wire.
    fn encoded_len(&self) -> usize {
        match self {
            Address::Ip(SocketAddr::V4(_)) => 1 + 4 + 2,
            Address::Ip(SocketAddr::V6(_)) => 1 + 16 + 2,
            Address::Domain(name, _) => 1 + 1 + name.len() + 2,
        }
    }

    fn encode(&self, buf: &mut impl BufMut) {
        match self {
            Address::Ip(SocketAddr::V4(sa)) => {
                buf.put_u8(ATYP_IPV4);
                buf.put_slice(&sa.ip().octets());
                buf.put_u16(sa.port());
            }
            Address::Ip(SocketAddr::V6(sa)) => {
                buf.put_u8(ATYP_IPV6);
                buf.put_slice(&sa.ip().octets());
                buf.put_u16(sa.port());
            }
            Address::Domain(name, port) => {
                // Constructors guarantee 1..=255 bytes; the decoder enforces it on input.
                let len = u8::try_from(name.len()).unwrap_or(u8::MAX);
                buf.put_u8(ATYP_DOMAIN);
                buf.put_u8(len);
                buf.put_slice(&name.as_bytes()[..usize::from(len)]);
                buf.put_u16(*port);
            }
        }
    }
}

inherent_encode!(len: Address);

impl Decode for Address {
    fn decode(buf: &mut impl Buf) -> Result<Self, DecodeError> {
        need(buf, 1)?;
        match buf.get_u8() {
            ATYP_IPV4 => {
                need(buf, 4 + 2)?;
                let mut ip = [0u8; 4];
                buf.copy_to_slice(&mut ip);
                Ok(Address::Ip(SocketAddr::new(Ipv4Addr::from(ip).into(), buf.get_u16())))
            }
            ATYP_IPV6 => {
                need(buf, 16 + 2)?;
                let mut ip = [0u8; 16];
                buf.copy_to_slice(&mut ip);
                Ok(Address::Ip(SocketAddr::new(Ipv6Addr::from(ip).into(), buf.get_u16())))
            }
            ATYP_DOMAIN => {
                need(buf, 1)?;
                let len = usize::from(buf.get_u8());
                need(buf, len + 2)?;
                let mut name = vec![0u8; len];
                buf.copy_to_slice(&mut name);
                let name = check_domain(&name, DomainRule::Wire)?.to_owned();
                Ok(Address::Domain(name, buf.get_u16()))
            }
            other => Err(DecodeError::BadAddressType(other)),
        }
    }
}

impl From<SocketAddr> for Address {
    fn from(sa: SocketAddr) -> Self {
        Address::Ip(sa)
    }
}

impl fmt::Display for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Address::Ip(sa) => write!(f, "{sa}"),
            Address::Domain(name, port) => write!(f, "{name}:{port}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::{decode_exact, decode_prefix};
    use proptest::prelude::*;

    #[test]
    fn decodes_each_type() {
        let v4: Address = decode_exact(&[1, 10, 0, 0, 1, 0x1f, 0x90]).unwrap();
        assert_eq!(v4, Address::Ip("10.0.0.1:8080".parse().unwrap()));
        let mut v6 = vec![4];
        v6.extend_from_slice(&Ipv6Addr::LOCALHOST.octets());
        v6.extend_from_slice(&[0, 80]);
        let v6: Address = decode_exact(&v6).unwrap();
        assert_eq!(v6, Address::Ip("[::1]:80".parse().unwrap()));
        let d: Address = decode_exact(b"\x03\x0bexample.com\x01\xbb").unwrap();
        assert_eq!(d, Address::Domain("example.com".into(), 443));
    }

    #[test]
    fn rejects_bad_input() {
        assert_eq!(decode_exact::<Address>(&[2, 0]), Err(DecodeError::BadAddressType(2)));
        assert_eq!(
            decode_exact::<Address>(b"\x03\x00\x00\x50"),
            Err(DecodeError::BadDomain)
        );
        assert_eq!(
            decode_exact::<Address>(b"\x03\x03a\nb\x00\x50"),
            Err(DecodeError::BadDomain)
        );
        assert_eq!(
            decode_exact::<Address>(b"\x03\x02\xff\xfe\x00\x50"),
            Err(DecodeError::BadDomain)
        );
        // A domain with no port is incomplete, never a panic.
        assert_eq!(decode_exact::<Address>(b"\x03\x03abc"), Err(DecodeError::Incomplete));
        assert_eq!(
            decode_exact::<Address>(&[1, 1, 2, 3, 4, 0, 80, 9]),
            Err(DecodeError::TrailingBytes(1))
        );
    }

    #[test]
    fn domain_rules() {
        use DomainRule::*;
        let ok = |name: &[u8], rule| check_domain(name, rule).is_ok();
        // Every rule: non-empty, no spaces or control characters, at most 255 bytes.
        for rule in [Wire, UriHost, Labels] {
            assert!(ok(b"example.com", rule));
            assert!(!ok(b"", rule));
            assert!(!ok(b"a b", rule));
            assert!(!ok(b"a\nb", rule));
            assert!(!ok(&[b'a'; 256], rule));
        }
        // The wire carries any other UTF-8; a URI host only unreserved characters.
        assert!(ok("bücher.example".as_bytes(), Wire));
        assert!(!ok(b"\xff\xfe", Wire));
        assert!(ok(b"a~b_c-d", UriHost));
        assert_eq!(check_domain(b"a@b", UriHost), Err(DecodeError::BadField("authority")));
        assert_eq!(check_domain(&[b'a'; 256], UriHost), Err(DecodeError::BadDomain));
        // Configuration names are labels: 1..=63 letters, digits, '-' or '_'; 253 bytes in all.
        assert!(ok(b"_srv.my-host.example", Labels));
        assert!(!ok(b"a..b", Labels));
        assert!(!ok(b"a.b~", Labels));
        assert!(!ok(&[b'a'; 64], Labels));
        assert!(ok(&[b'a'; 63], Labels));
        let long = [&[b'a'; 50][..]; 6].join(&b'.');
        assert_eq!(long.len(), 305);
        assert!(!ok(&long[..254], Labels));
        assert!(ok(&long[..253], Labels));
    }

    fn any_address() -> impl Strategy<Value = Address> {
        prop_oneof![
            (any::<IpAddr>(), any::<u16>()).prop_map(|(ip, port)| Address::Ip(SocketAddr::new(ip, port))),
            ("[a-z0-9.-]{1,255}", any::<u16>()).prop_map(|(n, p)| Address::Domain(n, p)),
        ]
    }

    proptest! {
        #[test]
        fn round_trips(addr in any_address()) {
            let mut buf = Vec::new();
            addr.encode(&mut buf);
            prop_assert_eq!(buf.len(), addr.encoded_len());
            prop_assert_eq!(decode_exact::<Address>(&buf), Ok(addr));
            // Every strict prefix is incomplete, not an error or a panic.
            for cut in 0..buf.len() {
                prop_assert_eq!(decode_prefix::<Address>(&buf[..cut]).map(|_| ()), Err(DecodeError::Incomplete));
            }
        }

        #[test]
        fn never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = decode_prefix::<Address>(&bytes);
        }
    }
}
