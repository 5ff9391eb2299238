//! The `local:` section: its serde shape ([`RawLocal`]) and the checked [`LocalConfig`]
//! warren-local runs from. Routing (`remotes`, `chains`, `routes`, `default`) is checked by
//! [`super::local_routes`]; this file checks the rest and puts the two together.
//!
//! ```text
//! RawLocal ──┬─ listen, users, timeouts, limits, udp_transport ── checked here ──┐
//!            └─ RoutingFields ── local_routes::build ── LocalRouting ───────────┴─> LocalConfig
//! ```

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use serde::Deserialize;

use super::error::{invalid, ConfigError};
use super::limits::{limits, Timeouts};
use super::local_programs::{Programs, RawDns, RawForward, RawRedir};
use super::local_routes::{build, LocalAction, LocalRouting, RawDefault, RawEndpoint, RawHop, RawRoute, RoutingFields};
use super::parse::{one_to_255_bytes, seconds, socket_addr};
use super::secret::{Secret, User};
use crate::crypto::Key;
use crate::server::ServerLimits;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawLocal {
    pub listen: Option<String>,
    pub remote: Option<String>,
    /// This laptop's own key on remotes with per-user keys (PROTOCOL.md §19).
    pub user_key: Option<String>,
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
    /// TCP connections per remote kept open ahead of requests (0: none).
    pub warm_connections: Option<usize>,
    /// Longest a warm connection waits for a request, in seconds.
    pub warm_lifetime: Option<f64>,
    /// Seconds without a request after which no more warm connections are opened.
    pub warm_linger: Option<f64>,
    /// The Prometheus endpoint (off when absent).
    pub metrics: Option<super::RawMetrics>,
    /// Fixed-target port forwards (`local_programs`).
    pub forwards: Option<Vec<RawForward>>,
    /// The DNS forwarder.
    pub dns: Option<RawDns>,
    /// The transparent proxy (Linux).
    pub redir: Option<RawRedir>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawUser {
    pub username: String,
    pub password: String,
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
    /// Connections to each remote opened ahead of requests (`local.warm_*`).
    pub warm: WarmSettings,
    /// Where `/metrics` is served (`local.metrics.listen`); `None`: not served.
    pub metrics: Option<SocketAddr>,
    /// Remotes, chains and the routing rules (a single `local.remote` is the default route).
    /// Remote addresses are resolved on each connection, so a changed DNS record is picked up
    /// without a restart.
    pub routing: LocalRouting,
    /// Front ends for programs that do not speak SOCKS: `local.forwards`, `local.dns`,
    /// `local.redir` (all off unless configured).
    pub programs: Programs,
}

/// Connections to each remote opened before a request needs them, so that a request waits for
/// one round trip (its tunnel handshake) instead of two (TCP's, then the tunnel's). See
/// `warren_local`'s `outbound/warm.rs` for the policy and docs/PROTOCOL.md §11 for why the
/// lifetime stays below the remote's handshake deadline.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct WarmSettings {
    /// Warm connections kept per remote (`local.warm_connections`, default 2, at most 16; 0
    /// turns warming off).
    pub per_remote: usize,
    /// Longest a warm connection waits for a request (`local.warm_lifetime`, default 5 s); each
    /// one is given a random lifetime between half of it and all of it.
    pub lifetime: Duration,
    /// How long after the last request warm connections are still replaced
    /// (`local.warm_linger`, default 30 s): an idle laptop opens nothing.
    pub linger: Duration,
}

impl Default for WarmSettings {
    fn default() -> Self {
        WarmSettings {
            per_remote: 2,
            lifetime: Duration::from_secs(5),
            linger: Duration::from_secs(30),
        }
    }
}

/// Largest `local.warm_connections`.
pub const MAX_WARM_CONNECTIONS: usize = 16;

