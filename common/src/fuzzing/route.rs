//! Fuzz target `route`: routing and ACL decisions on arbitrary names, IPs and ports against a
//! fixed [`Router`] and [`Acl`] (`route.rs`, `acl.rs`), and the rule parsers on arbitrary
//! config strings. Beyond "no panic" it checks what the matchers promise: a name matches
//! case-insensitively and with or without its trailing dot, and an IP literal in any spelling
//! routes exactly like its canonical form.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use crate::acl::{self, Acl, Verdict};
use crate::proto::address::{check_domain, ip_literal, name_matches, Address, DomainName, DomainRule};
use crate::route::{Matcher, RemoteAction, Router, Rule};

use super::selector;

/// Runs the check chosen by `data[0]` over the rest.
pub fn route(data: &[u8]) {
    let Some((which, bytes)) = selector(data) else {
        return;
    };
    match which % 3 {
        0 => names(bytes),
        1 => matcher_parse(bytes),
        _ => acl_parse(bytes),
    }
}

fn router() -> Router<RemoteAction> {
    let rule = |domain, cidr, port, action| Rule {
        matcher: Matcher::parse(domain, cidr, port).unwrap_or_else(|e| panic!("{e}")),
        action,
    };
    let via = |name: &str| RemoteAction::Via(name.to_owned());
    Router {
        rules: vec![
            rule(Some("campus.edu"), None, Some("80-443"), via("campus")),
            rule(None, Some("10.0.0.0/8"), None, via("lab")),
            rule(None, Some("2001:db8::/32"), Some("22"), via("v6")),
            rule(Some("Example.COM."), None, None, via("example")),
            rule(None, Some("127.0.0.1"), Some("1-1023"), RemoteAction::Direct),
        ],
        default: via("default"),
    }
}

fn acl() -> Acl {
    let rule = |verdict, value| acl::Rule::parse(verdict, value).unwrap_or_else(|e| panic!("{e}"));
    let mut acl = Acl::new(vec![
        rule(Verdict::Deny, "blocked.example"),
        rule(Verdict::Allow, "127.0.0.2"),
        rule(Verdict::Deny, "192.168.0.0/16"),
        rule(Verdict::Allow, "internal.example"),
        rule(Verdict::Deny, "fd00::/8"),
    ]);
    acl.deny_own_addresses([IpAddr::V4(Ipv4Addr::new(203, 0, 113, 1))]);
    acl
}

/// `bytes` = port (2 bytes, BE) | name: the name as a target, as a tunnel header would carry it.
fn names(bytes: &[u8]) {
    let (port, name) = match bytes {
        [hi, lo, name @ ..] => (u16::from_be_bytes([*hi, *lo]), name),
        _ => return,
    };
    let Ok(name) = check_domain(name, DomainRule::Wire) else {
        return;
    };
    let (router, acl) = (router(), acl());
    // A checked wire name always builds (at most 255 bytes).
    let Ok(target) = Address::from_host(name, port) else {
        return;
    };
    let action = router.route(&target);
    match ip_literal(name.as_bytes()) {
        Some(ip) => {
            // Any spelling (hex, octal, short forms, brackets, mapped IPv6) is that IP.
            assert_eq!(target, Address::Ip(SocketAddr::new(ip, port)));
            let canonical = Address::Ip(SocketAddr::new(ip, port));
            assert_eq!(router.route(&canonical), action, "{name:?} routed unlike {ip}");
            assert_eq!(ip_literal(ip.to_string().as_bytes()), Some(ip));
            assert_eq!(acl.check(None, ip), acl.check(None, ip.to_canonical()));
        }
        None => {
            for variant in [name.to_ascii_uppercase(), name.to_ascii_lowercase(), format!("{name}.")] {
                if check_domain(variant.as_bytes(), DomainRule::Wire).is_ok()
                    && ip_literal(variant.as_bytes()).is_none()
                {
                    let Ok(variant) = DomainName::new(&variant).map(|v| Address::Domain(v, port)) else {
                        continue;
                    };
                    assert_eq!(router.route(&variant), action, "{name:?} routed unlike {variant}");
                }
            }
            let verdict = acl.check_name(name);
            for ip in [Ipv4Addr::new(8, 8, 8, 8), Ipv4Addr::new(127, 0, 0, 1)] {
                let _ = acl.check(Some(name), IpAddr::V4(ip));
            }
            if let Some(verdict) = verdict {
                // A name rule that decides before any IP rule decides for every public address.
                assert_eq!(acl.check(Some(name), IpAddr::V4(Ipv4Addr::new(8, 8, 8, 8))), verdict);
            }
            assert!(name_matches(name, name));
            let trimmed = name.trim_end_matches('.');
            if !trimmed.is_empty() && trimmed.len() < 250 {
                assert!(name_matches(name, &format!("www.{name}")), "a subdomain of {name:?}");
            }
        }
    }
}

/// Three config strings separated by `\n` (an empty one is absent): domain, cidr, port.
fn matcher_parse(bytes: &[u8]) {
    let text = String::from_utf8_lossy(bytes);
    let mut parts = text.splitn(3, '\n').map(|p| Some(p).filter(|p| !p.is_empty()));
    let (domain, cidr, port) = (parts.next().flatten(), parts.next().flatten(), parts.next().flatten());
    let Ok(matcher) = Matcher::parse(domain, cidr, port) else {
        return;
    };
    // What parse kept parses to itself: the config's normal form is a fixed point.
    let cidr = matcher.cidr.map(|net| net.to_string());
    let ports = matcher.ports.as_ref().map(|r| format!("{}-{}", r.start(), r.end()));
    let again = Matcher::parse(matcher.domain.as_deref(), cidr.as_deref(), ports.as_deref());
    assert_eq!(again.as_ref(), Ok(&matcher));
    if let Ok(name) = DomainName::new("www.example.com") {
        let _ = matcher.matches(&Address::Domain(name, 443));
    }
    let _ = matcher.matches(&Address::Ip(SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 80)));
}

/// A whole input as one ACL rule's value, checked against a few addresses and names.
fn acl_parse(bytes: &[u8]) {
    let text = String::from_utf8_lossy(bytes);
    for verdict in [Verdict::Allow, Verdict::Deny] {
        let Ok(rule) = acl::Rule::parse(verdict, &text) else {
            return;
        };
        let acl = Acl::new(vec![rule]);
        for ip in [
            Ipv4Addr::new(8, 8, 8, 8),
            Ipv4Addr::new(10, 1, 2, 3),
            Ipv4Addr::LOCALHOST,
        ] {
            let _ = acl.check(Some(text.trim()), IpAddr::V4(ip));
            let _ = acl.check(None, IpAddr::V6(ip.to_ipv6_mapped()));
        }
        let _ = acl.check_name(text.trim());
    }
}
