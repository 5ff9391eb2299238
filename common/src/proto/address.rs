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

use super::{need, Decode, DecodeError, Encode};

pub const ATYP_IPV4: u8 = 0x01;
pub const ATYP_DOMAIN: u8 = 0x03;
pub const ATYP_IPV6: u8 = 0x04;

/// Where a client wants to go: an IP socket address, or a name the remote resolves.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Address {
    Ip(SocketAddr),
    /// A domain name and port; resolved by the remote, never by the local.
    Domain(DomainName, u16),
}

/// A name the wire can carry: 1..=255 bytes of UTF-8 without control characters or spaces
/// ([`DomainRule::Wire`]). The field is private, so a name that does not fit the one-byte
/// length of RFC 1928 §5 cannot be built at all, and [`Address::encode`] never truncates.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DomainName(String);

impl DomainName {
    /// Checks `name` against [`DomainRule::Wire`]; a name over 255 bytes is
    /// [`DecodeError::BadDomain`].
    pub fn new(name: &str) -> Result<DomainName, DecodeError> {
        check_domain(name.as_bytes(), DomainRule::Wire).map(|name| DomainName(name.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::ops::Deref for DomainName {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

impl PartialEq<str> for DomainName {
    fn eq(&self, other: &str) -> bool {
        self.0 == other
    }
}

impl PartialEq<&str> for DomainName {
    fn eq(&self, other: &&str) -> bool {
        self.0 == *other
    }
}

impl fmt::Display for DomainName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
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

    /// Builds a domain address, checking the same rules as the decoder; a name that is an IP
    /// literal in any spelling becomes that IP (see [`Address::from_host`]).
    pub fn domain(name: &str, port: u16) -> Result<Address, DecodeError> {
        Address::from_host(name, port)
    }

    /// The address for a host that arrived as text (SOCKS5 ATYP 0x03, SOCKS4a, an HTTP
    /// authority, a config value): [`ip_literal`] decides whether it is an IP in some
    /// spelling, so routes and the ACL see `127.1`, `0x7f.0.0.1` and `::ffff:127.0.0.1` as
    /// the 127.0.0.1 the resolver would make of them; anything else stays a name. An IP's
    /// IPv4-mapped IPv6 form becomes the IPv4 address. A name the wire cannot carry (over
    /// 255 bytes, control characters: [`DomainName::new`]) is an error, never truncated.
    pub fn from_host(host: &str, port: u16) -> Result<Address, DecodeError> {
        match ip_literal(host.as_bytes()) {
            Some(ip) => Ok(Address::Ip(SocketAddr::new(ip, port))),
            None => Ok(Address::Domain(DomainName::new(host)?, port)),
        }
    }
}

/// Whether the rule name `suffix` matches `name`: the name itself or any subdomain of it,
/// compared as bytes, ASCII case-insensitively, trailing dots ignored on both. The one name
/// comparison of warren (routes on both ends, the remote's ACL); non-ASCII bytes compare
/// exactly and can never split a character.
pub fn name_matches(suffix: &str, name: &str) -> bool {
    let (suffix, name) = (
        suffix.trim_end_matches('.').as_bytes(),
        name.trim_end_matches('.').as_bytes(),
    );
    match name.len().checked_sub(suffix.len()) {
        Some(0) => name.eq_ignore_ascii_case(suffix),
        Some(extra) => {
            name.get(extra - 1) == Some(&b'.')
                && name.get(extra..).is_some_and(|tail| tail.eq_ignore_ascii_case(suffix))
        }
        None => false,
    }
}

/// The IP address `host` spells, if it is one: IPv6 (bracketed or not; an IPv4-mapped one is
/// the IPv4 address), or IPv4 in any form `inet_aton(3)` and the WHATWG URL host parser accept
/// (1 to 4 parts, each decimal, `0x` hex or `0`-led octal, the last filling the remaining
/// bytes: `127.1`, `2130706433`, `0177.0.0.1`), with one trailing dot allowed. These are the
/// spellings the remote's resolver (getaddrinfo) turns into that address without a DNS query,
/// so a rule on the address must see them as it.
pub fn ip_literal(host: &[u8]) -> Option<IpAddr> {
    let host = std::str::from_utf8(host).ok()?;
    let v6 = |text: &str| text.parse::<Ipv6Addr>().ok().map(|ip| IpAddr::V6(ip).to_canonical());
    if let Some(inner) = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        return v6(inner);
    }
    if host.contains(':') {
        return v6(host);
    }
    ipv4_any_spelling(host.strip_suffix('.').unwrap_or(host)).map(IpAddr::V4)
}

/// `inet_aton`'s IPv4 forms: `a.b.c.d`, `a.b.c` (c: 16 bits), `a.b` (b: 24 bits), `a` (32 bits).
fn ipv4_any_spelling(host: &str) -> Option<Ipv4Addr> {
    let mut parts = [0u64; 4];
    let mut count = 0;
    for part in host.split('.') {
        let slot = parts.get_mut(count)?;
        *slot = ipv4_part(part)?;
        count += 1;
    }
    let (last, leading) = parts.get(..count)?.split_last()?;
    if leading.iter().any(|&p| p > 0xff) || *last >= 1u64 << (8 * (5 - count)) {
        return None;
    }
    let value = leading
        .iter()
        .enumerate()
        .fold(*last, |acc, (i, &p)| acc | (p << (8 * (3 - i))));
    u32::try_from(value).ok().map(Ipv4Addr::from)
}

/// One part: `0x`/`0X` hex (an empty `0x` is 0), a `0`-led octal, or decimal.
fn ipv4_part(part: &str) -> Option<u64> {
    let (digits, radix) = if let Some(hex) = part.strip_prefix("0x").or_else(|| part.strip_prefix("0X")) {
        if hex.is_empty() {
            return Some(0);
        }
        (hex, 16)
    } else if let Some(octal) = part.strip_prefix('0').filter(|rest| !rest.is_empty()) {
        (octal, 8)
    } else {
        (part, 10)
    };
    // from_str_radix accepts a leading '+', which no address spelling has.
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    u64::from_str_radix(digits, radix).ok()
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
                // DomainName::new is the only constructor and admits 1..=255 bytes, so the
                // length always fits its byte and the whole name is written.
                let len = u8::try_from(name.len()).unwrap_or(u8::MAX);
                buf.put_u8(ATYP_DOMAIN);
                buf.put_u8(len);
                buf.put_slice(name.as_bytes());
                buf.put_u16(*port);
            }
        }
    }
}

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
                let name = check_domain(&name, DomainRule::Wire)?;
                Address::from_host(name, buf.get_u16())
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
        assert_eq!(d, Address::domain("example.com", 443).unwrap());
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
    fn ip_literals_in_every_spelling() {
        let v4 = |s: &str| Some(IpAddr::V4(s.parse().unwrap()));
        for spelling in [
            "127.0.0.5",
            "127.0.0.5.",
            "127.0.5",
            "127.5",
            "2130706437",
            "0x7f.0.0.5",
            "0X7F.0x0.0x0.0x5",
            "0177.0.0.05",
            "0x7f000005",
            "::ffff:127.0.0.5",
            "[::ffff:127.0.0.5]",
            "::FFFF:7F00:5",
        ] {
            assert_eq!(ip_literal(spelling.as_bytes()), v4("127.0.0.5"), "{spelling}");
        }
        assert_eq!(ip_literal(b"0x"), v4("0.0.0.0"));
        assert_eq!(ip_literal(b"[::1]"), Some(IpAddr::V6(Ipv6Addr::LOCALHOST)));
        assert_eq!(ip_literal(b"::1"), Some(IpAddr::V6(Ipv6Addr::LOCALHOST)));
        for name in [
            "example.com",
            "1.2.3.4.5",
            "256.0.0.1",
            "1.2.3.256",
            "1.2.65536",
            "4294967296",
            "08.0.0.1",
            "0x1g.0.0.1",
            "+1.2.3.4",
            "1..2",
            "1.2.3.4..",
            "",
            "[::1",
            "::1]",
            "fe80::1%eth0",
            "1.2.3.4:80",
        ] {
            assert_eq!(ip_literal(name.as_bytes()), None, "{name}");
        }
        assert_eq!(ip_literal(&[0xff, b'1']), None, "not UTF-8");
        assert_eq!(
            Address::from_host("127.1", 80),
            Ok(Address::Ip("127.0.0.1:80".parse().unwrap()))
        );
        assert_eq!(
            Address::from_host("a.example", 80).map(|a| a.to_string()),
            Ok("a.example:80".to_owned())
        );
        let mut wire = vec![ATYP_DOMAIN, 9];
        wire.extend_from_slice(b"127.0.0.5\x00\x50");
        assert_eq!(
            decode_exact::<Address>(&wire),
            Ok(Address::Ip("127.0.0.5:80".parse().unwrap()))
        );
    }

    #[test]
    fn names_match_as_bytes() {
        assert!(name_matches("campus.edu", "campus.edu"));
        assert!(name_matches("campus.edu", "WWW.Campus.EDU."));
        assert!(name_matches("campus.edu.", "www.campus.edu"));
        assert!(!name_matches("campus.edu", "notcampus.edu"));
        assert!(!name_matches("campus.edu", "edu"));
        // Non-ASCII bytes compare exactly, and a rule never splits a character.
        assert!(!name_matches("corp.example", "éorp.example"));
        assert!(!name_matches("orp.example", "éorp.example"));
        assert!(name_matches("orp.example", "é.orp.example"));
        assert!(!name_matches("é.example", "É.example"), "only ASCII folds case");
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

    #[test]
    fn names_over_255_bytes_cannot_be_built() {
        let name = "a".repeat(255);
        let addr = Address::domain(&name, 80).unwrap();
        let mut buf = Vec::new();
        addr.encode(&mut buf);
        assert_eq!(buf.len(), addr.encoded_len());
        assert_eq!(decode_exact::<Address>(&buf), Ok(addr));
        let long = "a".repeat(256);
        assert_eq!(DomainName::new(&long), Err(DecodeError::BadDomain));
        assert_eq!(Address::domain(&long, 80), Err(DecodeError::BadDomain));
        assert_eq!(Address::from_host(&long, 80), Err(DecodeError::BadDomain));
    }

    fn any_address() -> impl Strategy<Value = Address> {
        prop_oneof![
            (any::<IpAddr>(), any::<u16>()).prop_map(|(ip, port)| Address::Ip(SocketAddr::new(ip, port))),
            ("[a-z0-9.-]{1,255}", any::<u16>())
                .prop_filter("a name, not an IP literal", |(n, _)| crate::proto::address::ip_literal(
                    n.as_bytes()
                )
                .is_none())
                .prop_map(|(n, p)| Address::domain(&n, p).unwrap()),
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
