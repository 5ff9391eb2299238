//! The local's outbounds and routing rules: `local.remotes`, `local.chains`, `local.routes`,
//! `local.default` (and the older `local.remote`), parsed by serde in [`crate::config`] and
//! checked here into a [`LocalRouting`], whose router uses the shared matcher of
//! [`crate::route`].
//!
//! ```yaml
//! local:
//!   remotes:
//!     vps:    { address: "vps.example.net:8388" }             # key: the top-level key
//!     backup: { address: "backup.example.net:8388", key: "..." }
//!   chains:
//!     campus-socks: [ vps, { socks5: "10.0.0.5:1080", username: u, password: p } ]
//!   routes:
//!     - { domain: "campus.example.edu", proxy: [vps, backup] }  # failover, in order
//!     - { cidr: "192.168.0.0/16", direct: true }
//!     - { port: 25, block: true }
//!   default: { proxy: vps }                                     # or direct / block
//! ```

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;

use crate::config::{invalid, ConfigError, RawLocal, Secret};
use crate::crypto::Key;
use crate::proto::address::Address;
use crate::proto::http::parse_authority;
use crate::route::{Matcher, RouteError, Router, Rule};

/// The name `local.remote` (the single-remote form) is known by in routes and chains.
pub const LEGACY_REMOTE: &str = "remote";

/// `local.remotes.NAME`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawEndpoint {
    pub address: String,
    pub key: Option<String>,
}

/// One hop of `local.chains.NAME`: a remote's name, or an upstream SOCKS5 server (last only).
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum RawHop {
    Remote(String),
    Socks5(RawSocks5Hop),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSocks5Hop {
    pub socks5: String,
    pub username: Option<String>,
    pub password: Option<String>,
}

/// `proxy: vps` or `proxy: [vps, backup]`.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum RawNames {
    One(String),
    Many(Vec<String>),
}

/// `port: 25` or `port: "8000-8999"`.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum RawPort {
    Number(u64),
    Text(String),
}

/// One entry of `local.routes` (conditions and exactly one action), or `local.default` written
/// as a map (an action and no condition).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRoute {
    pub domain: Option<String>,
    pub cidr: Option<String>,
    pub port: Option<RawPort>,
    pub proxy: Option<RawNames>,
    pub direct: Option<bool>,
    pub block: Option<bool>,
}

/// `default: direct` / `block` / a remote or chain name, or `default: { proxy: ... }`.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum RawDefault {
    Word(String),
    Route(RawRoute),
}

/// Whether a remote answered its last health check. Clones share the flag; a remote counts as
/// up until a check says otherwise.
#[derive(Clone)]
pub struct Health(Arc<AtomicBool>);

impl Default for Health {
    fn default() -> Self {
        Health(Arc::new(AtomicBool::new(true)))
    }
}

impl Health {
    pub fn is_up(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }

    /// Records a check's result; true when it changed the state.
    pub fn set(&self, up: bool) -> bool {
        self.0.swap(up, Ordering::Relaxed) != up
    }
}

impl std::fmt::Debug for Health {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.is_up() { "up" } else { "down" })
    }
}

/// A warren-remote the local can tunnel to.
#[derive(Debug)]
pub struct Endpoint {
    pub name: String,
    /// `host:port`, resolved on each connection.
    pub address: String,
    /// The same, as a tunnel target (what the previous hop of a chain connects to).
    pub target: Address,
    pub key: Key,
    pub health: Health,
}

/// The login for an upstream SOCKS5 server (RFC 1929).
#[derive(Debug, Clone)]
pub struct Socks5Login {
    pub username: String,
    pub password: Secret,
}

/// One hop of a chain.
#[derive(Debug)]
pub enum Hop {
    /// A warren-remote: a tunnel handshake with its key, inside the previous hop's stream.
    Warren(Arc<Endpoint>),
    /// An upstream SOCKS5 server (`host:port`), always last, spoken to as a client.
    Socks5 {
        address: Address,
        login: Option<Socks5Login>,
    },
}

/// `local.chains.NAME`: the first hop is always [`Hop::Warren`].
#[derive(Debug)]
pub struct Chain {
    pub name: String,
    pub hops: Vec<Hop>,
}

/// A way out through remotes: one remote, or a chain.
#[derive(Debug, Clone)]
pub enum Via {
    Remote(Arc<Endpoint>),
    Chain(Arc<Chain>),
}

impl Via {
    pub fn name(&self) -> &str {
        match self {
            Via::Remote(e) => &e.name,
            Via::Chain(c) => &c.name,
        }
    }

