//! `warren-local check` as a user runs it: the effective config printed with secrets masked,
//! bad configs refused with the field named, risky ones warned about, nothing bound; and
//! `check --connect` telling apart, through real sockets, a remote that is fine, one that holds
//! another key, a port that is not warren, a port where nothing listens, and (through the
//! library, with a pretend clock) a clock too far off.

use std::io::{Read, Write};
use std::net::TcpListener;
use std::process::{Command, Output};
use std::time::Duration;

use warren_common::config::{LocalConfig, RawConfig, EXAMPLE_KEY};
use warren_common::crypto::Key;
use warren_local::check::{probe, Verdict};

const BIN: &str = env!("CARGO_BIN_EXE_warren-local");

#[path = "../../tests/cli_harness.rs"]
mod cli_harness;
use cli_harness::{config_file, free_port, key, start_remote};

/// Runs `warren-local ARGS` to its end (blocking), RUST_LOG unset.
fn run(args: &[&str]) -> Output {
    Command::new(BIN)
        .args(args)
        .env_remove("RUST_LOG")
        .output()
        .expect("run warren-local")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn check_prints_the_effective_config_with_secrets_masked_and_binds_nothing() {
    let k = key();
    let other = key();
    // The listen port is held: check must not try to bind it.
    let held = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = held.local_addr().unwrap().port();
    let yaml = format!(
        "key: \"{k}\"\nlocal:\n  listen: \"127.0.0.1:{port}\"\n  users:\n    - {{ username: alice, password: \"hunter2-secret\" }}\n  remotes:\n    vps: {{ address: \"vps.example.net:8388\" }}\n    inner: {{ address: \"10.1.0.1:8388\", key: \"{other}\" }}\n  chains:\n    deep: [vps, inner]\n  routes:\n    - {{ domain: \"campus.example.edu\", proxy: deep }}\n    - {{ cidr: \"192.168.0.0/16\", port: \"1-1023\", direct: true }}\n  default: vps\n"
    );
    let file = config_file(&yaml);
    let out = run(&["check", "-c", file.to_str().unwrap()]);
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}\n{}", text(&out.stderr));
    assert!(
        !stdout.contains("hunter2") && !stdout.contains(&k) && !stdout.contains(&other),
        "{stdout}"
    );
    let id = |k: &str| Key::from_base64(k).unwrap().id();
    assert!(stdout.contains(&format!("*** (id {})", id(&k))), "{stdout}");
    assert!(stdout.contains(&format!("*** (id {})", id(&other))), "{stdout}");
    // YAML, in the file's terms, with the defaults filled in and the rules in order.
    let doc: serde_yaml::Value = serde_yaml::from_str(&stdout).expect("check prints YAML");
    let local = &doc["local"];
    assert_eq!(local["listen"].as_str(), Some(format!("127.0.0.1:{port}").as_str()));
    assert_eq!(local["idle_timeout"].as_u64(), Some(300));
    assert_eq!(local["udp_transport"].as_str(), Some("udp"));
    assert_eq!(local["users"][0]["username"].as_str(), Some("alice"));
    assert_eq!(local["chains"]["deep"][1].as_str(), Some("inner"));
    assert_eq!(local["routes"][0]["domain"].as_str(), Some("campus.example.edu"));
    assert_eq!(local["routes"][1]["port"].as_str(), Some("1-1023"));
    assert_eq!(local["routes"][1]["direct"].as_bool(), Some(true));
    assert_eq!(local["default"]["proxy"][0].as_str(), Some("vps"));
    drop(held);
}

#[test]
fn check_refuses_a_bad_config_with_the_field_named() {
    let file = config_file(&format!(
        "key: \"{}\"\nlocal:\n  remote: \"127.0.0.1:1\"\n  idle_timeout: -1\n",
        key()
    ));
    let out = run(&["check", "-c", file.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("local.idle_timeout"),
        "{}",
        text(&out.stderr)
    );
    assert!(out.stdout.is_empty(), "{}", text(&out.stdout));
    let missing = run(&["check", "-c", "/nonexistent/warren.yaml"]);
    assert_eq!(missing.status.code(), Some(2));
    assert!(text(&missing.stderr).contains("/nonexistent/warren.yaml"));
}

#[test]
fn check_warns_about_risky_configs_and_still_exits_0() {
    let yaml = format!(
        "key: {EXAMPLE_KEY:?}\nlocal:\n  listen: \"0.0.0.0:{}\"\n  remotes:\n    a: {{ address: \"a.example.net:8388\" }}\n    b: {{ address: \"b.example.net:8388\" }}\n  default: {{ proxy: [a, b] }}\n",
        free_port()
    );
    let file = config_file(&yaml);
    let out = run(&["check", "-c", file.to_str().unwrap()]);
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}");
    let warnings: Vec<&str> = stdout.lines().filter(|l| l.starts_with("# warning: ")).collect();
    assert!(warnings.iter().any(|w| w.contains("open proxy")), "{stdout}");
    assert!(warnings.iter().any(|w| w.contains("published example key")), "{stdout}");
    assert!(
        warnings.iter().any(|w| w.contains("\"a\" and \"b\" share a key")),
        "{stdout}"
    );
    // The same warnings as the start logs, and no more.
    assert_eq!(warnings.len(), 4, "{stdout}");
}

