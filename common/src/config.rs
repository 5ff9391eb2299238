//! Configuration: YAML parsed into `Raw*` structs (serde, unknown fields refused), then checked
//! and converted into [`LocalConfig`] and [`RemoteConfig`], which hold only valid values. Every
//! error names the field it is about, and the binaries exit before binding anything.
//!
//! One file can serve both ends (`local:` and `remote:` sections); each binary requires its own
//! section and the shared `key`.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::time::Duration;

use serde::Deserialize;

use crate::acl::{Acl, Rule, Verdict};
use crate::crypto::Key;
use crate::local_routes::{build, parse_matcher, LocalRouting, RawDefault, RawEndpoint, RawHop, RawPort, RawRoute};
use crate::route::{self, RemoteAction, Router};
use crate::server::ServerLimits;

/// The key printed in config.example.yaml. Anyone can read it, so the remote refuses it on any
/// address but loopback.
pub const EXAMPLE_KEY: &str = "ZXhhbXBsZSBrZXkgLSBuZXZlciBkZXBsb3kgdGhpcyE=";

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The config file could not be read.
    #[error("cannot read {path}: {source}")]
    Read { path: String, source: std::io::Error },
    /// The YAML does not parse, or has an unknown or mistyped field (serde names it).
    #[error("{path}: {source}")]
    Syntax { path: String, source: serde_yaml::Error },
    /// A field is missing or has an invalid value.
    #[error("{field}: {message}")]
    Invalid { field: String, message: String },
}

pub(crate) fn invalid(field: impl Into<String>, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        field: field.into(),
        message: message.into(),
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    pub key: Option<String>,
    pub local: Option<RawLocal>,
    pub remote: Option<RawRemote>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawLocal {
    pub listen: Option<String>,
    pub remote: Option<String>,
    pub users: Option<Vec<RawUser>>,
    pub handshake_timeout: Option<f64>,
    pub connect_timeout: Option<f64>,
    pub idle_timeout: Option<f64>,
    pub max_connections: Option<usize>,
    pub shutdown_grace: Option<f64>,
    pub udp_transport: Option<String>,
    /// Named warren-remotes (see `local_routes`).
    pub remotes: Option<BTreeMap<String, RawEndpoint>>,
    /// Named chains of hops.
    pub chains: Option<BTreeMap<String, Vec<RawHop>>>,
    /// Routing rules, first match wins.
    pub routes: Option<Vec<RawRoute>>,
    /// Where requests no rule matches go.
    pub default: Option<RawDefault>,
    /// Seconds between health checks of remotes in failover lists.
    pub health_interval: Option<f64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawUser {
    pub username: String,
    pub password: String,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRemote {
    pub listen: Option<String>,
    pub acl: Option<Vec<RawRule>>,
    /// Routing rules (first match wins; none matching = direct).
    pub routes: Option<Vec<RawRemoteRoute>>,
    /// Run as a reverse-tunnel agent: dial out to `server` and serve what it routes here.
    pub agent: Option<RawAgent>,
    pub handshake_timeout: Option<f64>,
    pub connect_timeout: Option<f64>,
    pub idle_timeout: Option<f64>,
    pub max_connections: Option<usize>,
    pub shutdown_grace: Option<f64>,
    pub bind_timeout: Option<f64>,
    /// Source IP for outbound TCP connections (multi-homed servers).
    pub outbound_source: Option<String>,
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

/// A reverse-tunnel agent: `{ server: HOST:PORT, name: NAME }`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAgent {
    pub server: Option<String>,
    pub name: Option<String>,
}

/// One ACL rule: `{ allow: VALUE }` or `{ deny: VALUE }`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRule {
    pub allow: Option<String>,
    pub deny: Option<String>,
}

impl RawConfig {
    pub fn from_yaml(text: &str, path: &str) -> Result<RawConfig, ConfigError> {
        if text.trim().is_empty() {
            return Ok(RawConfig::default());
        }
        serde_yaml::from_str(text).map_err(|source| ConfigError::Syntax {
            path: path.to_owned(),
            source,
        })
    }

    pub fn load(path: &Path) -> Result<RawConfig, ConfigError> {
        let shown = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: shown.clone(),
            source,
        })?;
        RawConfig::from_yaml(&text, &shown)
    }

    pub fn local_mut(&mut self) -> &mut RawLocal {
        self.local.get_or_insert_with(RawLocal::default)
    }

    pub fn remote_mut(&mut self) -> &mut RawRemote {
        self.remote.get_or_insert_with(RawRemote::default)
    }

    fn key(&self) -> Result<Key, ConfigError> {
        let text = self
            .key
            .as_deref()
            .ok_or_else(|| invalid("key", "missing (generate one with `warren-remote genkey`)"))?;
        Key::from_base64(text).map_err(|e| invalid("key", e.to_string()))
    }
}