    /// The remote the local dials first (whose health decides whether this way is tried first).
    pub fn first_remote(&self) -> Option<&Arc<Endpoint>> {
        match self {
            Via::Remote(e) => Some(e),
            Via::Chain(c) => c.hops.first().and_then(|h| match h {
                Hop::Warren(e) => Some(e),
                Hop::Socks5 { .. } => None,
            }),
        }
    }
}

/// What the local does with a request.
#[derive(Debug, Clone)]
pub enum LocalAction {
    /// Connect from the local itself.
    Direct,
    /// Refuse (SOCKS5 0x02, SOCKS4 0x5B, HTTP 403).
    Block,
    /// Through the first of these that works, in order, skipping those marked down.
    Proxy(Vec<Via>),
}

/// The validated outbounds and rules.
#[derive(Debug, Clone)]
pub struct LocalRouting {
    pub remotes: Vec<Arc<Endpoint>>,
    pub chains: Vec<Arc<Chain>>,
    pub router: Router<LocalAction>,
    /// Seconds between health checks of remotes listed in a failover route.
    pub health_interval: Duration,
}

impl LocalRouting {
    /// The remotes the health checker probes: the first remote of every way out in a route
    /// (or the default) that lists more than one.
    pub fn checked_remotes(&self) -> Vec<Arc<Endpoint>> {
        let mut out: Vec<Arc<Endpoint>> = Vec::new();
        let actions = self
            .router
            .rules
            .iter()
            .map(|r| &r.action)
            .chain([&self.router.default]);
        for action in actions {
            if let LocalAction::Proxy(list) = action {
                if list.len() > 1 {
                    for e in list.iter().filter_map(Via::first_remote) {
                        if !out.iter().any(|o| Arc::ptr_eq(o, e)) {
                            out.push(e.clone());
                        }
                    }
                }
            }
        }
        out
    }
}

/// `host:port` with a non-empty host and a port from 1 to 65535 (IPv6 as `[::1]:8388`).
pub(crate) fn host_port(field: &str, value: &str) -> Result<(String, Address), ConfigError> {
    let ok = value
        .rsplit_once(':')
        .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p != 0));
    match parse_authority(value, None) {
        Ok(address) if ok => Ok((value.to_owned(), address)),
        _ => Err(invalid(field, format!("{value:?} is not host:port"))),
    }
}

fn login_part(field: String, value: &str) -> Result<(), ConfigError> {
    if value.is_empty() || value.len() > 255 {
        return Err(invalid(field, "must be 1 to 255 bytes"));
    }
    Ok(())
}

