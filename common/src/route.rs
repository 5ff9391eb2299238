//! Routing rules: which way a target goes (issue #5, items 2 and 4).
//!
//! A [`Router`] is an ordered list of [`Rule`]s, first match wins, with a default action. A rule
//! matches on any combination of a domain suffix, a CIDR block and a port range; every condition
//! it names must hold. The action type is generic so the local (`direct` | `proxy: <name>` |
//! `block`) and the remote (`direct` | `via: <agent>`) share the matcher. Pure: no sockets, no
//! DNS; a domain target is matched by name only, an IP target by address only.

use std::net::IpAddr;
use std::ops::RangeInclusive;

use ipnet::IpNet;

use crate::proto::address::{check_domain, name_matches, Address, DomainRule};

/// A rule that could not be built from its configuration values.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RouteError {
    /// The domain value is not a domain name.
    #[error("{0:?} is not a domain name")]
    Domain(String),
    /// The cidr value is not an IP address or CIDR block.
    #[error("{0:?} is not an IP address or CIDR block")]
    Cidr(String),
    /// The port value is not `N` or `N-M` with 1 <= N <= M <= 65535.
    #[error("{0:?} is not a port or port range (N or N-M)")]
    Port(String),
    /// A rule with no condition would shadow every later rule; use the default instead.
    #[error("a rule needs at least one of domain, cidr, port")]
    Empty,
}

/// The conditions of one rule; all present ones must match.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Matcher {
    /// Lower-case, no trailing dot; matches itself and its subdomains.
    pub domain: Option<String>,
    pub cidr: Option<IpNet>,
    pub ports: Option<RangeInclusive<u16>>,
}

impl Matcher {
    /// Builds a matcher from the optional config strings.
    pub fn parse(domain: Option<&str>, cidr: Option<&str>, port: Option<&str>) -> Result<Matcher, RouteError> {
        if domain.is_none() && cidr.is_none() && port.is_none() {
            return Err(RouteError::Empty);
        }
        let domain = domain.map(parse_domain).transpose()?;
        let cidr = cidr
            .map(|c| {
                let c = c.trim();
                c.parse::<IpNet>()
                    .map(|n| n.trunc())
                    .or_else(|_| c.parse::<IpAddr>().map(IpNet::from))
                    .map_err(|_| RouteError::Cidr(c.to_string()))
            })
            .transpose()?;
        let ports = port.map(parse_ports).transpose()?;
        Ok(Matcher { domain, cidr, ports })
    }

    /// Whether a connection to `name`, on some port, satisfies every condition: a rule with
    /// a CIDR never does (a name is not an address), a port condition is left open. `name` may
    /// be any text (a DNS query's name, lossily decoded): matching is by label suffix.
    pub fn may_match_name(&self, name: &str) -> bool {
        if self.cidr.is_some() {
            return false;
        }
        self.domain.as_ref().is_none_or(|suffix| name_matches(suffix, name))
    }

    /// Whether `target` satisfies every condition.
    pub fn matches(&self, target: &Address) -> bool {
        if let Some(ports) = &self.ports {
            if !ports.contains(&target.port()) {
                return false;
            }
        }
        if let Some(suffix) = &self.domain {
            match target {
                Address::Domain(name, _) if name_matches(suffix, name) => {}
                _ => return false,
            }
        }
        if let Some(net) = &self.cidr {
            match target {
                Address::Ip(sa) if net.contains(&sa.ip().to_canonical()) => {}
                _ => return false,
            }
        }
        true
    }
}

fn parse_domain(value: &str) -> Result<String, RouteError> {
    let name = value
        .trim()
        .trim_start_matches('.')
        .trim_end_matches('.')
        .to_ascii_lowercase();
    if check_domain(name.as_bytes(), DomainRule::Labels).is_ok() {
        Ok(name)
    } else {
        Err(RouteError::Domain(value.to_string()))
    }
}

fn parse_ports(value: &str) -> Result<RangeInclusive<u16>, RouteError> {
    let err = || RouteError::Port(value.to_string());
    let (lo, hi) = match value.trim().split_once('-') {
        Some((a, b)) => (a.trim(), b.trim()),
        None => (value.trim(), value.trim()),
    };
    let lo: u16 = lo.parse().map_err(|_| err())?;
    let hi: u16 = hi.parse().map_err(|_| err())?;
    if lo == 0 || lo > hi {
        return Err(err());
    }
    Ok(lo..=hi)
}

/// The matcher as the config spells it, for `check`: `domain: D, cidr: C, port: P` (the
/// conditions it has, in that order; a one-port range prints as that port).
impl std::fmt::Display for Matcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut parts = Vec::new();
        if let Some(domain) = &self.domain {
            parts.push(format!("domain: {domain}"));
        }
        if let Some(cidr) = &self.cidr {
            parts.push(format!("cidr: {cidr}"));
        }
        if let Some(ports) = &self.ports {
            parts.push(if ports.start() == ports.end() {
                format!("port: {}", ports.start())
            } else {
                format!("port: {}-{}", ports.start(), ports.end())
            });
        }
        f.write_str(&parts.join(", "))
    }
}

/// One rule: conditions and the action taken when they hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule<A> {
    pub matcher: Matcher,
    pub action: A,
}

/// Where warren-remote sends a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RemoteAction {
    /// Connect from this machine.
    Direct,
    /// Forward to the reverse-tunnel agent registered under this name.
    Via(String),
}