/// A secret string whose Debug output never shows it.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(secret: impl Into<String>) -> Secret {
        Secret(secret.into())
    }

    pub fn expose(&self) -> &[u8] {
        self.0.as_bytes()
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("***")
    }
}

#[derive(Debug, Clone)]
pub struct User {
    pub username: String,
    pub password: Secret,
}

/// Timeouts shared by both ends.
#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    /// The whole client handshake (SOCKS5 on the local, the tunnel header on the remote).
    pub handshake: Duration,
    /// Local: dialling the remote and receiving its answer. Remote: the outbound connect.
    pub connect: Duration,
    /// A relay with no byte in either direction for this long is closed.
    pub idle: Duration,
}

#[derive(Debug, Clone)]
pub struct LocalConfig {
    pub key: Key,
    pub listen: SocketAddr,
    /// `host:port` of warren-remote (`local.remote`), or, without it, where the default route
    /// goes (for logs); the outbounds themselves are in `routing`.
    pub remote: String,
    /// When non-empty, SOCKS5 clients must log in (RFC 1929).
    pub users: Vec<User>,
    pub timeouts: Timeouts,
    pub limits: ServerLimits,
    /// How UDP ASSOCIATE datagrams travel to the remote.
    pub udp_transport: UdpTransport,
    /// Remotes, chains and the routing rules (a single `local.remote` is the default route).
    /// Remote addresses are resolved on each connection, so a changed DNS record is picked up
    /// without a restart.
    pub routing: LocalRouting,
}

/// How the local carries a UDP association's datagrams to the remote (`local.udp_transport`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UdpTransport {
    /// Each datagram sealed on its own and sent to the remote's UDP socket (same port number
    /// as its TCP listener).
    Udp,
    /// One tunnel stream per association, datagrams length-prefixed inside it.
    Tcp,
}

#[derive(Debug, Clone)]
pub struct RemoteConfig {
    pub key: Key,
    pub listen: SocketAddr,
    pub acl: Acl,
    /// Where each request goes: first matching rule, else direct.
    pub routes: Router<RemoteAction>,
    pub agent: Option<AgentSettings>,
    pub timeouts: Timeouts,
    pub limits: ServerLimits,
    /// How long a BIND waits for its peer to connect.
    pub bind_timeout: Duration,
    /// Source address of outbound TCP connections; `None`: the system picks.
    pub outbound_source: Option<IpAddr>,
}

fn seconds(field: &str, value: Option<f64>, default: f64) -> Result<Duration, ConfigError> {
    let secs = value.unwrap_or(default);
    if !(secs > 0.0 && secs <= 86_400.0 * 365.0) {
        return Err(invalid(
            field,
            format!("{secs} is not a number of seconds between 0 and one year"),
        ));
    }
    Ok(Duration::from_secs_f64(secs))
}

fn socket_addr(field: &str, value: Option<&str>, default: &str) -> Result<SocketAddr, ConfigError> {
    let text = value.unwrap_or(default);
    text.parse().map_err(|_| {
        invalid(
            field,
            format!("{text:?} is not an IP:port address (IPv6 as [::1]:1080)"),
        )
    })
}

/// The default connection cap: what the open-files limit allows at two sockets per connection.
pub fn default_max_connections() -> usize {
    let limit = rlimit::getrlimit(rlimit::Resource::NOFILE)
        .map(|(soft, _)| soft)
        .unwrap_or(1024);
    usize::try_from(limit.saturating_sub(64) / 2)
        .unwrap_or(usize::MAX)
        .clamp(16, 1_000_000)
}

