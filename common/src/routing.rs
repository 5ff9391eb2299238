//! Routing rules: which way a target goes. A rule matches on a domain suffix, a CIDR block
//! and/or a port (all given conditions must hold); the first matching rule decides.
//!
//! On warren-remote a route is `direct` (connect from here) or `via: NAME` (hand the request to
//! the reverse-tunnel agent that registered as NAME).

use ipnet::IpNet;

use crate::proto::address::Address;

/// The conditions of one rule; empty conditions match everything.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Matcher {
    /// Lower-case domain suffix without a leading dot: `intranet.example` matches the name itself
    /// and every name under it.
    pub domain: Option<String>,
    pub cidr: Option<IpNet>,
    pub port: Option<u16>,
}

impl Matcher {
    /// Parses the optional conditions; the error says which one is wrong.
    pub fn parse(
        domain: Option<&str>,
        cidr: Option<&str>,
        port: Option<u16>,
    ) -> Result<Matcher, (&'static str, String)> {
        let domain = match domain {
            Some(d) => {
                let d = d.trim().trim_start_matches('.').to_ascii_lowercase();
                if d.is_empty() || d.len() > 253 {
                    return Err(("domain", "must be a domain suffix of 1 to 253 bytes".into()));
                }
                Some(d)
            }
            None => None,
        };
        let cidr = match cidr {
            Some(c) => Some(
                c.parse::<IpNet>()
                    .or_else(|_| c.parse::<std::net::IpAddr>().map(IpNet::from))
                    .map_err(|_| ("cidr", format!("{c:?} is not an address or CIDR block")))?,
            ),
            None => None,
        };
        if port == Some(0) {
            return Err(("port", "must be 1 to 65535".into()));
        }
        Ok(Matcher { domain, cidr, port })
    }

    /// Whether `target` meets every condition. A domain condition never matches an IP target and
    /// a CIDR condition never matches a name (names are resolved only where the route leads).
    pub fn matches(&self, target: &Address) -> bool {
        let (name, ip, port) = match target {
            Address::Ip(a) => (None, Some(a.ip()), a.port()),
            Address::Domain(n, p) => (Some(n.as_str()), None, *p),
        };
        if self.port.is_some_and(|p| p != port) {
            return false;
        }
        if let Some(suffix) = &self.domain {
            let Some(name) = name else { return false };
            let name = name.trim_end_matches('.').to_ascii_lowercase();
            if !(name == *suffix || name.ends_with(&format!(".{suffix}"))) {
                return false;
            }
        }
        if let Some(net) = &self.cidr {
            if !ip.is_some_and(|ip| net.contains(&ip)) {
                return false;
            }
        }
        true
    }
}

/// Where warren-remote sends a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RemoteAction {
    /// Connect from this machine.
    Direct,
    /// Forward to the reverse-tunnel agent registered under this name.
    Via(String),
}

/// warren-remote's routing table; no rule matching means [`RemoteAction::Direct`].
#[derive(Debug, Clone, Default)]
pub struct RemoteRoutes(pub Vec<(Matcher, RemoteAction)>);

impl RemoteRoutes {
    pub fn route(&self, target: &Address) -> &RemoteAction {
        self.0
            .iter()
            .find(|(m, _)| m.matches(target))
            .map_or(&RemoteAction::Direct, |(_, a)| a)
    }
}

/// A reverse-tunnel agent's settings: where it dials and the name it registers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentSettings {
    /// host:port of the public warren-remote.
    pub server: String,
    pub name: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dom(n: &str, p: u16) -> Address {
        Address::Domain(n.into(), p)
    }

    #[test]
    fn suffix_cidr_port() {
        let m = Matcher::parse(Some(".Campus.example"), None, None).unwrap();
        assert!(m.matches(&dom("campus.example", 80)));
        assert!(m.matches(&dom("wiki.CAMPUS.example.", 443)));
        assert!(!m.matches(&dom("notcampus.example", 80)));
        assert!(!m.matches(&Address::Ip("10.0.0.1:80".parse().unwrap())));
        let m = Matcher::parse(None, Some("10.0.0.0/8"), Some(22)).unwrap();
        assert!(m.matches(&Address::Ip("10.1.2.3:22".parse().unwrap())));
        assert!(!m.matches(&Address::Ip("10.1.2.3:80".parse().unwrap())));
        assert!(!m.matches(&Address::Ip("11.1.2.3:22".parse().unwrap())));
        assert_eq!(Matcher::parse(None, Some("nope"), None).unwrap_err().0, "cidr");
        assert_eq!(Matcher::parse(None, None, Some(0)).unwrap_err().0, "port");
    }

    #[test]
    fn first_match_wins_default_direct() {
        let routes = RemoteRoutes(vec![
            (
                Matcher::parse(Some("a.test"), None, None).unwrap(),
                RemoteAction::Via("x".into()),
            ),
            (Matcher::parse(None, None, None).unwrap(), RemoteAction::Via("y".into())),
        ]);
        assert_eq!(routes.route(&dom("b.a.test", 1)), &RemoteAction::Via("x".into()));
        assert_eq!(routes.route(&dom("c.test", 1)), &RemoteAction::Via("y".into()));
        assert_eq!(RemoteRoutes::default().route(&dom("c.test", 1)), &RemoteAction::Direct);
    }
}
