//! The effective config as `warren-X check` prints it: YAML in the file's own field names, with
//! every default filled in and every secret shown as `***` (keys also get their [`Key::id`], so
//! two ends can be compared without showing a key). Read by people, not parsed back: rules print
//! on one line each, in the order they are matched.

use std::fmt::Write as _;
use std::time::Duration;

use super::local_routes::{Hop, LocalAction, Via};
use super::remote::RemoteConfig;
use super::LocalConfig;
use crate::crypto::Key;
use crate::route::RemoteAction;

/// `key: *** (id 1a2b3c4d)`'s value part.
fn key(key: &Key) -> String {
    format!("*** (id {})", key.id())
}

/// Seconds as the config writes them: `10`, `0.5`.
fn secs(d: Duration) -> String {
    let s = d.as_secs_f64();
    if s.fract() == 0.0 {
        format!("{}", d.as_secs())
    } else {
        format!("{s}")
    }
}

/// ` []` after a list's key when the list is empty (its items follow on their own lines
/// otherwise).
fn empty(is_empty: bool) -> &'static str {
    if is_empty {
        " []"
    } else {
        ""
    }
}

/// A string value, quoted the way YAML needs it (JSON strings are valid YAML scalars).
fn quoted(text: &str) -> String {
    format!("{text:?}")
}

fn action(action: &LocalAction) -> String {
    match action {
        LocalAction::Direct => "direct: true".to_owned(),
        LocalAction::Block => "block: true".to_owned(),
        LocalAction::Proxy(list) => {
            let names: Vec<&str> = list.iter().map(Via::name).collect();
            format!("proxy: [{}]", names.join(", "))
        }
    }
}

/// The `metrics:` line of a section.
fn metrics(o: &mut String, listen: Option<std::net::SocketAddr>) {
    let _ = match listen {
        Some(addr) => writeln!(o, "  metrics: {{ listen: {addr} }}"),
        None => writeln!(o, "  metrics: null  # no /metrics endpoint"),
    };
}

/// The `local:` section (and the shared key) with defaults filled in.
pub fn local(config: &LocalConfig) -> String {
    let mut out = String::new();
    let o = &mut out;
    // Writing to a String cannot fail; the results are ignored for that reason.
    let _ = writeln!(o, "key: \"{}\"", key(&config.key));
    let _ = writeln!(o, "local:");
    let _ = writeln!(o, "  listen: {}", config.listen);
    if config.users.is_empty() {
        let _ = writeln!(
            o,
            "  users: []  # no login: anyone who reaches `listen` may use the proxy"
        );
    } else {
        let _ = writeln!(o, "  users:");
        for user in &config.users {
            let _ = writeln!(o, "    - {{ username: {}, password: \"***\" }}", quoted(&user.username));
        }
    }
    let routing = &config.routing;
    let _ = writeln!(o, "  remotes:");
    for remote in &routing.remotes {
        let user = match &remote.user_key {
            Some(k) => format!(", user_key: \"{}\"", key(k)),
            None => String::new(),
        };
        let _ = writeln!(
            o,
            "    {}: {{ address: {}, key: \"{}\"{user} }}",
            quoted(&remote.name),
            quoted(&remote.address),
            key(&remote.key)
        );
    }
    if !routing.chains.is_empty() {
        let _ = writeln!(o, "  chains:");
        for chain in &routing.chains {
            let hops: Vec<String> = chain
                .hops
                .iter()
                .map(|hop| match hop {
                    Hop::Warren(e) => quoted(&e.name),
                    Hop::Socks5 { address, login } => match login {
                        Some(l) => format!(
                            "{{ socks5: {}, username: {}, password: \"***\" }}",
                            quoted(&address.to_string()),
                            quoted(&l.username)
                        ),
                        None => format!("{{ socks5: {} }}", quoted(&address.to_string())),
                    },
                })
                .collect();
            let _ = writeln!(o, "    {}: [{}]", quoted(&chain.name), hops.join(", "));
        }
    }
    let _ = writeln!(
        o,
        "  routes:{}  # first match wins",
        empty(routing.router.rules.is_empty())
    );
    for rule in &routing.router.rules {
        let _ = writeln!(o, "    - {{ {}, {} }}", rule.matcher, action(&rule.action));
    }
    let _ = writeln!(o, "  default: {{ {} }}", action(&routing.router.default));
    let _ = writeln!(o, "  health_interval: {}", secs(routing.health_interval));
    let _ = writeln!(o, "  handshake_timeout: {}", secs(config.timeouts.handshake));
    let _ = writeln!(o, "  connect_timeout: {}", secs(config.timeouts.connect));
    let _ = writeln!(o, "  idle_timeout: {}", secs(config.timeouts.idle));
    let _ = writeln!(o, "  max_connections: {}", config.limits.max_connections);
    let _ = writeln!(o, "  shutdown_grace: {}", secs(config.limits.shutdown_grace));
    let transport = match config.udp_transport {
        super::UdpTransport::Udp => "udp",
        super::UdpTransport::Tcp => "tcp",
    };
    let _ = writeln!(o, "  udp_transport: {transport}");
    let _ = writeln!(o, "  warm_connections: {}", config.warm.per_remote);
    let _ = writeln!(o, "  warm_lifetime: {}", secs(config.warm.lifetime));
    let _ = writeln!(o, "  warm_linger: {}", secs(config.warm.linger));
    metrics(o, config.metrics);
    programs(o, &config.programs);
    out
}

