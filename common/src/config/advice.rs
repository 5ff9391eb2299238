//! What a valid config may still get wrong, one sentence each: **warnings** (probably not meant;
//! logged at start, before binding, and printed by `check`) and **notes** (what the operator
//! must do outside warren, such as opening ports; printed by `check` only).

use super::local_routes::Endpoint;
use super::remote::RemoteConfig;
use super::{LocalConfig, EXAMPLE_KEY};
use crate::crypto::Key;
use crate::proto::address::Address;

/// Whether an endpoint's address is this machine (an IP literal on loopback, or `localhost`).
fn on_loopback(endpoint: &Endpoint) -> bool {
    match &endpoint.target {
        Address::Ip(addr) => addr.ip().is_loopback(),
        Address::Domain(name, _) => name.as_str().eq_ignore_ascii_case("localhost"),
    }
}

/// Warnings about the `local:` section: an open proxy beyond loopback, a metrics endpoint beyond
/// loopback, the published example
/// key used for a remote off this machine (the remote refuses it there), and two remotes
/// sharing one key (a request recorded on the way to one can be replayed to the other inside
/// the timestamp window, docs/PROTOCOL.md §10).
pub fn local_warnings(config: &LocalConfig) -> Vec<String> {
    let mut warnings = Vec::new();
    if !config.listen.ip().is_loopback() && config.users.is_empty() {
        warnings.push(format!(
            "local.listen is {}, beyond loopback, and local.users is empty: anyone who can reach \
             this port can use the proxy (an open proxy); add local.users or listen on 127.0.0.1",
            config.listen
        ));
    }
    warnings.extend(metrics_warning("local", config.metrics));
    // Forwards, DNS and redir have no login: beyond loopback they serve whoever reaches them.
    for listen in config.programs.listeners() {
        if !listen.addr.ip().is_loopback() {
            warnings.push(format!(
                "{} is {}, beyond loopback: anyone who can reach it uses your tunnel (these front ends \
                 have no login); listen on 127.0.0.1 unless this machine is a router for its LAN",
                listen.field, listen.addr
            ));
        }
    }
    let example = Key::from_base64(EXAMPLE_KEY).ok();
    for remote in &config.routing.remotes {
        if Some(&remote.key) == example.as_ref() && !on_loopback(remote) {
            warnings.push(format!(
                "remote {:?} ({}) uses the published example key: anyone can read it, and \
                 warren-remote refuses it beyond loopback; generate one with `warren-remote genkey`",
                remote.name, remote.address
            ));
        }
    }
    let remotes = &config.routing.remotes;
    for (i, a) in remotes.iter().enumerate() {
        for b in remotes.iter().skip(i + 1) {
            if a.key == b.key && a.address != b.address {
                warnings.push(format!(
                    "remotes {:?} and {:?} share a key: a request recorded on the way to one can be \
                     replayed to the other within 120 s (docs/PROTOCOL.md §10); give each its own key",
                    a.name, b.name
                ));
            }
        }
    }
    warnings
}

/// Warnings about the `remote:` section: a metrics endpoint beyond loopback; an agent whose own
/// listener is reachable beyond loopback (it accepts the shared key, so a request recorded on the laptop–VPS link could be
/// replayed to it; docs/PROTOCOL.md §10).
pub fn remote_warnings(config: &RemoteConfig) -> Vec<String> {
    let mut warnings: Vec<String> = metrics_warning("remote", config.metrics).into_iter().collect();
    if config.agent.is_some() && !config.listen.ip().is_loopback() {
        warnings.push(format!(
            "remote.listen is {} on an agent: its listener accepts the shared key, so a request \
             recorded between a laptop and the public remote can be replayed to it; listen on \
             127.0.0.1 (laptops reach the agent through the public remote)",
            config.listen
        ));
    }
    warnings
}

/// A metrics endpoint beyond loopback: it has no login, and its counters tell who uses the
/// proxy how much.
fn metrics_warning(section: &str, metrics: Option<std::net::SocketAddr>) -> Option<String> {
    let addr = metrics.filter(|a| !a.ip().is_loopback())?;
    Some(format!(
        "{section}.metrics.listen is {addr}, beyond loopback: /metrics has no login and its counters show \
         who uses the proxy how much; keep it on 127.0.0.1 or firewall it to your Prometheus"
    ))
}

/// What the operator of a remote must arrange: the firewall ports.
pub fn remote_notes(config: &RemoteConfig) -> Vec<String> {
    let port = config.listen.port();
    vec![format!(
        "open TCP {port} and UDP {port} to the laptops: TCP carries the tunnels, UDP the datagrams \
         of UDP ASSOCIATE (warren-local's default `udp_transport: udp`; with `tcp` it needs TCP only)"
    )]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::RawConfig;

    const KEY: &str = "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=";

    fn local(yaml: &str) -> Vec<String> {
        let raw = RawConfig::from_yaml(yaml, "t.yaml").unwrap();
        local_warnings(&LocalConfig::try_from(&raw).unwrap())
    }

    #[test]
    fn the_example_key_off_loopback_is_warned_about_and_on_loopback_is_not() {
        let on = format!("key: {EXAMPLE_KEY:?}\nlocal: {{ remote: \"127.0.0.1:8388\" }}");
        assert!(local(&on).is_empty());
        let named = format!("key: {EXAMPLE_KEY:?}\nlocal: {{ remote: \"localhost:8388\" }}");
        assert!(local(&named).is_empty());
        let off = format!("key: {EXAMPLE_KEY:?}\nlocal: {{ remote: \"vps.example.net:8388\" }}");
        let warnings = local(&off);
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        assert!(warnings[0].contains("published example key"), "{warnings:?}");
    }

    #[test]
    fn two_remotes_sharing_a_key_are_warned_about() {
        let other = Key::generate().to_base64();
        let shared = format!(
            "key: {KEY:?}\nlocal:\n  remotes:\n    a: {{ address: \"a.example:1\" }}\n    b: {{ address: \"b.example:1\" }}\n  default: a\n"
        );
        let warnings = local(&shared);
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        assert!(warnings[0].contains("\"a\" and \"b\" share a key"), "{warnings:?}");
        let own = format!(
            "key: {KEY:?}\nlocal:\n  remotes:\n    a: {{ address: \"a.example:1\" }}\n    b: {{ address: \"b.example:1\", key: {other:?} }}\n  default: a\n"
        );
        assert!(local(&own).is_empty());
    }

    #[test]
    fn an_agent_listening_beyond_loopback_is_warned_about() {
        let agent = Key::generate().to_base64();
        let yaml = |listen: &str| {
            format!(
                "key: {KEY:?}\nremote: {{ listen: {listen:?}, agent: {{ server: \"vps.example:8388\", name: campus, key: {agent:?} }} }}"
            )
        };
        let warnings = |listen: &str| {
            let raw = RawConfig::from_yaml(&yaml(listen), "t.yaml").unwrap();
            remote_warnings(&RemoteConfig::try_from(&raw).unwrap())
        };
        assert!(warnings("127.0.0.1:8389").is_empty());
        assert_eq!(warnings("0.0.0.0:8389").len(), 1);
    }
}
