//! The `remote:` section: its serde shape ([`RawRemote`]) and the checked [`RemoteConfig`]
//! warren-remote runs from: listen address, ACL, routing rules (direct or via a reverse-tunnel
//! agent), the agent settings when this remote is itself an agent, timeouts and limits.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;

use super::error::{invalid, ConfigError};
use super::limits::{handshake_limits, limits, Timeouts};
use super::parse::{host_port_ok, one_to_255_bytes, parse_matcher, seconds, socket_addr, RawPort};
use crate::acl::{Acl, Rule, Verdict};
use crate::crypto::Key;
use crate::proto::address::DomainName;
use crate::route::{self, RemoteAction, Router};
use crate::server::{HandshakeLimits, ServerLimits};

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRemote {
    pub listen: Option<String>,
    pub acl: Option<Vec<RawRule>>,
    /// Routing rules (first match wins; none matching = direct).
    pub routes: Option<Vec<RawRemoteRoute>>,
    /// Run as a reverse-tunnel agent: dial out to `server` and serve what it routes here.
    pub agent: Option<RawAgent>,
    /// The reverse-tunnel agents this remote accepts, by name, each with its own key.
    pub agents: Option<BTreeMap<String, RawAgentEntry>>,
    pub handshake_timeout: Option<f64>,
    pub connect_timeout: Option<f64>,
    pub idle_timeout: Option<f64>,
    pub max_connections: Option<usize>,
    /// Connections not yet authenticated, held at once (in all / per IPv4 address or IPv6 /64).
    pub max_handshakes: Option<usize>,
    pub max_handshakes_per_ip: Option<usize>,
    pub shutdown_grace: Option<f64>,
    pub bind_timeout: Option<f64>,
    /// Source IP for outbound TCP connections (multi-homed servers).
    pub outbound_source: Option<String>,
    /// The Prometheus endpoint (off when absent).
    pub metrics: Option<super::RawMetrics>,
    /// Per-user keys (PROTOCOL.md §19), by user name.
    pub users: Option<BTreeMap<String, super::remote_users::RawRemoteUser>>,
}

/// `{domain, cidr, port}` conditions and exactly one of `direct: true` / `via: AGENT`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRemoteRoute {
    pub domain: Option<String>,
    pub cidr: Option<String>,
    pub port: Option<RawPort>,
    pub direct: Option<bool>,
    pub via: Option<String>,
}

/// A reverse-tunnel agent: `{ server: HOST:PORT, name: NAME, key: BASE64 }`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAgent {
    pub server: Option<String>,
    pub name: Option<String>,
    /// The agent's own key, listed for this name under the server's `remote.agents`.
    pub key: Option<String>,
}

/// One accepted agent on a public remote: `remote.agents.NAME: { key: BASE64 }`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAgentEntry {
    pub key: Option<String>,
}

/// One ACL rule: `{ allow: VALUE }` or `{ deny: VALUE }`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRule {
    pub allow: Option<String>,
    pub deny: Option<String>,
}

#[derive(Debug, Clone)]
pub struct RemoteConfig {
    pub key: Key,
    pub listen: SocketAddr,
    pub acl: Acl,
    /// Where each request goes: first matching rule, else direct.
    pub routes: Router<RemoteAction>,
    pub agent: Option<AgentSettings>,
    /// The agents that may register here (a name and its own key each), in name order.
    pub agents: Vec<AgentEntry>,
    pub timeouts: Timeouts,
    pub limits: ServerLimits,
    /// Caps on connections that have not authenticated yet, apart from `limits`' cap.
    pub handshakes: HandshakeLimits,
    /// How long a BIND waits for its peer to connect.
    pub bind_timeout: Duration,
    /// Source address of outbound TCP connections; `None`: the system picks.
    pub outbound_source: Option<IpAddr>,
    /// Where `/metrics` is served (`remote.metrics.listen`); `None`: not served.
    pub metrics: Option<SocketAddr>,
    /// `remote.users`, in name order.
    pub users: Vec<Arc<super::remote_users::RemoteUser>>,
    /// The users' keys by hint: `Some` whenever `remote.users` is present (even empty), and
    /// then requests must be sealed with a user's key (the shared key only unmasks hints).
    pub user_table: Option<Arc<crate::tunnel::Users>>,
}

