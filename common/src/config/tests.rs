//! Whole-file checks of the config: the example and campus templates parse for both ends,
//! every error names its field, the example key stays on loopback, and secrets stay out of
//! `Debug` output.

use std::time::Duration;

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
    let text = include_str!("../../../config.example.yaml");
    let raw = RawConfig::from_yaml(text, "config.example.yaml").unwrap();
    let l = LocalConfig::try_from(&raw).unwrap();
    assert_eq!(l.listen, "127.0.0.1:1080".parse().unwrap());
    let r = RemoteConfig::try_from(&raw).unwrap();
    assert!(r.listen.ip().is_loopback());
}

/// docs/campus/*.yaml with a real key, as written and with their commented blocks enabled.
#[test]
fn campus_templates_are_valid() {
    let agent_key = Key::generate().to_base64();
    let fill = |t: &str| {
        t.replace("REPLACE-WITH-warren-remote-genkey-OUTPUT", KEY)
            .replace("REPLACE-WITH-A-SECOND-genkey-OUTPUT-FOR-THE-AGENT", &agent_key)
    };
    let uncomment = |t: &str| -> String {
        t.lines()
            .map(|l| match l.strip_prefix("  # ") {
                Some(rest) if !rest.starts_with(char::is_uppercase) => format!("  {rest}\n"),
                _ => format!("{l}\n"),
            })
            .collect()
    };
    let vps = fill(include_str!("../../../docs/campus/vps.yaml"));
    let campus = fill(include_str!("../../../docs/campus/campus.yaml"));
    let laptop = fill(include_str!("../../../docs/campus/laptop.yaml"));
    let r = RemoteConfig::try_from(&RawConfig::from_yaml(&vps, "vps.yaml").unwrap()).unwrap();
    assert_eq!(r.routes.rules.len(), 2);
    for text in [campus.clone(), uncomment(&campus)] {
        let r = RemoteConfig::try_from(&RawConfig::from_yaml(&text, "campus.yaml").unwrap()).unwrap();
        assert_eq!(r.agent.map(|a| a.name).as_deref(), Some("campus"));
    }
    for text in [laptop.clone(), uncomment(&laptop)] {
        LocalConfig::try_from(&RawConfig::from_yaml(&text, "laptop.yaml").unwrap()).unwrap();
    }
    // As written (its commented routes are laptop.yaml's, checked above).
    let programs = fill(include_str!("../../../docs/campus/laptop-programs.yaml"));
    let l = LocalConfig::try_from(&RawConfig::from_yaml(&programs, "laptop-programs.yaml").unwrap()).unwrap();
    assert_eq!(l.programs.forwards.len(), 2);
    assert!(l.programs.dns.is_some() && l.programs.redir.is_some());
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
        err(local(&format!("key: '{KEY}'\nlocal: {{remote: 'h:1', colour: 1}}"))).contains("unknown field `colour`")
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

/// Agents have their own keys: listed by name on the public remote, required on the agent, never
/// the shared key, never shared between two agents; `via:` names a listed agent.
#[test]
fn agent_keys_are_checked() {
    let a = Key::generate().to_base64();
    let b = Key::generate().to_base64();
    let section = |body: &str| -> Result<RemoteConfig, String> {
        let raw = RawConfig::from_yaml(&format!("key: '{KEY}'\nremote:\n{body}"), "t").map_err(|e| e.to_string())?;
        RemoteConfig::try_from(&raw).map_err(|e| e.to_string())
    };
    let ok = section(&format!("  agents: {{ campus: {{ key: '{a}' }}, lab: {{ key: '{b}' }} }}\n  routes: [{{ cidr: '10.0.0.0/8', via: lab }}]")).unwrap();
    assert_eq!(
        ok.agents.iter().map(|e| e.name.as_str()).collect::<Vec<_>>(),
        ["campus", "lab"]
    );
    let e = |body: &str| section(body).unwrap_err();
    assert!(
        e("  routes: [{ cidr: '10.0.0.0/8', via: lab }]").starts_with("remote.routes[0].via: no agent named \"lab\"")
    );
    assert!(e("  agents: { campus: {} }").starts_with("remote.agents.campus.key: missing"));
    assert!(e(&format!("  agents: {{ campus: {{ key: '{KEY}' }} }}"))
        .starts_with("remote.agents.campus.key: is the shared `key`"));
    assert!(e(&format!("  agents: {{ a: {{ key: '{a}' }}, b: {{ key: '{a}' }} }}"))
        .starts_with("remote.agents.b.key: is also remote.agents.a.key"));
    assert!(e("  agents: { campus: { key: 'AAAA' } }").starts_with("remote.agents.campus.key: key must be 32 bytes"));
    assert!(e(&format!("  agents: {{ campus: {{ key: '{a}', colour: 1 }} }}")).contains("unknown field `colour`"));
    assert!(e("  agent: { server: 'vps:8388', name: campus }").starts_with("remote.agent.key: missing"));
    assert!(e(&format!(
        "  agent: {{ server: 'vps:8388', name: campus, key: '{KEY}' }}"
    ))
    .starts_with("remote.agent.key: is the shared `key`"));
    assert!(e(&format!(
        "  agents: {{ lab: {{ key: '{a}' }} }}\n  agent: {{ server: 'vps:8388', name: campus, key: '{a}' }}"
    ))
    .starts_with("remote.agent.key: is also remote.agents.lab.key"));
    let agent = section(&format!("  agent: {{ server: 'vps:8388', name: campus, key: '{a}' }}")).unwrap();
    assert_eq!(agent.agent.map(|s| s.key.to_base64()), Some(a.clone()));
    // The name goes on the wire as a SOCKS5 domain: 1..=255 bytes, no spaces or control
    // characters (a name the remote's decoder would refuse could never register).
    assert!(
        e(&format!("  agent: {{ server: 'vps:8388', name: 'a b', key: '{a}' }}"))
            .starts_with("remote.agent.name: must be a name without spaces")
    );
    let long = "n".repeat(256);
    assert!(
        e(&format!("  agent: {{ server: 'vps:8388', name: {long}, key: '{a}' }}"))
            .starts_with("remote.agent.name: must be 1 to 255 bytes")
    );
}

#[test]
fn handshake_caps_default_and_errors_name_the_field() {
    let r = remote(&format!("key: '{KEY}'\nremote: {{}}")).unwrap();
    assert_eq!(
        (r.handshakes.max_handshakes, r.handshakes.max_handshakes_per_ip),
        (512, 32)
    );
    let r = remote(&format!("key: '{KEY}'\nremote: {{max_handshakes: 8}}")).unwrap();
    assert_eq!(
        (r.handshakes.max_handshakes, r.handshakes.max_handshakes_per_ip),
        (8, 8)
    );
    let r = remote(&format!(
        "key: '{KEY}'\nremote: {{max_handshakes: 8, max_handshakes_per_ip: 4}}"
    ))
    .unwrap();
    assert_eq!(
        (r.handshakes.max_handshakes, r.handshakes.max_handshakes_per_ip),
        (8, 4)
    );
    assert!(err(remote(&format!("key: '{KEY}'\nremote: {{max_handshakes: 0}}"))).starts_with("remote.max_handshakes:"));
    assert!(
        err(remote(&format!("key: '{KEY}'\nremote: {{max_handshakes_per_ip: 0}}")))
            .starts_with("remote.max_handshakes_per_ip:")
    );
    assert!(err(remote(&format!(
        "key: '{KEY}'\nremote: {{max_handshakes: 4, max_handshakes_per_ip: 5}}"
    )))
    .starts_with("remote.max_handshakes_per_ip:"));
    assert!(err(remote(&format!("key: '{KEY}'\nremote: {{max_handshakes: -1}}"))).contains("max_handshakes"));
}

#[test]
fn warm_settings_default_and_errors_name_the_field() {
    let warm = local(&format!("key: '{KEY}'\nlocal: {{remote: 'h:1'}}")).unwrap().warm;
    assert_eq!(warm, WarmSettings::default());
    assert_eq!(
        (warm.per_remote, warm.lifetime.as_secs(), warm.linger.as_secs()),
        (2, 5, 30)
    );
    let off = local(&format!("key: '{KEY}'\nlocal: {{remote: 'h:1', warm_connections: 0}}")).unwrap();
    assert_eq!(off.warm.per_remote, 0);
    for (field, value) in [
        ("warm_connections", "17"),
        ("warm_connections", "-1"),
        ("warm_lifetime", "0"),
        ("warm_linger", "-3"),
    ] {
        let text = err(local(&format!(
            "key: '{KEY}'\nlocal: {{remote: 'h:1', {field}: {value}}}"
        )));
        assert!(text.contains(&format!("local.{field}")), "{field}: {value}: {text}");
    }
}

#[test]
fn log_level_is_checked_and_made_canonical() {
    let raw = |level: &str| RawConfig::from_yaml(&format!("log_level: {level:?}"), "t.yaml").unwrap();
    assert_eq!(raw("Warning").log_level().unwrap().as_deref(), Some("warn"));
    assert_eq!(
        raw("info, warren_remote=DEBUG").log_level().unwrap().as_deref(),
        Some("info,warren_remote=debug")
    );
    assert_eq!(RawConfig::default().log_level().unwrap(), None);
    let e = raw("loud").log_level().unwrap_err().to_string();
    assert!(e.starts_with("log_level:") && e.contains("loud"), "{e}");
}

#[test]
fn metrics_listen_is_off_by_default_and_checked() {
    let with = |m: &str| local(&format!("key: {KEY:?}\nlocal: {{ remote: \"127.0.0.1:1\"{m} }}"));
    assert_eq!(with("").unwrap().metrics, None);
    assert_eq!(
        with(", metrics: { listen: \"127.0.0.1:9100\" }").unwrap().metrics,
        Some("127.0.0.1:9100".parse().unwrap())
    );
    assert!(err(with(", metrics: {}")).starts_with("local.metrics.listen: missing"));
    assert!(err(with(", metrics: { listen: \"nine\" }")).starts_with("local.metrics.listen"));
    let r = remote(&format!(
        "key: {KEY:?}\nremote: {{ metrics: {{ listen: \"[::1]:9101\" }} }}"
    ))
    .unwrap();
    assert_eq!(r.metrics, Some("[::1]:9101".parse().unwrap()));
}

#[test]
fn remote_users_are_checked_field_by_field() {
    let (alice, agent) = (Key::generate().to_base64(), Key::generate().to_base64());
    let with = |users: &str| {
        remote(&format!(
            "key: {KEY:?}\nremote:\n  agents: {{ campus: {{ key: {agent:?} }} }}\n  users:\n{users}"
        ))
    };
    let ok = with(&format!(
        "    alice: {{ key: {alice:?}, acl: [ {{ deny: \"10.0.0.0/8\" }} ] }}\n"
    ))
    .unwrap();
    assert_eq!(ok.users.len(), 1);
    assert_eq!(ok.users[0].name, "alice");
    assert!(ok.user_table.is_some());
    for (users, starts) in [
        ("    alice: {}\n".to_owned(), "remote.users.alice.key: missing"),
        (
            format!("    alice: {{ key: {KEY:?} }}\n"),
            "remote.users.alice.key: is the shared `key`",
        ),
        (
            format!("    alice: {{ key: {agent:?} }}\n"),
            "remote.users.alice.key: is also remote.agents.campus.key",
        ),
        (
            format!("    alice: {{ key: {alice:?} }}\n    bob: {{ key: {alice:?} }}\n"),
            "remote.users.bob.key: is also remote.users.alice.key",
        ),
        (
            format!("    alice: {{ key: {alice:?}, acl: [ {{ deny: \"10.0.0.0/33\" }} ] }}\n"),
            "remote.users.alice.acl[0].deny",
        ),
    ] {
        let e = err(with(&users));
        assert!(e.starts_with(starts), "{e}");
    }
    // Without users, no table: the shared key opens requests as before.
    assert!(remote(&format!("key: {KEY:?}\nremote: {{}}"))
        .unwrap()
        .user_table
        .is_none());
}

#[test]
fn a_user_key_cannot_be_this_remotes_own_agent_key() {
    let agent = Key::generate().to_base64();
    let e = err(remote(&format!(
        "key: {KEY:?}\nremote:\n  agent: {{ server: \"vps.example:8388\", name: campus, key: {agent:?} }}\n  users: {{ alice: {{ key: {agent:?} }} }}\n"
    )));
    assert!(e.starts_with("remote.users.alice.key: is also remote.agent.key"), "{e}");
}

/// `local.forwards`, `local.dns` and `local.redir`: defaults, and errors naming the field.
#[test]
fn program_front_ends_are_checked() {
    let with = |extra: &str| {
        local(&format!(
            "key: \"{KEY}\"\nlocal:\n  remote: \"127.0.0.1:8388\"\n{extra}"
        ))
    };
    let ok = with(
        "  forwards:\n    - { listen: \"127.0.0.1:2222\", to: \"lab1.campus.example:22\" }\n    \
         - { listen: \"127.0.0.1:5353\", to: \"10.0.0.53:53\", udp: true }\n    \
         - { listen: \"127.0.0.1:6000\", to: \"[::1]:6000\", tcp: true, udp: true }\n  \
         dns: { listen: \"127.0.0.1:53\", upstreams: [\"192.0.2.1\", \"[2001:db8::1]:5353\"] }\n  \
         redir: { listen: \"127.0.0.1:12345\", udp: true }\n",
    )
    .unwrap();
    let f = &ok.programs.forwards;
    assert_eq!((f[0].tcp, f[0].udp), (true, false), "TCP is the default");
    assert_eq!((f[1].tcp, f[1].udp), (false, true), "`udp: true` alone is UDP only");
    assert_eq!((f[2].tcp, f[2].udp), (true, true));
    let dns = ok.programs.dns.as_ref().unwrap();
    assert_eq!(
        dns.upstreams,
        ["192.0.2.1:53".parse().unwrap(), "[2001:db8::1]:5353".parse().unwrap()]
    );
    assert_eq!((dns.ttl, dns.cache_size), (60, 4096));
    assert!(ok.programs.redir.as_ref().unwrap().udp);
    // Listeners in the binary's binding order: forwards, DNS (both), redir.
    let order: Vec<_> = ok.programs.listeners().into_iter().map(|l| l.field).collect();
    assert_eq!(order[3], "local.dns.listen");
    assert_eq!(order[4], "local.redir.listen");

    for (extra, field) in [
        ("  forwards:\n    - { to: \"a:1\" }\n", "local.forwards[0].listen"),
        ("  forwards:\n    - { listen: \"127.0.0.1:1\" }\n", "local.forwards[0].to"),
        ("  forwards:\n    - { listen: \"127.0.0.1:1\", to: \"no-port\" }\n", "local.forwards[0].to"),
        ("  forwards:\n    - { listen: \"127.0.0.1:1\", to: \"a:1\", tcp: false }\n", "local.forwards[0].tcp"),
        ("  forwards:\n    - { listen: \"127.0.0.1:1\", to: \"a:1\", bogus: 1 }\n", "bogus"),
        (
            "  forwards:\n    - { listen: \"127.0.0.1:1\", to: \"a:1\" }\n    - { listen: \"127.0.0.1:1\", to: \"b:2\" }\n",
            "local.forwards[1].listen",
        ),
        ("  forwards:\n    - { listen: \"127.0.0.1:1080\", to: \"a:1\" }\n", "local.forwards[0].listen"),
        ("  dns: { upstreams: [] }\n", "local.dns.listen"),
        ("  dns: { listen: \"127.0.0.1:53\", upstreams: [\"nope\"] }\n", "local.dns.upstreams[0]"),
        ("  dns: { listen: \"127.0.0.1:53\", upstreams: [\"127.0.0.1\"] }\n", "local.dns.upstreams[0]"),
        ("  dns: { listen: \"127.0.0.1:53\", ttl: 0 }\n", "local.dns.ttl"),
        ("  dns: { listen: \"0.0.0.0:53\", upstreams: [\"127.0.0.1\"] }\n", "local.dns.upstreams[0]"),
        ("  dns: { listen: \"[::]:53\", upstreams: [\"[::1]:53\"] }\n", "local.dns.upstreams[0]"),
        ("  forwards:\n    - { listen: \"127.0.0.1:2222\", to: \"127.0.0.1:2222\" }\n", "local.forwards[0].to"),
        ("  forwards:\n    - { listen: \"127.0.0.1:2222\", to: \"127.0.0.1:1080\" }\n", "local.forwards[0].to"),
        ("  redir: { udp: true }\n", "local.redir.listen"),
        (
            "  dns: { listen: \"127.0.0.1:5353\" }\n  forwards:\n    - { listen: \"0.0.0.0:5353\", to: \"a:1\", udp: true }\n",
            "local.dns.listen",
        ),
    ] {
        let e = err(with(extra));
        assert!(e.contains(field), "{extra:?}: {e}");
    }
    // A UDP forward may share a port number with a TCP one.
    with("  forwards:\n    - { listen: \"127.0.0.1:7\", to: \"a:7\" }\n    - { listen: \"127.0.0.1:7\", to: \"a:7\", udp: true }\n")
        .unwrap();
}
