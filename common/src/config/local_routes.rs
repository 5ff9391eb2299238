//! The local's outbounds and routing rules: `local.remotes`, `local.chains`, `local.routes`,
//! `local.default` (and the older `local.remote`): their serde shapes, and the check that
//! turns them into a [`LocalRouting`], whose router uses the shared matcher of
//! [`crate::route`]. It takes only the routing fields of `local:` (`RoutingFields`), so the
//! section's own type (in `config::local`) depends on this module and never the reverse.
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

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;

use super::error::{invalid, ConfigError};
pub use super::parse::RawPort;
use super::parse::{host_port, one_to_255_bytes, parse_matcher};
use super::secret::Secret;
use crate::crypto::Key;
use crate::proto::address::Address;
use crate::route::{Router, Rule};

/// The name `local.remote` (the single-remote form) is known by in routes and chains.
pub const LEGACY_REMOTE: &str = "remote";

/// `local.remotes.NAME`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawEndpoint {
    pub address: String,
    pub key: Option<String>,
    /// This laptop's own key on a remote with per-user keys (PROTOCOL.md §19).
    pub user_key: Option<String>,
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

/// A warren-remote the local can tunnel to.
#[derive(Debug)]
pub struct Endpoint {
    pub name: String,
    /// `host:port`, resolved on each connection.
    pub address: String,
    /// The same, as a tunnel target (what the previous hop of a chain connects to).
    pub target: Address,
    /// The remote's shared key: it seals requests, or, with `user_key`, masks the user hint.
    pub key: Key,
    /// This laptop's own key on a remote with `remote.users` (PROTOCOL.md §19): requests are
    /// sealed with it and carry a hint naming it.
    pub user_key: Option<Key>,
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

/// The routing fields of the `local:` section, borrowed from what serde parsed.
pub(crate) struct RoutingFields<'a> {
    /// `local.remote`: the single-remote form, known as [`LEGACY_REMOTE`].
    pub remote: Option<&'a str>,
    /// `local.user_key`: for the remotes that use the top-level key.
    pub user_key: Option<&'a str>,
    pub remotes: Option<&'a BTreeMap<String, RawEndpoint>>,
    pub chains: Option<&'a BTreeMap<String, Vec<RawHop>>>,
    pub routes: Option<&'a [RawRoute]>,
    pub default: Option<&'a RawDefault>,
}

/// Builds the outbounds and router from `local`, with `key` for remotes that name none.
pub(crate) fn build(
    local: RoutingFields<'_>,
    key: &Key,
    health_interval: Duration,
) -> Result<LocalRouting, ConfigError> {
    let mut remotes: Vec<Arc<Endpoint>> = Vec::new();
    let default_user_key = user_key("local.user_key", local.user_key, key)?;
    if let Some(address) = local.remote {
        let (address, target) = host_port("local.remote", address)?;
        remotes.push(Arc::new(Endpoint {
            name: LEGACY_REMOTE.to_owned(),
            address,
            target,
            key: key.clone(),
            user_key: default_user_key.clone(),
        }));
    }
    for (name, raw) in local.remotes.into_iter().flatten() {
        let field = format!("local.remotes.{name}");
        if name == LEGACY_REMOTE && local.remote.is_some() {
            return Err(invalid(field, "this name is taken by local.remote"));
        }
        let (key, inherited) = match &raw.key {
            Some(text) => (
                Key::from_base64(text).map_err(|e| invalid(format!("{field}.key"), e.to_string()))?,
                None,
            ),
            // local.user_key goes with the top-level key, to the remotes that use it.
            None => (key.clone(), default_user_key.clone()),
        };
        let own = user_key(&format!("{field}.user_key"), raw.user_key.as_deref(), &key)?;
        let (address, target) = host_port(&format!("{field}.address"), &raw.address)?;
        remotes.push(Arc::new(Endpoint {
            name: name.clone(),
            address,
            target,
            key,
            user_key: own.or(inherited),
        }));
    }
    let remote_named = |name: &str| remotes.iter().find(|e| e.name == name).cloned();

    let mut chains: Vec<Arc<Chain>> = Vec::new();
    for (name, hops) in local.chains.into_iter().flatten() {
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
                    // A hop holding a later hop's key could open that hop's layer too, and read
                    // the target and payload a chain exists to hide from it (PROTOCOL.md §18).
                    let shared_with = built.iter().find_map(|h| match h {
                        Hop::Warren(e) if e.key == endpoint.key => Some(e.name.clone()),
                        _ => None,
                    });
                    if let Some(other) = shared_with {
                        return Err(invalid(
                            &field,
                            format!(
                                "remote {r:?} has the same key as remote {other:?}, an earlier hop: it could open this \
                                 hop's layer. Give each hop of a chain its own key (local.remotes.NAME.key)"
                            ),
                        ));
                    }
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
                            one_to_255_bytes(format!("{field}.username"), u)?;
                            one_to_255_bytes(format!("{field}.password"), p)?;
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
    for (i, route) in local.routes.into_iter().flatten().enumerate() {
        let field = format!("local.routes[{i}]");
        let matcher = parse_matcher(
            &field,
            route.domain.as_deref(),
            route.cidr.as_deref(),
            route.port.as_ref(),
        )?;
        rules.push(Rule {
            matcher,
            action: action(&field, route)?,
        });
    }

    let default = match local.default {
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

/// A `user_key` field: absent, or a key that is not the remote's shared `key` (every user holds
/// that one; a user key must be the user's own).
fn user_key(field: &str, text: Option<&str>, shared: &Key) -> Result<Option<Key>, ConfigError> {
    let Some(text) = text else { return Ok(None) };
    let key = Key::from_base64(text).map_err(|e| invalid(field, e.to_string()))?;
    if key == *shared {
        return Err(invalid(
            field,
            "is the remote's shared key: a user key is your own (listed under remote.users on the remote)",
        ));
    }
    Ok(Some(key))
}