/// `check --connect` against `remote` (host:port) with `key`: exit code and stdout.
async fn check_connect(key: &str, remote: String) -> (Option<i32>, String) {
    connect_check_of(&format!(
        "key: \"{key}\"\nlocal:\n  remote: \"{remote}\"\n  connect_timeout: 8\n"
    ))
    .await
}

/// `check --connect` on a config file holding `yaml`: exit code and stdout.
async fn connect_check_of(yaml: &str) -> (Option<i32>, String) {
    let file = config_file(yaml);
    let out = tokio::task::spawn_blocking(move || run(&["check", "--connect", "-c", file.to_str().unwrap()]))
        .await
        .unwrap();
    (out.status.code(), text(&out.stdout))
}

#[tokio::test(flavor = "multi_thread")]
async fn check_connect_tells_right_key_wrong_key_not_warren_and_unreachable_apart() {
    let k = key();
    // A short hold, so the wrong-key case ends soon (the remote closes at 0.57-1.0 s).
    let (remote, stop) = start_remote(&k, "  handshake_timeout: 1\n").await;

    let (code, out) = check_connect(&k, remote.to_string()).await;
    assert_eq!(code, Some(0), "{out}");
    assert!(
        out.contains("ok: TCP in") && out.contains("key right") && out.contains("clocks agree"),
        "{out}"
    );

    let wrong = key();
    let (code, out) = check_connect(&wrong, remote.to_string()).await;
    assert_eq!(code, Some(1), "{out}");
    assert!(
        out.contains("nothing answered") && out.contains("key is wrong"),
        "{out}"
    );
    assert!(out.contains(&Key::from_base64(&wrong).unwrap().id()), "{out}");

    // An SSH-like server: a banner on accept.
    let ssh = TcpListener::bind("127.0.0.1:0").unwrap();
    let ssh_addr = ssh.local_addr().unwrap();
    std::thread::spawn(move || {
        // One connection per request the check sends (at most 29), each answered in turn.
        for conn in ssh.incoming().take(29) {
            let Ok(mut conn) = conn else { return };
            let _ = conn.write_all(b"SSH-2.0-OpenSSH_9.2p1\r\n");
            conn.set_read_timeout(Some(Duration::from_millis(100))).unwrap();
            let _ = conn.read(&mut [0u8; 256]);
        }
    });
    let (code, out) = check_connect(&k, ssh_addr.to_string()).await;
    assert_eq!(code, Some(1), "{out}");
    assert!(
        out.contains("not a warren remote") && out.contains("SSH-2.0-OpenSSH_9.2p1"),
        "{out}"
    );

    let (code, out) = check_connect(&k, format!("127.0.0.1:{}", free_port())).await;
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("FAILED: TCP:"), "{out}");
    stop.cancel();
}

#[tokio::test(flavor = "multi_thread")]
async fn check_connect_measures_a_clock_too_far_off() {
    let k = key();
    let (remote, stop) = start_remote(&k, "  handshake_timeout: 1\n").await;
    let raw = RawConfig::from_yaml(&format!("key: \"{k}\"\nlocal: {{ remote: \"{remote}\" }}"), "t.yaml").unwrap();
    let config = LocalConfig::try_from(&raw).unwrap();
    let endpoint = &config.routing.remotes[0];
    let wait = Duration::from_secs(5);
    // Our clock 90 s ahead: still accepted, the difference read from the response.
    match probe(endpoint, 90, wait).await {
        Verdict::Ok { skew, .. } => assert!((-91..=-89).contains(&skew), "{skew}"),
        other => panic!("{other:?}"),
    }
    // 5 minutes ahead and 8 hours behind: refused as stamped, found by the shifted requests (the
    // difference is measured when the answer arrives, so it is exact to the second).
    for (ours, expected) in [(300, -300), (-8 * 3600, 8 * 3600)] {
        match probe(endpoint, ours, wait).await {
            Verdict::ClockSkew { skew } => assert!((expected - 1..=expected + 1).contains(&skew), "{skew}"),
            other => panic!("{other:?}"),
        }
    }
    // A day off is beyond what is tried: silence, as for a wrong key.
    assert_eq!(probe(endpoint, 86_400, wait).await, Verdict::Silent);
    stop.cancel();
}