/// A reverse-tunnel agent's settings: where it dials, the name it registers and the key that
/// proves the name (PROTOCOL.md §17).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentSettings {
    /// host:port of the public warren-remote.
    pub server: String,
    pub name: String,
    /// The agent's own key: seals the registration and the whole agent link. Never the shared
    /// `key` (a laptop holding that must not be able to pose as the agent).
    pub key: Key,
}

/// An agent a public remote accepts: its name (1–255 bytes) and its own key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentEntry {
    pub name: String,
    pub key: Key,
}

impl RemoteConfig {
    /// Checks the `remote:` section, with the shared `key` already checked; `example_key` says
    /// whether that key is the published [`super::EXAMPLE_KEY`], which only loopback may use.
    pub(crate) fn from_section(key: Key, example_key: bool, remote: &RawRemote) -> Result<RemoteConfig, ConfigError> {
        let listen = socket_addr("remote.listen", remote.listen.as_deref(), "0.0.0.0:8388")?;
        if example_key && !listen.ip().is_loopback() {
            return Err(invalid(
                "key",
                "this is the published example key; generate your own with `warren-remote genkey` before listening beyond loopback",
            ));
        }
        let agents = agent_entries(&key, remote)?;
        let acl = acl(remote)?;
        let agent = agent_settings(&key, &agents, remote)?;
        let (users, user_table) = super::remote_users::remote_users(
            &key,
            &agents,
            agent.as_ref().map(|a| &a.key),
            &acl,
            remote.users.as_ref(),
        )?;
        Ok(RemoteConfig {
            users,
            user_table,
            acl,
            routes: remote_routes(remote, &agents)?,
            agent,
            agents,
            key,
            listen,
            timeouts: Timeouts {
                handshake: seconds("remote.handshake_timeout", remote.handshake_timeout, 10.0)?,
                connect: seconds("remote.connect_timeout", remote.connect_timeout, 8.0)?,
                idle: seconds("remote.idle_timeout", remote.idle_timeout, 300.0)?,
            },
            limits: limits("remote", remote.max_connections, remote.shutdown_grace)?,
            handshakes: handshake_limits(remote.max_handshakes, remote.max_handshakes_per_ip)?,
            bind_timeout: seconds("remote.bind_timeout", remote.bind_timeout, 120.0)?,
            outbound_source: remote
                .outbound_source
                .as_deref()
                .map(|text| {
                    text.trim()
                        .parse::<IpAddr>()
                        .map_err(|_| invalid("remote.outbound_source", format!("{text:?} is not an IP address")))
                })
                .transpose()?,
            metrics: super::metrics_listen("remote", remote.metrics.as_ref())?,
        })
    }
}

fn acl(remote: &RawRemote) -> Result<Acl, ConfigError> {
    Ok(Acl::new(rules("remote.acl", remote.acl.as_deref())?))
}

/// The rules of an ACL list at `field` (`remote.acl`, `remote.users.NAME.acl`).
pub(crate) fn rules(field: &str, raw: Option<&[RawRule]>) -> Result<Vec<Rule>, ConfigError> {
    let mut rules = Vec::new();
    for (i, rule) in raw.into_iter().flatten().enumerate() {
        let (verdict, name, value) = match (&rule.allow, &rule.deny) {
            (Some(v), None) => (Verdict::Allow, "allow", v),
            (None, Some(v)) => (Verdict::Deny, "deny", v),
            _ => {
                return Err(invalid(
                    format!("{field}[{i}]"),
                    "a rule is exactly one of `allow: VALUE` or `deny: VALUE`",
                ))
            }
        };
        rules.push(Rule::parse(verdict, value).map_err(|m| invalid(format!("{field}[{i}].{name}"), m))?);
    }
    Ok(rules)
}