/// Ordered rules, first match wins, then the default.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Router<A> {
    pub rules: Vec<Rule<A>>,
    pub default: A,
}

impl<A> Router<A> {
    /// The action for `target`.
    pub fn route(&self, target: &Address) -> &A {
        self.rules
            .iter()
            .find(|r| r.matcher.matches(target))
            .map_or(&self.default, |r| &r.action)
    }

    /// Every action a connection to `name` could take, whatever its port, in rule order: each
    /// rule that may match the name, up to the first that matches it on every port, else
    /// through the default. Where a NAME is resolved (the DNS forwarder, RESOLVE) follows from
    /// these: if any goes through a tunnel, so must the lookup, or that connection would have
    /// been preceded by a query in the clear.
    pub fn actions_for_name(&self, name: &str) -> Vec<&A> {
        let mut actions = Vec::new();
        for rule in &self.rules {
            if rule.matcher.may_match_name(name) {
                actions.push(&rule.action);
                if rule.matcher.ports.is_none() {
                    return actions;
                }
            }
        }
        actions.push(&self.default);
        actions
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> Address {
        Address::Ip(s.parse().unwrap())
    }
    fn dom(n: &str, p: u16) -> Address {
        Address::domain(n, p).unwrap()
    }

    #[test]
    fn domain_suffix_is_label_aligned_and_case_insensitive() {
        assert!(name_matches("campus.edu", "campus.edu"));
        assert!(name_matches("campus.edu", "WWW.Campus.EDU."));
        assert!(!name_matches("campus.edu", "notcampus.edu"));
        assert!(!name_matches("campus.edu", "edu"));
    }

    #[test]
    fn all_conditions_must_hold() {
        let m = Matcher::parse(Some(".Campus.edu"), None, Some("80-443")).unwrap();
        assert!(m.matches(&dom("lib.campus.edu", 443)));
        assert!(!m.matches(&dom("lib.campus.edu", 22)));
        assert!(!m.matches(&ip("10.0.0.1:80")));
        let c = Matcher::parse(None, Some("10.1.2.3/16"), None).unwrap();
        assert_eq!(c.cidr.unwrap().to_string(), "10.1.0.0/16");
        assert!(c.matches(&ip("10.1.200.1:5")));
        assert!(c.matches(&ip("[::ffff:10.1.0.9]:5")));
        assert!(!c.matches(&ip("10.2.0.1:5")));
        assert!(!c.matches(&dom("x.test", 5)));
    }

    #[test]
    fn bad_values_name_the_problem() {
        assert_eq!(Matcher::parse(None, None, None), Err(RouteError::Empty));
        assert!(matches!(
            Matcher::parse(Some("a b"), None, None),
            Err(RouteError::Domain(_))
        ));
        assert!(matches!(
            Matcher::parse(None, Some("10.0.0.0/33"), None),
            Err(RouteError::Cidr(_))
        ));
        for p in ["0", "70000", "9-3", "x", "1-"] {
            assert!(
                matches!(Matcher::parse(None, None, Some(p)), Err(RouteError::Port(_))),
                "{p}"
            );
        }
    }

    #[test]
    fn a_name_may_take_every_action_its_port_conditioned_rules_allow() {
        let r = Router {
            rules: vec![
                Rule {
                    matcher: Matcher::parse(Some("campus.edu"), None, Some("80-443")).unwrap(),
                    action: "tunnel",
                },
                Rule {
                    matcher: Matcher::parse(None, Some("10.0.0.0/8"), None).unwrap(),
                    action: "cidr",
                },
                Rule {
                    matcher: Matcher::parse(None, None, Some("25")).unwrap(),
                    action: "block",
                },
                Rule {
                    matcher: Matcher::parse(Some("lib.campus.edu"), None, None).unwrap(),
                    action: "lib",
                },
            ],
            default: "direct",
        };
        assert_eq!(r.actions_for_name("wiki.campus.edu"), [&"tunnel", &"block", &"direct"]);
        assert_eq!(r.actions_for_name("x.LIB.campus.edu"), [&"tunnel", &"block", &"lib"]);
        assert_eq!(r.actions_for_name("example.org"), [&"block", &"direct"]);
        // Any text: a name no address type could carry still matches by its labels.
        assert_eq!(
            r.actions_for_name("Room 101._ipp._tcp.campus.edu"),
            [&"tunnel", &"block", &"direct"]
        );
    }

    #[test]
    fn first_match_wins_then_default() {
        let r = Router {
            rules: vec![
                Rule {
                    matcher: Matcher::parse(Some("ads.campus.edu"), None, None).unwrap(),
                    action: "block",
                },
                Rule {
                    matcher: Matcher::parse(Some("campus.edu"), None, None).unwrap(),
                    action: "campus",
                },
                Rule {
                    matcher: Matcher::parse(None, Some("10.0.0.0/8"), None).unwrap(),
                    action: "campus",
                },
            ],
            default: "direct",
        };
        assert_eq!(*r.route(&dom("x.ads.campus.edu", 80)), "block");
        assert_eq!(*r.route(&dom("wiki.campus.edu", 80)), "campus");
        assert_eq!(*r.route(&ip("10.9.9.9:80")), "campus");
        assert_eq!(*r.route(&dom("example.org", 80)), "direct");
    }
}