fn limits(prefix: &str, max: Option<usize>, grace: Option<f64>) -> Result<ServerLimits, ConfigError> {
    let max_connections = match max {
        Some(0) => return Err(invalid(format!("{prefix}.max_connections"), "must be at least 1")),
        Some(n) => n,
        None => default_max_connections(),
    };
    Ok(ServerLimits {
        max_connections,
        shutdown_grace: seconds(&format!("{prefix}.shutdown_grace"), grace, 10.0)?,
    })
}

impl TryFrom<&RawConfig> for LocalConfig {
    type Error = ConfigError;

    fn try_from(raw: &RawConfig) -> Result<Self, ConfigError> {
        let key = raw.key()?;
        let local = raw.local.as_ref().ok_or_else(|| invalid("local", "section missing"))?;
        let listen = socket_addr("local.listen", local.listen.as_deref(), "127.0.0.1:1080")?;
        let health_interval = seconds("local.health_interval", local.health_interval, 5.0)?;
        let routing = build(local, &key, health_interval)?;
        let remote = match (&local.remote, &routing.router.default) {
            (Some(address), _) => address.clone(),
            (None, crate::local_routes::LocalAction::Proxy(list)) => {
                list.iter().map(|v| v.name()).collect::<Vec<_>>().join(", ")
            }
            (None, crate::local_routes::LocalAction::Direct) => "direct".to_owned(),
            (None, crate::local_routes::LocalAction::Block) => "block".to_owned(),
        };
        let mut users = Vec::new();
        for (i, user) in local.users.iter().flatten().enumerate() {
            if user.username.is_empty() || user.username.len() > 255 {
                return Err(invalid(format!("local.users[{i}].username"), "must be 1 to 255 bytes"));
            }
            if user.password.is_empty() || user.password.len() > 255 {
                return Err(invalid(format!("local.users[{i}].password"), "must be 1 to 255 bytes"));
            }
            users.push(User {
                username: user.username.clone(),
                password: Secret(user.password.clone()),
            });
        }
        Ok(LocalConfig {
            key,
            listen,
            remote,
            users,
            timeouts: Timeouts {
                handshake: seconds("local.handshake_timeout", local.handshake_timeout, 10.0)?,
                connect: seconds("local.connect_timeout", local.connect_timeout, 12.0)?,
                idle: seconds("local.idle_timeout", local.idle_timeout, 300.0)?,
            },
            limits: limits("local", local.max_connections, local.shutdown_grace)?,
            udp_transport: match local.udp_transport.as_deref() {
                None | Some("udp") => UdpTransport::Udp,
                Some("tcp") => UdpTransport::Tcp,
                Some(other) => {
                    return Err(invalid(
                        "local.udp_transport",
                        format!("{other:?} is not `udp` or `tcp`"),
                    ))
                }
            },
            routing,
        })
    }
}

impl TryFrom<&RawConfig> for RemoteConfig {
    type Error = ConfigError;

    fn try_from(raw: &RawConfig) -> Result<Self, ConfigError> {
        let key = raw.key()?;
        let remote = raw
            .remote
            .as_ref()
            .ok_or_else(|| invalid("remote", "section missing"))?;
        let listen = socket_addr("remote.listen", remote.listen.as_deref(), "0.0.0.0:8388")?;
        if raw.key.as_deref().map(str::trim) == Some(EXAMPLE_KEY) && !listen.ip().is_loopback() {
            return Err(invalid(
                "key",
                "this is the published example key; generate your own with `warren-remote genkey` before listening beyond loopback",
            ));
        }
        let mut rules = Vec::new();
        for (i, rule) in remote.acl.iter().flatten().enumerate() {
            let (verdict, name, value) = match (&rule.allow, &rule.deny) {
                (Some(v), None) => (Verdict::Allow, "allow", v),
                (None, Some(v)) => (Verdict::Deny, "deny", v),
                _ => {
                    return Err(invalid(
                        format!("remote.acl[{i}]"),
                        "a rule is exactly one of `allow: VALUE` or `deny: VALUE`",
                    ))
                }
            };
            rules.push(Rule::parse(verdict, value).map_err(|m| invalid(format!("remote.acl[{i}].{name}"), m))?);
        }
        Ok(RemoteConfig {
            key,
            listen,
            acl: Acl::new(rules),
            routes: remote_routes(remote)?,
            agent: agent_settings(remote)?,
            timeouts: Timeouts {
                handshake: seconds("remote.handshake_timeout", remote.handshake_timeout, 10.0)?,
                connect: seconds("remote.connect_timeout", remote.connect_timeout, 8.0)?,
                idle: seconds("remote.idle_timeout", remote.idle_timeout, 300.0)?,
            },
            limits: limits("remote", remote.max_connections, remote.shutdown_grace)?,
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
        })
    }
}