/// How the local carries a UDP association's datagrams to the remote (`local.udp_transport`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UdpTransport {
    /// Each datagram sealed on its own and sent to the remote's UDP socket (same port number
    /// as its TCP listener).
    Udp,
    /// One tunnel stream per association, datagrams length-prefixed inside it.
    Tcp,
}

impl LocalConfig {
    /// Checks the `local:` section, with the shared `key` already checked. Errors name the
    /// field, checked in this order: listen, health_interval, routing, users, timeouts, limits,
    /// udp_transport.
    pub(crate) fn from_section(key: Key, local: &RawLocal) -> Result<LocalConfig, ConfigError> {
        let listen = socket_addr("local.listen", local.listen.as_deref(), "127.0.0.1:1080")?;
        let health_interval = seconds("local.health_interval", local.health_interval, 5.0)?;
        let fields = RoutingFields {
            remote: local.remote.as_deref(),
            user_key: local.user_key.as_deref(),
            remotes: local.remotes.as_ref(),
            chains: local.chains.as_ref(),
            routes: local.routes.as_deref(),
            default: local.default.as_ref(),
        };
        let routing = build(fields, &key, health_interval)?;
        let remote = match (&local.remote, &routing.router.default) {
            (Some(address), _) => address.clone(),
            (None, LocalAction::Proxy(list)) => list.iter().map(|v| v.name()).collect::<Vec<_>>().join(", "),
            (None, LocalAction::Direct) => "direct".to_owned(),
            (None, LocalAction::Block) => "block".to_owned(),
        };
        let mut users = Vec::new();
        for (i, user) in local.users.iter().flatten().enumerate() {
            one_to_255_bytes(format!("local.users[{i}].username"), &user.username)?;
            one_to_255_bytes(format!("local.users[{i}].password"), &user.password)?;
            users.push(User {
                username: user.username.clone(),
                password: Secret::new(user.password.clone()),
            });
        }
        let metrics = super::metrics_listen("local", local.metrics.as_ref())?;
        let programs = Programs::from_raw(local.forwards.as_deref(), local.dns.as_ref(), local.redir.as_ref())?;
        let mut main = vec![("local.listen", listen)];
        main.extend(metrics.map(|m| ("local.metrics.listen", m)));
        programs.check_clashes(&main)?;
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
                // Packets carry no user identity: with a user key, UDP rides in the tunnel.
                None if routing.remotes.iter().any(|r| r.user_key.is_some()) => UdpTransport::Tcp,
                None => UdpTransport::Udp,
                Some("udp") if routing.remotes.iter().any(|r| r.user_key.is_some()) => {
                    return Err(invalid(
                        "local.udp_transport",
                        "`udp` cannot carry a user key (remote.users accept UDP only inside the tunnel): use `tcp`, the default with a user_key",
                    ))
                }
                Some("udp") => UdpTransport::Udp,
                Some("tcp") => UdpTransport::Tcp,
                Some(other) => {
                    return Err(invalid(
                        "local.udp_transport",
                        format!("{other:?} is not `udp` or `tcp`"),
                    ))
                }
            },
            warm: warm_settings(local)?,
            metrics,
            routing,
            programs,
        })
    }
}

/// `local.warm_connections`, `local.warm_lifetime` and `local.warm_linger`.
fn warm_settings(local: &RawLocal) -> Result<WarmSettings, ConfigError> {
    let default = WarmSettings::default();
    let per_remote = local.warm_connections.unwrap_or(default.per_remote);
    if per_remote > MAX_WARM_CONNECTIONS {
        return Err(invalid(
            "local.warm_connections",
            format!("{per_remote} is more than {MAX_WARM_CONNECTIONS}"),
        ));
    }
    Ok(WarmSettings {
        per_remote,
        lifetime: seconds(
            "local.warm_lifetime",
            local.warm_lifetime,
            default.lifetime.as_secs_f64(),
        )?,
        linger: seconds("local.warm_linger", local.warm_linger, default.linger.as_secs_f64())?,
    })
}
