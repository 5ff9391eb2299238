//! The remote's outbound ACL: an ordered list of allow/deny rules, first match wins.
//!
//! A rule's value is an IP address, a CIDR block, or a domain name (which matches itself and
//! its subdomains). Name rules test the name the client asked for; IP rules test the target
//! address, and for a domain target every address the name resolves to, so a name cannot be
//! used to reach an address the rules deny (DNS rebinding). A target that matches no rule is
//! allowed, except the built-in denies: the remote host's own loopback, unspecified ("this
//! host") and link-local addresses, the addresses of its own interfaces (enumerated when the
//! remote starts, [`Acl::deny_own_addresses`]: a client must not reach a service bound on the
//! VPS's public or private address), and the cloud metadata services outside link-local. Only an
//! IP or CIDR `allow` lifts a built-in deny: a name rule such as `allow: localhost` does not,
//! since a name can resolve anywhere. IPv4-mapped IPv6 addresses are checked as the IPv4
//! address they carry.

use std::net::IpAddr;

use ipnet::IpNet;

use crate::proto::address::{check_domain, name_matches, Address, DomainRule};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Allow,
    Deny,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Matcher {
    Net(IpNet),
    /// Lower-case, without a trailing dot.
    Domain(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    verdict: Verdict,
    matcher: Matcher,
}

impl Rule {
    /// Parses a rule value: an IP, a CIDR, or a domain name.
    pub fn parse(verdict: Verdict, value: &str) -> Result<Rule, String> {
        let value = value.trim();
        let matcher = if let Ok(ip) = value.parse::<IpAddr>() {
            Matcher::Net(IpNet::from(ip.to_canonical()))
        } else if let Ok(net) = value.parse::<IpNet>() {
            Matcher::Net(net.trunc())
        } else if value.contains('/') {
            return Err(format!("{value:?} is not a valid CIDR block"));
        } else {
            let name = value.trim_end_matches('.').to_ascii_lowercase();
            if check_domain(name.as_bytes(), DomainRule::Labels).is_err() {
                return Err(format!("{value:?} is not an IP address, a CIDR block or a domain name"));
            }
            Matcher::Domain(name)
        };
        Ok(Rule { verdict, matcher })
    }
}

/// Cloud metadata services at addresses outside link-local (169.254.169.254 is link-local):
/// AWS's IPv6 endpoint, Alibaba Cloud's, Azure's wire server.
const METADATA: [IpAddr; 3] = [
    IpAddr::V6(std::net::Ipv6Addr::new(0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x254)),
    IpAddr::V4(std::net::Ipv4Addr::new(100, 100, 100, 200)),
    IpAddr::V4(std::net::Ipv4Addr::new(168, 63, 129, 16)),
];

/// Whether `ip` (canonical) is one of the host-independent built-in denies.
fn special(ip: IpAddr) -> bool {
    let special = match ip {
        IpAddr::V4(v4) => v4.is_loopback() || v4.is_link_local() || v4.octets()[0] == 0,
        IpAddr::V6(v6) => v6.is_loopback() || v6.is_unspecified() || (v6.segments()[0] & 0xffc0) == 0xfe80,
    };
    special || METADATA.contains(&ip)
}

/// The rule as the config spells it, for `check`: `allow: VALUE` or `deny: VALUE`.
impl std::fmt::Display for Rule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let verdict = match self.verdict {
            Verdict::Allow => "allow",
            Verdict::Deny => "deny",
        };
        match &self.matcher {
            Matcher::Net(net) => write!(f, "{verdict}: {net}"),
            Matcher::Domain(name) => write!(f, "{verdict}: {name}"),
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Acl {
    rules: Vec<Rule>,
    /// This host's own interface addresses (canonical, sorted): built-in denies too.
    own: Vec<IpAddr>,
}

impl Acl {
    pub fn new(rules: Vec<Rule>) -> Acl {
        Acl { rules, own: Vec::new() }
    }

    /// The configured rules, in order (the built-in denies are not among them).
    pub fn rules(&self) -> &[Rule] {
        &self.rules
    }

    /// Adds `addrs`, the addresses of this host's own interfaces, to the built-in denies: like
    /// loopback, only an IP or CIDR `allow` opens them. The remote calls this once at start, so
    /// an address the host gains later is not covered.
    pub fn deny_own_addresses(&mut self, addrs: impl IntoIterator<Item = IpAddr>) {
        self.own.extend(addrs.into_iter().map(|ip| ip.to_canonical()));
        self.own.sort_unstable();
        self.own.dedup();
    }

    /// Whether `ip` (canonical) is denied unless an IP or CIDR rule allows it.
    fn built_in_deny(&self, ip: IpAddr) -> bool {
        special(ip) || self.own.binary_search(&ip).is_ok()
    }

    /// The verdict for connecting to `ip`, reached by way of the name `name` if there is one.
    pub fn check(&self, name: Option<&str>, ip: IpAddr) -> Verdict {
        let ip = ip.to_canonical();
        let guarded = self.built_in_deny(ip);
        for rule in &self.rules {
            let hit = match (&rule.matcher, name) {
                (Matcher::Net(net), _) => net.contains(&ip),
                // A name allow never lifts a built-in deny; a later IP rule still may.
                (Matcher::Domain(_), _) if guarded && rule.verdict == Verdict::Allow => false,
                (Matcher::Domain(d), Some(name)) => name_matches(d, name),
                (Matcher::Domain(_), None) => false,
            };
            if hit {
                return rule.verdict;
            }
        }
        if guarded {
            Verdict::Deny
        } else {
            Verdict::Allow
        }
    }

    /// The verdict for a name before resolving it, when the rules already settle it for every
    /// address it could resolve to (a matching name rule with no IP rule ahead of it). Lets a
    /// denied name be refused without a DNS query.
    pub fn check_name(&self, name: &str) -> Option<Verdict> {
        for rule in &self.rules {
            match &rule.matcher {
                Matcher::Net(_) => return None,
                Matcher::Domain(d) if name_matches(d, name) => return Some(rule.verdict),
                Matcher::Domain(_) => {}
            }
        }
        None
    }

    /// The verdict of the first rule that matches `target` as it was asked for, an IP or CIDR
    /// rule for an address and a name rule for a name, with no lookup and no built-in denies;
    /// `None` when no rule matches. For a request this remote forwards (to an agent, which
    /// applies its own ACL where it connects): a user's own rules still hold on the way.
    pub fn rule_for(&self, target: &Address) -> Option<Verdict> {
        self.rules.iter().find_map(|rule| {
            let hit = match (&rule.matcher, target) {
                (Matcher::Net(net), Address::Ip(addr)) => net.contains(&addr.ip().to_canonical()),
                (Matcher::Domain(d), Address::Domain(name, _)) => name_matches(d, name.as_str()),
                _ => false,
            };
            hit.then_some(rule.verdict)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn acl(rules: &[(Verdict, &str)]) -> Acl {
        Acl::new(rules.iter().map(|(v, s)| Rule::parse(*v, s).unwrap()).collect())
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn defaults_deny_own_host_only() {
        let a = Acl::default();
        for denied in [
            "127.0.0.1",
            "127.9.9.9",
            "::1",
            "0.0.0.0",
            "::",
            "169.254.1.1",
            "fe80::1",
            "::ffff:127.0.0.1",
        ] {
            assert_eq!(a.check(None, ip(denied)), Verdict::Deny, "{denied}");
        }
        for allowed in ["10.0.0.1", "192.0.2.1", "2001:db8::1"] {
            assert_eq!(a.check(None, ip(allowed)), Verdict::Allow, "{allowed}");
        }
    }

    #[test]
    fn first_match_wins_and_names_resolve_through_ip_rules() {
        use Verdict::*;
        let a = acl(&[
            (Allow, "127.0.0.0/8"),
            (Deny, "10.1.0.0/16"),
            (Deny, "corp.example"),
            (Allow, "10.0.0.0/8"),
        ]);
        assert_eq!(a.check(None, ip("127.0.0.1")), Allow);
        assert_eq!(a.check(None, ip("10.1.2.3")), Deny);
        assert_eq!(a.check(None, ip("10.2.2.3")), Allow);
        // A name that resolves into a denied block is denied (no DNS-rebinding way around).
        assert_eq!(a.check(Some("evil.test"), ip("10.1.0.5")), Deny);
        assert_eq!(a.check(Some("www.CORP.example."), ip("10.2.0.5")), Deny);
        assert_eq!(a.check(Some("notcorp.example"), ip("10.2.0.5")), Allow);
        // An IP rule comes first, so the name alone does not settle it.
        assert_eq!(a.check_name("corp.example"), None);
        let b = acl(&[(Deny, "corp.example"), (Allow, "::1")]);
        assert_eq!(b.check_name("a.corp.example"), Some(Deny));
        assert_eq!(b.check_name("other.example"), None);
        assert_eq!(b.check(Some("localhost"), ip("::1")), Allow);
    }

    #[test]
    fn only_an_ip_rule_lifts_a_built_in_deny() {
        use Verdict::*;
        let by_name = acl(&[(Allow, "localhost"), (Allow, "metadata.example")]);
        for (name, addr) in [
            ("localhost", "127.0.0.1"),
            ("localhost", "::1"),
            ("metadata.example", "fd00:ec2::254"),
            ("metadata.example", "100.100.100.200"),
            ("metadata.example", "168.63.129.16"),
            ("metadata.example", "169.254.169.254"),
        ] {
            assert_eq!(by_name.check(Some(name), ip(addr)), Deny, "{name} -> {addr}");
        }
        // The name rule still allows what it names elsewhere, and an IP rule lifts the deny.
        assert_eq!(by_name.check(Some("localhost"), ip("192.0.2.1")), Allow);
        let by_ip = acl(&[(Allow, "localhost"), (Allow, "127.0.0.1")]);
        assert_eq!(by_ip.check(Some("localhost"), ip("127.0.0.1")), Allow);
        assert_eq!(by_ip.check(None, ip("127.0.0.2")), Deny);
        assert_eq!(acl(&[]).check(None, ip("100.100.100.200")), Deny);
    }

    #[test]
    fn own_addresses_are_built_in_denies() {
        use Verdict::*;
        let mut a = acl(&[(Allow, "vps.example"), (Allow, "10.0.0.0/8")]);
        a.deny_own_addresses([ip("192.0.2.5"), ip("2001:db8::5"), ip("::ffff:198.51.100.5")]);
        for own in ["192.0.2.5", "::ffff:192.0.2.5", "2001:db8::5", "198.51.100.5"] {
            assert_eq!(a.check(None, ip(own)), Deny, "{own}");
            assert_eq!(a.check(Some("vps.example"), ip(own)), Deny, "vps.example -> {own}");
        }
        assert_eq!(a.check(None, ip("192.0.2.6")), Allow);
        // An IP or CIDR allow lifts it, like any built-in deny.
        a.deny_own_addresses([ip("10.0.0.5")]);
        assert_eq!(a.check(None, ip("10.0.0.5")), Allow);
        let mut b = acl(&[(Allow, "192.0.2.5/32")]);
        b.deny_own_addresses([ip("192.0.2.5")]);
        assert_eq!(b.check(Some("vps.example"), ip("192.0.2.5")), Allow);
    }

    #[test]
    fn rule_values_are_validated() {
        assert!(Rule::parse(Verdict::Allow, "10.0.0.0/33").is_err());
        assert!(Rule::parse(Verdict::Allow, "bad name!").is_err());
        assert!(Rule::parse(Verdict::Allow, "").is_err());
        assert!(Rule::parse(Verdict::Allow, "2001:db8::/32").is_ok());
    }
}
