//! What a running binary counts, for Prometheus: one process-wide set of counters and gauges
//! ([`get`]), recorded where the events happen (each recording is an atomic add), and served
//! as OpenMetrics text only when the config asks for it (`metrics.listen`, [`serve`]).
//!
//! ```text
//! warren_connections_total{front, command, result}   requests answered: front is socks5, socks4,
//!                                                     http-connect (local) or tunnel, agent_link (remote);
//!                                                     result is the reply's status (Status::label)
//! warren_bytes_total{direction}                       relayed payload: up = client→target, down
//! warren_open_connections                             client connections being served now
//! warren_refusals_total{reason}                       remote: requests answered with silence:
//!                                                     unauthenticated (probes, wrong keys),
//!                                                     stale (outside the window), before_start,
//!                                                     replay, misused_key, incomplete,
//!                                                     udp_without_user
//! warren_user_connections_total{user}                 remote: requests per user (remote.users)
//! warren_user_bytes_total{user, direction}            remote: bytes per user
//! warren_remote_up{remote}                            local: 1/0, each health-checked remote
//! warren_failovers_total{remote}                      local: a way out failed and the next was tried
//! warren_agent_sessions{agent}                        remote: registered reverse-tunnel agents
//! warren_agent_streams_total{agent}                   remote: streams opened through each agent
//! ```
//!
//! A metric only appears once it has been recorded (label sets are created on first use).

mod serve;

use std::sync::OnceLock;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

pub use serve::serve;

/// Labels of `warren_connections_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Request {
    pub front: &'static str,
    pub command: &'static str,
    pub result: &'static str,
}

/// Labels of `warren_bytes_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Direction {
    pub direction: &'static str,
}

/// Labels of `warren_refusals_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Reason {
    pub reason: &'static str,
}

/// Labels of the per-user metrics.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct User {
    pub user: String,
}

/// Labels of `warren_user_bytes_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct UserDirection {
    pub user: String,
    pub direction: &'static str,
}

/// Labels of the per-remote metrics on the local.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Remote {
    pub remote: String,
}

/// Labels of the per-agent metrics on a public remote.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Agent {
    pub agent: String,
}

/// Every metric of the process; see the module's table.
pub struct Metrics {
    registry: Registry,
    pub connections: Family<Request, Counter>,
    pub bytes: Family<Direction, Counter>,
    pub open_connections: Gauge,
    pub refusals: Family<Reason, Counter>,
    pub user_connections: Family<User, Counter>,
    pub user_bytes: Family<UserDirection, Counter>,
    pub remote_up: Family<Remote, Gauge>,
    pub failovers: Family<Remote, Counter>,
    pub agent_sessions: Family<Agent, Gauge>,
    pub agent_streams: Family<Agent, Counter>,
}

impl Metrics {
    fn new() -> Metrics {
        let mut registry = Registry::with_prefix("warren");
        let m = Metrics {
            registry: Registry::default(),
            connections: Family::default(),
            bytes: Family::default(),
            open_connections: Gauge::default(),
            refusals: Family::default(),
            user_connections: Family::default(),
            user_bytes: Family::default(),
            remote_up: Family::default(),
            failovers: Family::default(),
            agent_sessions: Family::default(),
            agent_streams: Family::default(),
        };
        registry.register(
            "connections",
            "Requests answered, by front end, command and reply status",
            m.connections.clone(),
        );
        registry.register(
            "bytes",
            "Payload bytes relayed: up is client to target, down the other way",
            m.bytes.clone(),
        );
        registry.register(
            "open_connections",
            "Client connections being served now",
            m.open_connections.clone(),
        );
        registry.register(
            "refusals",
            "Requests answered with silence, by reason (unauthenticated includes probes)",
            m.refusals.clone(),
        );
        registry.register(
            "user_connections",
            "Requests per user of remote.users",
            m.user_connections.clone(),
        );
        registry.register(
            "user_bytes",
            "Payload bytes per user of remote.users and direction",
            m.user_bytes.clone(),
        );
        registry.register(
            "remote_up",
            "Whether each health-checked remote answered its last check",
            m.remote_up.clone(),
        );
        registry.register(
            "failovers",
            "Times a way out through this remote failed and the next one was tried",
            m.failovers.clone(),
        );
        registry.register(
            "agent_sessions",
            "Reverse-tunnel agents registered now",
            m.agent_sessions.clone(),
        );
        registry.register(
            "agent_streams",
            "Streams opened through each reverse-tunnel agent",
            m.agent_streams.clone(),
        );
        Metrics { registry, ..m }
    }

    /// Counts one answered request.
    pub fn request(&self, front: &'static str, command: &'static str, result: crate::proto::status::Status) {
        self.connections
            .get_or_create(&Request {
                front,
                command,
                result: result.label(),
            })
            .inc();
    }

    /// Counts a request whose outcome is not a SOCKS status: a DNS query, as
    /// `{front="dns", command=how it was answered, result=its RCODE's name}`.
    pub fn request_with(&self, front: &'static str, command: &'static str, result: &'static str) {
        self.connections
            .get_or_create(&Request { front, command, result })
            .inc();
    }

    /// Counts a finished relay's bytes (`up`: client to target).
    pub fn relayed(&self, up: u64, down: u64) {
        self.bytes.get_or_create(&Direction { direction: "up" }).inc_by(up);
        self.bytes.get_or_create(&Direction { direction: "down" }).inc_by(down);
    }

    /// Counts a finished relay's bytes for `user` of `remote.users` (`up`: client to target).
    pub fn user_relayed(&self, user: &str, up: u64, down: u64) {
        for (direction, n) in [("up", up), ("down", down)] {
            let labels = UserDirection {
                user: label(user),
                direction,
            };
            self.user_bytes.get_or_create(&labels).inc_by(n);
        }
    }

    /// Counts a request the remote answered with silence.
    pub fn refused(&self, reason: &'static str) {
        self.refusals.get_or_create(&Reason { reason }).inc();
    }

    /// The registry as OpenMetrics text.
    pub fn encode(&self) -> String {
        let mut text = String::new();
        // Encoding into a String cannot fail: fmt::Write for String never errors.
        let _ = prometheus_client::encoding::text::encode(&mut text, &self.registry);
        text
    }
}

/// `text` as a label value: prometheus-client writes values as given, so a name from the
/// config with `\`, `"` or a line break would break the whole scrape; they are escaped the way
/// the exposition format reads them.
pub fn label(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

/// The process's metrics.
pub fn get() -> &'static Metrics {
    static METRICS: OnceLock<Metrics> = OnceLock::new();
    METRICS.get_or_init(Metrics::new)
}

/// Counts a client connection as open until dropped.
pub struct OpenConnection(());

impl OpenConnection {
    pub fn new() -> OpenConnection {
        get().open_connections.inc();
        OpenConnection(())
    }
}

impl Default for OpenConnection {
    fn default() -> Self {
        OpenConnection::new()
    }
}

impl Drop for OpenConnection {
    fn drop(&mut self) {
        get().open_connections.dec();
    }
}

#[cfg(test)]
mod tests {
    use super::label;

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(label("alice"), "alice");
        assert_eq!(label("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }
}