/// A reverse-tunnel agent's settings: where it dials and the name it registers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentSettings {
    /// host:port of the public warren-remote.
    pub server: String,
    pub name: String,
}

fn host_port_ok(s: &str) -> bool {
    s.rsplit_once(':')
        .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p != 0))
}

fn agent_name(field: &str, name: &str) -> Result<String, ConfigError> {
    if name.is_empty() || name.len() > 255 {
        return Err(invalid(field, "must be 1 to 255 bytes"));
    }
    Ok(name.to_string())
}

fn remote_routes(remote: &RawRemote) -> Result<Router<RemoteAction>, ConfigError> {
    let mut routes = Vec::new();
    for (i, r) in remote.routes.iter().flatten().enumerate() {
        let field = format!("remote.routes[{i}]");
        let matcher = parse_matcher(&field, r.domain.as_deref(), r.cidr.as_deref(), r.port.as_ref())?;
        let action = match (r.direct, &r.via) {
            (Some(true), None) => RemoteAction::Direct,
            (None, Some(via)) => RemoteAction::Via(agent_name(&format!("{field}.via"), via)?),
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

fn agent_settings(remote: &RawRemote) -> Result<Option<AgentSettings>, ConfigError> {
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
    Ok(Some(AgentSettings {
        server,
        name: agent_name("remote.agent.name", name)?,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=";

    fn local(yaml: &str) -> Result<LocalConfig, ConfigError> {
        LocalConfig::try_from(&RawConfig::from_yaml(yaml, "test.yaml")?)
    }

    fn remote(yaml: &str) -> Result<RemoteConfig, ConfigError> {
        RemoteConfig::try_from(&RawConfig::from_yaml(yaml, "test.yaml")?)
    }

    fn err(result: Result<impl std::fmt::Debug, ConfigError>) -> String {
        result.unwrap_err().to_string()
    }

    #[test]
    fn example_config_is_valid_for_both_ends() {
        let text = include_str!("../../config.example.yaml");
        let raw = RawConfig::from_yaml(text, "config.example.yaml").unwrap();
        let l = LocalConfig::try_from(&raw).unwrap();
        assert_eq!(l.listen, "127.0.0.1:1080".parse().unwrap());
        let r = RemoteConfig::try_from(&raw).unwrap();
        assert!(r.listen.ip().is_loopback());
    }

    /// docs/campus/*.yaml with a real key, as written and with their commented blocks enabled.
    #[test]
    fn campus_templates_are_valid() {
        let fill = |t: &str| t.replace("REPLACE-WITH-warren-remote-genkey-OUTPUT", KEY);
        let uncomment = |t: &str| -> String {
            t.lines()
                .map(|l| match l.strip_prefix("  # ") {
                    Some(rest) if !rest.starts_with(char::is_uppercase) => format!("  {rest}\n"),
                    _ => format!("{l}\n"),
                })
                .collect()
        };
        let vps = fill(include_str!("../../docs/campus/vps.yaml"));
        let campus = fill(include_str!("../../docs/campus/campus.yaml"));
        let laptop = fill(include_str!("../../docs/campus/laptop.yaml"));
        let r = RemoteConfig::try_from(&RawConfig::from_yaml(&vps, "vps.yaml").unwrap()).unwrap();
        assert_eq!(r.routes.rules.len(), 2);
        for text in [campus.clone(), uncomment(&campus)] {
            let r = RemoteConfig::try_from(&RawConfig::from_yaml(&text, "campus.yaml").unwrap()).unwrap();
            assert_eq!(r.agent.map(|a| a.name).as_deref(), Some("campus"));
        }
        for text in [laptop.clone(), uncomment(&laptop)] {
            LocalConfig::try_from(&RawConfig::from_yaml(&text, "laptop.yaml").unwrap()).unwrap();
        }
    }

    #[test]
    fn errors_name_the_field() {
        assert!(err(local("local: {remote: 'h:1'}")).starts_with("key:"));
        assert!(err(local("key: 'abc!'\nlocal: {remote: 'h:1'}")).starts_with("key: key is not valid base64"));
        assert!(err(local("key: 'AAAA'\nlocal: {remote: 'h:1'}")).contains("32 bytes"));
        assert!(err(local(&format!(
            "key: '{KEY}'\nlocal: {{remote: 'h:1', listen: 'nope'}}"
        )))
        .starts_with("local.listen:"));
        assert!(err(local(&format!("key: '{KEY}'\nlocal: {{remote: 'nohost'}}"))).starts_with("local.remote:"));
        assert!(
            err(local(&format!("key: '{KEY}'\nlocal: {{remote: 'h:1', colour: 1}}")))
                .contains("unknown field `colour`")
        );
        assert!(err(local(&format!(
            "key: '{KEY}'\nlocal: {{remote: 'h:1', idle_timeout: -1}}"
        )))
        .starts_with("local.idle_timeout:"));
        assert!(err(local(&format!(
            "key: '{KEY}'\nlocal: {{remote: 'h:1', users: [{{username: a, password: ''}}]}}"
        )))
        .starts_with("local.users[0].password:"));
        assert!(err(remote(&format!(
            "key: '{KEY}'\nremote: {{acl: [{{allow: 10.0.0.0/8}}, {{deny: '1.2.3.0/40'}}]}}"
        )))
        .starts_with("remote.acl[1].deny:"));
        assert!(err(remote(&format!("key: '{KEY}'\nlocal: {{remote: 'h:1'}}"))).starts_with("remote: section missing"));
    }

    #[test]
    fn example_key_is_refused_beyond_loopback() {
        let yaml = format!("key: '{EXAMPLE_KEY}'\nremote: {{listen: '0.0.0.0:8388'}}");
        assert!(err(remote(&yaml)).starts_with("key: this is the published example key"));
        let yaml = format!("key: '{EXAMPLE_KEY}'\nremote: {{listen: '127.0.0.1:8388'}}");
        assert!(remote(&yaml).is_ok());
    }

    #[test]
    fn udp_transport_and_bind_timeout() {
        assert_eq!(
            local(&format!("key: '{KEY}'\nlocal: {{remote: 'h:1'}}"))
                .unwrap()
                .udp_transport,
            UdpTransport::Udp
        );
        let tcp = local(&format!("key: '{KEY}'\nlocal: {{remote: 'h:1', udp_transport: tcp}}")).unwrap();
        assert_eq!(tcp.udp_transport, UdpTransport::Tcp);
        assert!(err(local(&format!(
            "key: '{KEY}'\nlocal: {{remote: 'h:1', udp_transport: quic}}"
        )))
        .starts_with("local.udp_transport:"));
        assert_eq!(
            remote(&format!("key: '{KEY}'\nremote: {{}}")).unwrap().bind_timeout,
            Duration::from_secs(120)
        );
        assert!(err(remote(&format!("key: '{KEY}'\nremote: {{bind_timeout: 0}}"))).starts_with("remote.bind_timeout:"));
    }

    #[test]
    fn secrets_stay_out_of_debug_output() {
        let cfg = local(&format!(
            "key: '{KEY}'\nlocal: {{remote: 'h:1', users: [{{username: alice, password: hunter22}}]}}"
        ))
        .unwrap();
        let shown = format!("{cfg:?}");
        assert!(!shown.contains("hunter22") && !shown.contains(KEY), "{shown}");
    }
}