fn agent_name(field: &str, name: &str) -> Result<String, ConfigError> {
    one_to_255_bytes(field, name)?;
    // The name goes on the wire as a SOCKS5-encoded domain (the Agent request's target).
    DomainName::new(name).map_err(|_| invalid(field, "must be a name without spaces or control characters"))?;
    Ok(name.to_string())
}

fn remote_routes(remote: &RawRemote, agents: &[AgentEntry]) -> Result<Router<RemoteAction>, ConfigError> {
    let mut routes = Vec::new();
    for (i, r) in remote.routes.iter().flatten().enumerate() {
        let field = format!("remote.routes[{i}]");
        let matcher = parse_matcher(&field, r.domain.as_deref(), r.cidr.as_deref(), r.port.as_ref())?;
        let action = match (r.direct, &r.via) {
            (Some(true), None) => RemoteAction::Direct,
            (None, Some(via)) => {
                if !agents.iter().any(|a| a.name == *via) {
                    return Err(invalid(
                        format!("{field}.via"),
                        format!("no agent named {via:?} in remote.agents (list it there with its own key)"),
                    ));
                }
                RemoteAction::Via(via.clone())
            }
            _ => {
                return Err(invalid(
                    field,
                    "a route is exactly one of `direct: true` or `via: AGENT_NAME`",
                ))
            }
        };
        routes.push(route::Rule { matcher, action });
    }
    Ok(Router {
        rules: routes,
        default: RemoteAction::Direct,
    })
}

/// A key field that must be present and not the shared `key`.
fn own_key(field: &str, text: Option<&str>, shared: &Key) -> Result<Key, ConfigError> {
    let text = text.ok_or_else(|| invalid(field, "missing (generate one with `warren-remote genkey`)"))?;
    let key = Key::from_base64(text).map_err(|e| invalid(field, e.to_string()))?;
    if key == *shared {
        return Err(invalid(
            field,
            "is the shared `key`: an agent needs its own key, or any client could pose as it",
        ));
    }
    Ok(key)
}

fn agent_entries(shared: &Key, remote: &RawRemote) -> Result<Vec<AgentEntry>, ConfigError> {
    let mut entries: Vec<AgentEntry> = Vec::new();
    for (name, entry) in remote.agents.iter().flatten() {
        let field = format!("remote.agents.{name}");
        let name = agent_name(&field, name)?;
        let key = own_key(&format!("{field}.key"), entry.key.as_deref(), shared)?;
        if let Some(other) = entries.iter().find(|e| e.key == key) {
            return Err(invalid(
                format!("{field}.key"),
                format!("is also remote.agents.{}.key: each agent needs its own key", other.name),
            ));
        }
        entries.push(AgentEntry { name, key });
    }
    Ok(entries)
}

fn agent_settings(
    shared: &Key,
    agents: &[AgentEntry],
    remote: &RawRemote,
) -> Result<Option<AgentSettings>, ConfigError> {
    let Some(agent) = &remote.agent else { return Ok(None) };
    let server = agent
        .server
        .clone()
        .ok_or_else(|| invalid("remote.agent.server", "missing (host:port of the public warren-remote)"))?;
    if !host_port_ok(&server) {
        return Err(invalid("remote.agent.server", format!("{server:?} is not host:port")));
    }
    let name = agent
        .name
        .as_deref()
        .ok_or_else(|| invalid("remote.agent.name", "missing"))?;
    let key = own_key("remote.agent.key", agent.key.as_deref(), shared)?;
    // A remote that is an agent and also accepts agents: its upstream (which holds our key) must
    // not be able to register here as one of them, nor they pose as our upstream.
    if let Some(other) = agents.iter().find(|a| a.key == key) {
        return Err(invalid(
            "remote.agent.key",
            format!("is also remote.agents.{}.key: each agent needs its own key", other.name),
        ));
    }
    Ok(Some(AgentSettings {
        server,
        name: agent_name("remote.agent.name", name)?,
        key,
    }))
}
