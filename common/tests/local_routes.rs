//! The local's routing config (`warren_common::config::local_routes`): the full shape, the single-remote
//! form, an error naming the field for every invalid value, the example file's commented block,
//! and the health flags clones share. Pure: no sockets.

use warren_common::config::local_routes::*;
use warren_common::config::{ConfigError, LocalConfig, RawConfig};
use warren_common::proto::address::Address;

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
    Address::domain(name, 80).unwrap()
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
  inner: { address: "10.1.0.1:8388", key: "AgICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgI=" }
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
        names(r.router.route(&Address::domain("mx.example", 25).unwrap())),
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
            "remotes: { a: { address: 'h:1' }, b: { address: 'h:2' } }\nchains: { c: [ a, b ] }",
            "local.chains.c[1]: remote \"b\" has the same key as remote \"a\", an earlier hop",
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