/// `local.forwards`, `local.dns` and `local.redir`, when configured.
fn programs(o: &mut String, programs: &super::local_programs::Programs) {
    if !programs.forwards.is_empty() {
        let _ = writeln!(o, "  forwards:");
        for f in &programs.forwards {
            let _ = writeln!(
                o,
                "    - {{ listen: {}, to: {}, tcp: {}, udp: {} }}",
                f.listen,
                quoted(&f.to.to_string()),
                f.tcp,
                f.udp
            );
        }
    }
    if let Some(dns) = &programs.dns {
        let upstreams: Vec<String> = dns.upstreams.iter().map(|u| quoted(&u.to_string())).collect();
        let _ = writeln!(o, "  dns:");
        let _ = writeln!(o, "    listen: {}", dns.listen);
        let _ = writeln!(
            o,
            "    upstreams: [{}]{}",
            upstreams.join(", "),
            if upstreams.is_empty() {
                "  # the nameservers of /etc/resolv.conf"
            } else {
                ""
            }
        );
        let _ = writeln!(o, "    ttl: {}", dns.ttl);
        let _ = writeln!(o, "    cache_size: {}", dns.cache_size);
    }
    if let Some(redir) = &programs.redir {
        let _ = writeln!(o, "  redir: {{ listen: {}, udp: {} }}", redir.listen, redir.udp);
    }
}

/// The `remote:` section (and the shared key) with defaults filled in.
pub fn remote(config: &RemoteConfig) -> String {
    let mut out = String::new();
    let o = &mut out;
    let _ = writeln!(o, "key: \"{}\"", key(&config.key));
    let _ = writeln!(o, "remote:");
    let _ = writeln!(o, "  listen: {}", config.listen);
    let _ = writeln!(
        o,
        "  acl:{}  # first match wins; then the built-in denies (this host, loopback, link-local, metadata)",
        empty(config.acl.rules().is_empty())
    );
    for rule in config.acl.rules() {
        let _ = writeln!(o, "    - {{ {rule} }}");
    }
    let _ = writeln!(
        o,
        "  routes:{}  # first match wins; none matching: direct",
        empty(config.routes.rules.is_empty())
    );
    for rule in &config.routes.rules {
        let to = match &rule.action {
            RemoteAction::Direct => "direct: true".to_owned(),
            RemoteAction::Via(agent) => format!("via: {}", quoted(agent)),
        };
        let _ = writeln!(o, "    - {{ {}, {to} }}", rule.matcher);
    }
    if let Some(agent) = &config.agent {
        let _ = writeln!(
            o,
            "  agent: {{ server: {}, name: {}, key: \"{}\" }}",
            quoted(&agent.server),
            quoted(&agent.name),
            key(&agent.key)
        );
    }
    if config.user_table.is_some() {
        let _ = writeln!(
            o,
            "  users:  # requests need one of these keys; the shared key alone opens nothing"
        );
        for user in &config.users {
            let own: Vec<String> = user
                .acl
                .rules()
                .iter()
                .take(user.acl.rules().len().saturating_sub(config.acl.rules().len()))
                .map(|r| format!("{{ {r} }}"))
                .collect();
            let _ = writeln!(
                o,
                "    {}: {{ key: \"{}\", acl: [{}] }}",
                quoted(&user.name),
                key(&user.key),
                own.join(", ")
            );
        }
    }
    if !config.agents.is_empty() {
        let _ = writeln!(o, "  agents:");
        for agent in &config.agents {
            let _ = writeln!(o, "    {}: {{ key: \"{}\" }}", quoted(&agent.name), key(&agent.key));
        }
    }
    let _ = writeln!(o, "  handshake_timeout: {}", secs(config.timeouts.handshake));
    let _ = writeln!(o, "  connect_timeout: {}", secs(config.timeouts.connect));
    let _ = writeln!(o, "  idle_timeout: {}", secs(config.timeouts.idle));
    let _ = writeln!(o, "  max_connections: {}", config.limits.max_connections);
    let _ = writeln!(o, "  max_handshakes: {}", config.handshakes.max_handshakes);
    let _ = writeln!(
        o,
        "  max_handshakes_per_ip: {}",
        config.handshakes.max_handshakes_per_ip
    );
    let _ = writeln!(o, "  shutdown_grace: {}", secs(config.limits.shutdown_grace));
    let _ = writeln!(o, "  bind_timeout: {}", secs(config.bind_timeout));
    match config.outbound_source {
        Some(ip) => {
            let _ = writeln!(o, "  outbound_source: {ip}");
        }
        None => {
            let _ = writeln!(o, "  outbound_source: null  # the system picks");
        }
    }
    metrics(o, config.metrics);
    out
}