// A laptop with its own key on a remote with per-user keys (PROTOCOL.md §19): check shows the
// user key masked and UDP inside the tunnel, --connect finds the key right, SOCKS5 traffic
// flows; a user key equal to the shared key, or with the UDP packet transport, is refused.
#[tokio::test(flavor = "multi_thread")]
async fn a_user_key_seals_requests_and_checks() {
    let (shared, mine) = (key(), key());
    let users = format!("  acl: [ {{ allow: \"127.0.0.1\" }} ]\n  users:\n    me: {{ key: \"{mine}\" }}\n");
    let (remote, stop) = start_remote(&shared, &users).await;
    let port = free_port();
    let yaml = format!(
        "key: \"{shared}\"\nlocal:\n  listen: \"127.0.0.1:{port}\"\n  remote: \"{remote}\"\n  user_key: \"{mine}\"\n"
    );
    let (code, stdout) = connect_check_of(&yaml).await;
    assert_eq!(code, Some(0), "{stdout}");
    let id = Key::from_base64(&mine).unwrap().id();
    assert!(stdout.contains(&format!("user_key: \"*** (id {id})\"")), "{stdout}");
    assert!(stdout.contains("udp_transport: tcp"), "{stdout}");
    assert!(stdout.contains(&format!("key right (id {id})")), "{stdout}");
    assert!(!stdout.contains(&mine), "{stdout}");

    // Traffic through the proxy binary, sealed with the user key.
    let target = TcpListener::bind("127.0.0.1:0").unwrap();
    let target_addr = target.local_addr().unwrap();
    std::thread::spawn(move || {
        if let Ok((mut conn, _)) = target.accept() {
            let mut buf = [0u8; 4];
            if conn.read_exact(&mut buf).is_ok() {
                let _ = conn.write_all(&buf);
            }
        }
    });
    let file = config_file(&yaml);
    let mut proc = cli_harness::Proc::spawn(BIN, &["-c", file.to_str().unwrap()]);
    proc.wait_line("serving SOCKS5");
    let proxy = format!("127.0.0.1:{port}").parse().unwrap();
    let echoed = tokio::task::spawn_blocking(move || {
        let (code, mut s) = cli_harness::socks5_open(proxy, target_addr, None).expect("no login needed");
        assert_eq!(code, 0);
        s.write_all(b"ping").unwrap();
        let mut back = [0u8; 4];
        s.read_exact(&mut back).unwrap();
        back
    })
    .await
    .unwrap();
    assert_eq!(&echoed, b"ping");
    drop(proc);

    for (extra, field) in [
        (format!("  user_key: \"{shared}\"\n"), "local.user_key"),
        (
            format!("  user_key: \"{mine}\"\n  udp_transport: udp\n"),
            "local.udp_transport",
        ),
    ] {
        let bad = config_file(&format!("key: \"{shared}\"\nlocal:\n  remote: \"{remote}\"\n{extra}"));
        let out = spawn_run(vec!["check".into(), "-c".into(), bad.display().to_string()]).await;
        assert_eq!(out.status.code(), Some(2));
        assert!(text(&out.stderr).contains(field), "{}", text(&out.stderr));
    }
    stop.cancel();
}

async fn spawn_run(args: Vec<String>) -> Output {
    tokio::task::spawn_blocking(move || run(&args.iter().map(String::as_str).collect::<Vec<_>>()))
        .await
        .unwrap()
}

// A remote reached only as a later hop of a chain is listed as not checked; the first hop is.
#[tokio::test(flavor = "multi_thread")]
async fn check_connect_skips_later_chain_hops_and_says_so() {
    let (shared, inner_key) = (key(), key());
    let (vps, stop) = start_remote(&shared, "").await;
    let yaml = format!(
        "key: \"{shared}\"\nlocal:\n  remotes:\n    vps: {{ address: \"{vps}\" }}\n    inner: {{ address: \"10.1.0.1:8388\", key: \"{inner_key}\" }}\n  chains:\n    deep: [vps, inner]\n  default: deep\n"
    );
    let (code, stdout) = connect_check_of(&yaml).await;
    assert_eq!(code, Some(0), "{stdout}");
    assert!(
        stdout.contains("remote \"vps\"") && stdout.contains("ok: TCP in"),
        "{stdout}"
    );
    assert!(
        stdout.contains("remote \"inner\": not checked: reached only through chain \"deep\""),
        "{stdout}"
    );
    stop.cancel();
}
