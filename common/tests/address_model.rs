//! One address model for every rule (issue 10, item 4): a host that is an IP literal in any
//! spelling is that IP for the routers and the ACL, whichever codec it arrived through, and no
//! byte string a client can send panics a rule check. Property tests over the public API.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use proptest::prelude::*;
use warren_common::acl::{Acl, Rule as AclRule, Verdict};
use warren_common::proto::address::{ip_literal, Address, DomainName};
use warren_common::proto::http::parse_authority;
use warren_common::proto::socks4;
use warren_common::proto::{decode_exact, Decode};
use warren_common::route::{Matcher, Router, Rule};

/// Spellings of `ip` that `inet_aton` (and so the remote's resolver) reads as `ip`.
fn spellings(ip: Ipv4Addr) -> Vec<String> {
    let [a, b, c, d] = ip.octets();
    let n = u32::from(ip);
    vec![
        format!("{a}.{b}.{c}.{d}"),
        format!("{a}.{b}.{c}.{d}."),
        format!("{a}.{b}.{}", (u32::from(c) << 8) | u32::from(d)),
        format!("{a}.{}", n & 0x00ff_ffff),
        format!("{n}"),
        format!("{n:#x}"),
        format!("0x{a:x}.0x{b:X}.0x{c:x}.0x{d:x}"),
        format!("0{a:o}.0{b:o}.0{c:o}.0{d:o}"),
        format!("::ffff:{ip}"),
        format!("[::ffff:{ip}]"),
        format!("::FFFF:{:x}:{:x}", n >> 16, n & 0xffff),
    ]
}

/// The SOCKS5 ATYP 0x03 form of `name`.
fn socks5_name(name: &str, port: u16) -> Option<Address> {
    let mut wire = vec![0x03, u8::try_from(name.len()).ok()?];
    wire.extend_from_slice(name.as_bytes());
    wire.extend_from_slice(&port.to_be_bytes());
    decode_exact::<Address>(&wire).ok()
}

/// The SOCKS4a request form of `name`.
fn socks4a_name(name: &str, port: u16) -> Option<Address> {
    let mut wire = vec![4, 1];
    wire.extend_from_slice(&port.to_be_bytes());
    wire.extend_from_slice(&[0, 0, 0, 1, b'u', 0]);
    wire.extend_from_slice(name.as_bytes());
    wire.push(0);
    let mut bytes = &wire[..];
    socks4::Request::decode(&mut bytes).ok().map(|r| r.target)
}

fn blocking(cidr: &str) -> Router<bool> {
    let matcher = Matcher::parse(None, Some(cidr), None).expect("valid cidr");
    Router {
        rules: vec![Rule { matcher, action: true }],
        default: false,
    }
}

proptest! {
    #[test]
    fn every_spelling_of_a_blocked_address_is_blocked(octets in any::<[u8; 4]>(), port in 1u16..) {
        let ip = Ipv4Addr::from(octets);
        let router = blocking(&format!("{ip}/32"));
        let acl = Acl::new(vec![AclRule::parse(Verdict::Deny, &format!("{ip}/32")).unwrap()]);
        let want = Address::Ip(SocketAddr::new(IpAddr::V4(ip), port));
        for spelling in spellings(ip) {
            prop_assert_eq!(ip_literal(spelling.as_bytes()), Some(IpAddr::V4(ip)), "{}", spelling);
            let mut arrived = vec![socks5_name(&spelling, port), socks4a_name(&spelling, port)];
            let authority = if spelling.contains(':') && !spelling.starts_with('[') {
                format!("[{spelling}]:{port}")
            } else {
                format!("{spelling}:{port}")
            };
            arrived.push(parse_authority(&authority, None).ok());
            for address in arrived.into_iter().flatten() {
                prop_assert_eq!(&address, &want, "{}", spelling);
                prop_assert!(*router.route(&address), "{} routed around the block", spelling);
                if let Address::Ip(sa) = address {
                    prop_assert_eq!(acl.check(None, sa.ip()), Verdict::Deny, "{}", spelling);
                }
            }
        }
    }

    #[test]
    fn no_name_panics_a_rule(name in proptest::collection::vec(any::<u8>(), 1..300), rule in "[a-z]{1,10}(\\.[a-z]{1,10}){0,2}") {
        let name = String::from_utf8_lossy(&name).into_owned();
        let acl = Acl::new(vec![AclRule::parse(Verdict::Deny, &format!("{rule}x")).unwrap()]);
        let _ = acl.check_name(&name);
        let _ = acl.check(Some(&name), IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1)));
        let _ = ip_literal(name.as_bytes());
        let matcher = Matcher::parse(Some(&format!("{rule}x")), None, None).unwrap();
        let router = Router { rules: vec![Rule { matcher, action: true }], default: false };
        // A name the wire cannot carry cannot be an Address at all (DomainName::new).
        if let Ok(name) = DomainName::new(&name) {
            let _ = router.route(&Address::Domain(name, 80));
        }
    }
}

#[test]
fn a_non_ascii_name_against_a_name_rule() {
    let acl = Acl::new(vec![AclRule::parse(Verdict::Deny, "corp.example").unwrap()]);
    assert_eq!(acl.check_name("éorp.example"), None, "not the rule's name");
    assert_eq!(acl.check_name("intranet.CORP.example."), Some(Verdict::Deny));
}