/// Builds the outbounds and router from `local`, with `key` for remotes that name none.
pub(crate) fn build(local: &RawLocal, key: &Key, health_interval: Duration) -> Result<LocalRouting, ConfigError> {
    let mut remotes: Vec<Arc<Endpoint>> = Vec::new();
    if let Some(address) = &local.remote {
        let (address, target) = host_port("local.remote", address)?;
        remotes.push(Arc::new(Endpoint {
            name: LEGACY_REMOTE.to_owned(),
            address,
            target,
            key: key.clone(),
            health: Health::default(),
        }));
    }
    for (name, raw) in local.remotes.iter().flatten() {
        let field = format!("local.remotes.{name}");
        if name == LEGACY_REMOTE && local.remote.is_some() {
            return Err(invalid(field, "this name is taken by local.remote"));
        }
        let key = match &raw.key {
            Some(text) => Key::from_base64(text).map_err(|e| invalid(format!("{field}.key"), e.to_string()))?,
            None => key.clone(),
        };
        let (address, target) = host_port(&format!("{field}.address"), &raw.address)?;
        remotes.push(Arc::new(Endpoint {
            name: name.clone(),
            address,
            target,
            key,
            health: Health::default(),
        }));
    }
    let remote_named = |name: &str| remotes.iter().find(|e| e.name == name).cloned();

    let mut chains: Vec<Arc<Chain>> = Vec::new();
    for (name, hops) in local.chains.iter().flatten() {
        let field = format!("local.chains.{name}");
        if remote_named(name).is_some() {
            return Err(invalid(field, "a remote has the same name"));
        }
        if hops.is_empty() {
            return Err(invalid(field, "a chain needs at least one hop"));
        }
        let mut built = Vec::with_capacity(hops.len());
        for (i, hop) in hops.iter().enumerate() {
            let field = format!("{field}[{i}]");
            match hop {
                RawHop::Remote(r) => {
                    let endpoint = remote_named(r).ok_or_else(|| invalid(&field, format!("no remote named {r:?}")))?;
                    built.push(Hop::Warren(endpoint));
                }
                RawHop::Socks5(s) => {
                    if i == 0 {
                        return Err(invalid(
                            field,
                            "the first hop must be a remote: an upstream SOCKS5 server is reached through one",
                        ));
                    }
                    if i + 1 != hops.len() {
                        return Err(invalid(field, "an upstream SOCKS5 server can only be the last hop"));
                    }
                    let (_, address) = host_port(&format!("{field}.socks5"), &s.socks5)?;
                    let login = match (&s.username, &s.password) {
                        (None, None) => None,
                        (Some(u), Some(p)) => {
                            login_part(format!("{field}.username"), u)?;
                            login_part(format!("{field}.password"), p)?;
                            Some(Socks5Login {
                                username: u.clone(),
                                password: Secret::new(p.clone()),
                            })
                        }
                        _ => return Err(invalid(field, "username and password go together")),
                    };
                    built.push(Hop::Socks5 { address, login });
                }
            }
        }
        chains.push(Arc::new(Chain {
            name: name.clone(),
            hops: built,
        }));
    }

    let via_named = |field: &str, name: &str| -> Result<Via, ConfigError> {
        if let Some(e) = remote_named(name) {
            return Ok(Via::Remote(e));
        }
        match chains.iter().find(|c| c.name == name) {
            Some(c) => Ok(Via::Chain(c.clone())),
            None => Err(invalid(field, format!("no remote or chain named {name:?}"))),
        }
    };
    let action = |field: &str, route: &RawRoute| -> Result<LocalAction, ConfigError> {
        let (direct, block) = (route.direct == Some(true), route.block == Some(true));
        if route.direct == Some(false) || route.block == Some(false) {
            return Err(invalid(field, "write `direct: true` / `block: true`, or leave it out"));
        }
        match (&route.proxy, direct, block) {
            (None, true, false) => Ok(LocalAction::Direct),
            (None, false, true) => Ok(LocalAction::Block),
            (Some(names), false, false) => {
                let names: Vec<&String> = match names {
                    RawNames::One(n) => vec![n],
                    RawNames::Many(list) => list.iter().collect(),
                };
                if names.is_empty() {
                    return Err(invalid(format!("{field}.proxy"), "names no remote or chain"));
                }
                let list = names
                    .into_iter()
                    .map(|n| via_named(&format!("{field}.proxy"), n))
                    .collect::<Result<Vec<_>, _>>()?;
                Ok(LocalAction::Proxy(list))
            }
            _ => Err(invalid(
                field,
                "needs exactly one of `proxy: NAME` (or a list), `direct: true`, `block: true`",
            )),
        }
    };

    let mut rules = Vec::new();
    for (i, route) in local.routes.iter().flatten().enumerate() {
        let field = format!("local.routes[{i}]");
        let port = route.port.as_ref().map(|p| match p {
            RawPort::Number(n) => n.to_string(),
            RawPort::Text(t) => t.clone(),
        });
        let matcher = Matcher::parse(route.domain.as_deref(), route.cidr.as_deref(), port.as_deref()).map_err(|e| {
            let sub = match e {
                RouteError::Domain(_) => ".domain",
                RouteError::Cidr(_) => ".cidr",
                RouteError::Port(_) => ".port",
                RouteError::Empty => "",
            };
            invalid(format!("{field}{sub}"), e.to_string())
        })?;
        rules.push(Rule {
            matcher,
            action: action(&field, route)?,
        });
    }

    let default = match &local.default {
        Some(RawDefault::Word(w)) if w == "direct" => LocalAction::Direct,
        Some(RawDefault::Word(w)) if w == "block" => LocalAction::Block,
        Some(RawDefault::Word(name)) => LocalAction::Proxy(vec![via_named("local.default", name)?]),
        Some(RawDefault::Route(route)) => {
            if route.domain.is_some() || route.cidr.is_some() || route.port.is_some() {
                return Err(invalid("local.default", "the default takes no domain, cidr or port"));
            }
            action("local.default", route)?
        }
        None => match remotes.as_slice() {
            [only] => LocalAction::Proxy(vec![Via::Remote(only.clone())]),
            [] => return Err(invalid("local.remote", "missing (host:port of warren-remote)")),
            _ => match remote_named(LEGACY_REMOTE) {
                Some(e) if local.remote.is_some() => LocalAction::Proxy(vec![Via::Remote(e)]),
                _ => {
                    return Err(invalid(
                        "local.default",
                        "missing: with several remotes, say where unmatched requests go (`proxy: NAME`, `direct` or `block`)",
                    ))
                }
            },
        },
    };
    Ok(LocalRouting {
        remotes,
        chains,
        router: Router { rules, default },
        health_interval,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{LocalConfig, RawConfig};

    const KEY: &str = "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=";
    const KEY2: &str = "AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE=";

    fn local(body: &str) -> Result<LocalConfig, ConfigError> {
        let yaml = format!(
            "key: '{KEY}'\nlocal:\n{}",
            body.lines().map(|l| format!("  {l}\n")).collect::<String>()
        );
        LocalConfig::try_from(&RawConfig::from_yaml(&yaml, "test.yaml")?)
    }

    fn err(body: &str) -> String {
        local(body).unwrap_err().to_string()
    }

    fn dom(name: &str) -> Address {
        Address::Domain(name.into(), 80)
    }

    fn names(action: &LocalAction) -> String {
        match action {
            LocalAction::Direct => "direct".into(),
            LocalAction::Block => "block".into(),
            LocalAction::Proxy(list) => list.iter().map(Via::name).collect::<Vec<_>>().join(","),
        }
    }

    const FULL: &str = r#"remotes:
  vps: { address: "vps.example.net:8388" }
  backup: { address: "backup.example.net:8388", key: "AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE=" }
  inner: { address: "10.1.0.1:8388" }
chains:
  campus-socks: [ vps, { socks5: "10.0.0.5:1080", username: u, password: hunter22 } ]
  deep: [ vps, inner ]
routes:
  - { domain: "campus.example.edu", proxy: [vps, backup] }
  - { cidr: "192.168.0.0/16", direct: true }
  - { domain: "ads.example", block: true }
  - { port: 25, block: true }
  - { domain: "lib.example.edu", proxy: campus-socks }
default: { proxy: deep }
"#;

    #[test]
    fn full_shape_routes_and_keys() {
        let cfg = local(FULL).unwrap();
        let r = &cfg.routing;
        assert_eq!(names(r.router.route(&dom("www.campus.example.edu"))), "vps,backup");
        assert_eq!(
            names(r.router.route(&Address::Ip("192.168.3.4:22".parse().unwrap()))),
            "direct"
        );
        assert_eq!(names(r.router.route(&dom("x.ads.example"))), "block");
        assert_eq!(names(r.router.route(&dom("mail.example"))), "deep");
        assert_eq!(
            names(r.router.route(&Address::Domain("mx.example".into(), 25))),
            "block"
        );
        assert_eq!(names(r.router.route(&dom("lib.example.edu"))), "campus-socks");
        assert_eq!(names(&r.router.default), "deep");
        let backup = r.remotes.iter().find(|e| e.name == "backup").unwrap();
        assert_eq!(backup.key.to_base64(), KEY2);
        let vps = r.remotes.iter().find(|e| e.name == "vps").unwrap();
        assert_eq!(vps.key.to_base64(), KEY);
        let chain = r.chains.iter().find(|c| c.name == "campus-socks").unwrap();
        assert!(matches!(&chain.hops[1], Hop::Socks5 { login: Some(l), .. } if l.username == "u"));
        let checked: Vec<String> = r.checked_remotes().iter().map(|e| e.name.clone()).collect();
        assert_eq!(checked, ["vps", "backup"]);
        let shown = format!("{cfg:?}");
        assert!(!shown.contains("hunter22") && !shown.contains(KEY2), "{shown}");
        assert_eq!(cfg.remote, "deep");
    }

    #[test]
    fn single_remote_is_the_default_route() {
        let cfg = local("remote: 'h:1'").unwrap();
        assert_eq!(names(&cfg.routing.router.default), LEGACY_REMOTE);
        assert_eq!(cfg.routing.remotes[0].address, "h:1");
        let cfg = local("remotes: { vps: { address: 'v:2' } }").unwrap();
        assert_eq!(names(&cfg.routing.router.default), "vps");
        let cfg = local("remote: 'h:1'\nremotes: { vps: { address: 'v:2' } }").unwrap();
        assert_eq!(names(&cfg.routing.router.default), LEGACY_REMOTE);
        let cfg = local("routes: [{ domain: a.test, block: true }]\ndefault: direct").unwrap();
        assert_eq!(names(&cfg.routing.router.default), "direct");
        assert!(cfg.routing.checked_remotes().is_empty());
    }

    #[test]
    fn errors_name_the_field() {
        let bad = [
            (
                "remote: 'h:1'\nroutes: [{ domain: a.test, proxy: vsp }]",
                "local.routes[0].proxy: no remote or chain named \"vsp\"",
            ),
            (
                "remote: 'h:1'\nroutes: [{ domain: a.test }]",
                "local.routes[0]: needs exactly one of",
            ),
            (
                "remote: 'h:1'\nroutes: [{ domain: a.test, direct: true, block: true }]",
                "local.routes[0]: needs exactly one of",
            ),
            (
                "remote: 'h:1'\nroutes: [{ block: true }]",
                "local.routes[0]: a rule needs at least one of",
            ),
            (
                "remote: 'h:1'\nroutes: [{ port: 0, block: true }]",
                "local.routes[0].port:",
            ),
            (
                "remote: 'h:1'\nroutes: [{ cidr: '1.2.3.4/40', block: true }]",
                "local.routes[0].cidr:",
            ),
            (
                "remote: 'h:1'\nroutes: [{ domain: 'a b', block: true }]",
                "local.routes[0].domain:",
            ),
            (
                "remote: 'h:1'\nroutes: [{ domain: a.test, direct: false }]",
                "local.routes[0]: write",
            ),
            (
                "remote: 'h:1'\nroutes: [{ domain: a.test, proxy: [] }]",
                "local.routes[0].proxy: names no",
            ),
            (
                "remotes: { a: { address: 'a:1' }, b: { address: 'b:1' } }",
                "local.default: missing",
            ),
            ("remotes: { a: { address: 'nope' } }", "local.remotes.a.address:"),
            ("remotes: { a: { address: 'a:1', key: 'xx' } }", "local.remotes.a.key:"),
            (
                "remote: 'h:1'\nremotes: { remote: { address: 'a:1' } }",
                "local.remotes.remote: this name is taken",
            ),
            ("remote: 'h:1'\nchains: { c: [] }", "local.chains.c: a chain needs"),
            (
                "remote: 'h:1'\nchains: { c: [ nope ] }",
                "local.chains.c[0]: no remote named \"nope\"",
            ),
            (
                "remote: 'h:1'\nchains: { c: [ { socks5: 's:1' } ] }",
                "local.chains.c[0]: the first hop must be",
            ),
            (
                "remote: 'h:1'\nchains: { c: [ remote, { socks5: 's:1' }, remote ] }",
                "local.chains.c[1]: an upstream SOCKS5",
            ),
            (
                "remote: 'h:1'\nchains: { c: [ remote, { socks5: 's' } ] }",
                "local.chains.c[1].socks5:",
            ),
            (
                "remote: 'h:1'\nchains: { c: [ remote, { socks5: 's:1', username: u } ] }",
                "local.chains.c[1]: username and password",
            ),
            (
                "remote: 'h:1'\nchains: { c: [ remote, { socks5: 's:1', username: '', password: p } ] }",
                "local.chains.c[1].username:",
            ),
            (
                "remote: 'h:1'\nchains: { remote: [ remote ] }",
                "local.chains.remote: a remote has the same name",
            ),
            (
                "remote: 'h:1'\ndefault: nowhere",
                "local.default: no remote or chain named \"nowhere\"",
            ),
            (
                "remote: 'h:1'\ndefault: { domain: a.test, direct: true }",
                "local.default: the default takes no",
            ),
            ("remote: 'h:1'\nhealth_interval: 0", "local.health_interval:"),
        ];
        for (body, want) in bad {
            let got = err(body);
            assert!(got.starts_with(want), "{body}\n  got: {got}\n  want: {want}");
        }
    }

    /// The commented routing block of config.example.yaml, uncommented, is a valid config.
    #[test]
    fn example_routing_block_is_valid() {
        let text = include_str!("../../config.example.yaml");
        let start = text.find("  # remotes:").unwrap();
        let end = start + text[start..].find("  # health_interval").unwrap();
        let body: String = text[start..end]
            .lines()
            .map(|l| format!("{}\n", l.strip_prefix("  # ").unwrap_or(l)))
            .collect::<String>()
            .replace("\"...\"", &format!("\"{KEY2}\""));
        let cfg = local(&format!("remote: '127.0.0.1:8388'\n{body}")).unwrap();
        assert_eq!(cfg.routing.chains.len(), 2);
        assert_eq!(cfg.routing.router.rules.len(), 5);
        assert_eq!(names(&cfg.routing.router.default), "vps");
    }

    #[test]
    fn health_flags_are_shared_by_clones() {
        let cfg = local(FULL).unwrap();
        let copy = cfg.clone();
        assert!(copy.routing.remotes[0].health.is_up());
        assert!(cfg.routing.remotes[0].health.set(false));
        assert!(!copy.routing.remotes[0].health.is_up());
        assert!(!cfg.routing.remotes[0].health.set(false));
        assert_eq!(format!("{:?}", copy.routing.remotes[0].health), "down");
    }
}
