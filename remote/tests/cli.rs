//! The warren-remote binary as a user runs it: flags, `genkey`, exit codes, config errors
//! reported before anything is bound, the published example key, signals, the `--listen`
//! override, and a log that never shows the key.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::Command;

use base64::Engine as _;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use warren_common::config::EXAMPLE_KEY;
use warren_common::crypto::Key;
use warren_common::proto::address::Address;
use warren_common::proto::header::RequestHeader;
use warren_common::proto::status::Status;
use warren_common::time::unix_now;
use warren_common::tunnel::PendingTunnel;

const BIN: &str = env!("CARGO_BIN_EXE_warren-remote");

#[path = "../../tests/cli_harness.rs"]
mod cli_harness;
use cli_harness::{
    assert_default_config_path, assert_each_exits_2_before_binding, assert_fails_at_binding, assert_version_and_help,
    config_file, free_port, key, Proc, BOUND,
};

/// Starts the binary on a free loopback port with `key` and `extra` lines for `remote:`, and
/// waits for its "accepting tunnels" line.
fn start(key: &str, extra: &str, more_args: &[&str]) -> (Proc, SocketAddr) {
    let listen: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let path = config_file(&format!("key: \"{key}\"\nremote:\n  listen: \"{listen}\"\n{extra}"));
    let mut args = vec!["-c", path.to_str().unwrap()];
    args.extend_from_slice(more_args);
    let mut proc = Proc::spawn(BIN, &args);
    proc.wait_line("accepting tunnels");
    (proc, listen)
}

// --version and --help print and exit 0.
#[test]
fn version_and_help_exit_0() {
    assert_version_and_help(BIN, "warren-remote", &["genkey", "--listen", "--config"]);
}

// `genkey` prints standard padded base64 of 32 bytes, a different key each run, which the
// config accepts.
#[test]
fn genkey_prints_a_fresh_32_byte_key() {
    let mut keys = Vec::new();
    for _ in 0..2 {
        let out = Command::new(BIN).arg("genkey").output().unwrap();
        assert!(out.status.success());
        let text = String::from_utf8(out.stdout).unwrap();
        let key = text.trim_end_matches('\n');
        assert_eq!(key.len(), 44, "{key:?}");
        assert!(key.ends_with('='), "not padded: {key:?}");
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(key)
            .unwrap_or_else(|e| panic!("{key:?} is not standard base64: {e}"));
        assert_eq!(bytes.len(), 32);
        Key::from_base64(key).expect("the config accepts it");
        keys.push(key.to_owned());
    }
    assert_ne!(keys[0], keys[1], "genkey printed the same key twice");
}

// Each config error exits with code 2 and a message naming the field, without binding: the
// listen port is held by the test, so a bind attempt would have failed with "cannot listen"
// instead (the control case shows that it does).
#[test]
fn config_errors_exit_2_before_binding_and_name_the_field() {
    let held = TcpListener::bind("127.0.0.1:0").unwrap();
    let listen = held.local_addr().unwrap();
    let good = key();
    let with = |key: &str, extra: &str| format!("key: \"{key}\"\nremote:\n  listen: \"{listen}\"\n{extra}");
    let missing = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("no-such-config.yaml");
    let file = |yaml: String| config_file(&yaml).to_str().unwrap().to_owned();
    let cases: Vec<(Vec<String>, &str)> = vec![
        (
            vec!["-c".into(), file(with("not base64!", ""))],
            "key: key is not valid base64",
        ),
        (vec!["-c".into(), file(with("AAAA", ""))], "key: key must be 32 bytes"),
        (
            vec![
                "-c".into(),
                file(format!("key: \"{good}\"\nremote:\n  listen: \"nope\"\n")),
            ],
            "remote.listen",
        ),
        (
            vec!["-c".into(), file(with(&good, "  colour: blue\n"))],
            "unknown field `colour`",
        ),
        (
            vec!["-c".into(), file(with(&good, "  acl:\n    - allow: \"10.0.0.0/33\"\n"))],
            "remote.acl[0]",
        ),
        (
            vec![
                "-c".into(),
                file(with(&good, "  acl:\n    - {allow: \"10.0.0.1\", deny: \"10.0.0.2\"}\n")),
            ],
            "remote.acl[0]",
        ),
        (
            vec!["-c".into(), file(with(&good, "  connect_timeout: 0\n"))],
            "remote.connect_timeout",
        ),
        // A file without the binary's own section: refused (it used to listen on 0.0.0.0:8388).
        (
            vec![
                "-c".into(),
                file(format!("key: \"{good}\"\nlocal:\n  remote: \"127.0.0.1:1\"\n")),
            ],
            "remote: section missing: warren-remote runs from the `remote:` section",
        ),
        // ... and --max-connections does not create it.
        (
            vec![
                "-c".into(),
                file(format!("key: \"{good}\"\nlocal:\n  remote: \"127.0.0.1:1\"\n")),
                "--max-connections".into(),
                "5".into(),
            ],
            "remote: section missing",
        ),
        // No file at all; the flag supplies the listen address.
        (
            vec![
                "-c".into(),
                missing.to_str().unwrap().into(),
                "--listen".into(),
                listen.to_string(),
            ],
            "cannot read",
        ),
    ];
    assert_each_exits_2_before_binding(BIN, &cases);

    // Control: a valid config on the held port gets as far as binding, and fails there.
    assert_fails_at_binding(BIN, &file(with(&good, "")));

    // The port stayed held throughout, so a run that had tried to bind would have failed there
    // ("cannot listen"), not with its config error, which each case asserts: no failed run got as
    // far as binding. (Re-binding the port after dropping it raced with the other tests for it.)
    drop(held);
}

// The published example key is refused on 0.0.0.0 before binding (the message points to
// genkey), and accepted on loopback. The test holds 127.0.0.1 on the same port, so even a
// wrongly accepted config could not listen beyond loopback.
#[test]
fn example_key_is_refused_beyond_loopback() {
    let held = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = held.local_addr().unwrap().port();
    let path = config_file(&format!(
        "key: \"{EXAMPLE_KEY}\"\nremote:\n  listen: \"0.0.0.0:{port}\"\n"
    ));
    let mut proc = Proc::spawn(BIN, &["-c", path.to_str().unwrap()]);
    let (status, stderr) = proc.wait_exit();
    assert_eq!(status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("key:") && stderr.contains("genkey"), "{stderr}");
    assert!(!stderr.contains("cannot listen"), "{stderr}");
    drop(held);

    let (mut proc, _) = start(EXAMPLE_KEY, "", &[]);
    proc.signal("TERM");
    assert_eq!(proc.wait_exit().0.code(), Some(0));
}

// SIGTERM and SIGINT each stop the server with exit code 0 and a "stopped" log line.
#[test]
fn sigterm_and_sigint_exit_0() {
    for sig in ["TERM", "INT"] {
        let (proc, _) = start(&key(), "", &[]);
        proc.assert_signal_stops(sig);
    }
}

// --listen wins over remote.listen: the log names the flag's address, that port accepts
// connections, and the config's port stays unbound.
#[test]
fn listen_flag_overrides_the_config() {
    let flag = format!("127.0.0.1:{}", free_port());
    let in_config: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let path = config_file(&format!("key: \"{}\"\nremote:\n  listen: \"{in_config}\"\n", key()));
    let mut proc = Proc::spawn(BIN, &["-c", path.to_str().unwrap(), "--listen", &flag]);
    let line = proc.wait_line("accepting tunnels");
    assert!(line.contains(&format!("listen={flag}")), "{line}");
    TcpStream::connect(&flag).expect("the flag's port is bound");
    TcpListener::bind(in_config).expect("the config's port is not bound");
    proc.signal("TERM");
    assert_eq!(proc.wait_exit().0.code(), Some(0));
}

// Even at trace level, with a genuine tunnel relayed and a wrong-key request refused, the log
// never shows the key (nor the other end's key).
#[tokio::test(flavor = "multi_thread")]
async fn the_log_never_shows_the_key() {
    let echo = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let echo_addr = echo.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = echo.accept().await {
            tokio::spawn(async move {
                let (mut r, mut w) = s.split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
            });
        }
    });
    let key_text = key();
    let other_key = key();
    let (mut proc, remote) = start(
        &key_text,
        "  handshake_timeout: 1\n  acl:\n    - allow: \"127.0.0.1\"\n",
        &["--log-level", "trace"],
    );

    // A genuine tunnel, relayed end to end.
    let key = Key::from_base64(&key_text).unwrap();
    let stream = tokio::net::TcpStream::connect(remote).await.unwrap();
    let header = RequestHeader::connect(Address::Ip(echo_addr), unix_now());
    let pending = PendingTunnel::send_request(stream, &key, &header, b"ping")
        .await
        .unwrap();
    let (response, mut tunnel) = tokio::time::timeout(BOUND, pending.read_response())
        .await
        .expect("response within 10 s")
        .expect("genuine request answered");
    assert_eq!(response.status, Status::Succeeded);
    let mut got = [0u8; 4];
    tokio::time::timeout(BOUND, tunnel.read_exact(&mut got))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&got, b"ping");
    tunnel.shutdown().await.unwrap();
    drop(tunnel);
    proc.wait_line("connection finished");

    // A request under another key: refused in silence, and logged as such.
    let wrong = Key::from_base64(&other_key).unwrap();
    let mut stream = tokio::net::TcpStream::connect(remote).await.unwrap();
    let header = RequestHeader::connect(Address::Ip(echo_addr), unix_now());
    PendingTunnel::send_request(&mut stream, &wrong, &header, b"")
        .await
        .unwrap();
    let mut buf = [0u8; 64];
    let read = tokio::time::timeout(BOUND, stream.read(&mut buf))
        .await
        .expect("closed within 10 s");
    assert!(
        matches!(read, Ok(0) | Err(_)),
        "the remote answered a wrong key: {read:?}"
    );
    proc.wait_line("failed authentication");

    proc.signal("TERM");
    let (status, stderr) = proc.wait_exit();
    assert_eq!(status.code(), Some(0), "{stderr}");
    for secret in [key_text.as_str(), other_key.as_str()] {
        assert!(!stderr.contains(secret), "the log shows a key:\n{stderr}");
    }
}

// Without -c: "no config file" with the paths tried, or the first of them that exists.
#[test]
fn without_c_the_default_config_file_is_used_or_the_paths_named() {
    let key = key();
    assert_default_config_path(BIN, |listen| {
        format!("key: \"{key}\"\nremote:\n  listen: \"{listen}\"\n")
    });
}

// `check`: the effective config with the key masked (its id shown, the same id warren-local's
// check prints for the same key), the ports to open, an agent's listener beyond loopback warned
// about; a bad file exits 2 naming the field; nothing is bound (the listen port is held).
#[test]
fn check_prints_the_config_masked_with_its_warnings_and_binds_nothing() {
    let k = key();
    let agent_key = key();
    let held = TcpListener::bind("0.0.0.0:0").unwrap();
    let port = held.local_addr().unwrap().port();
    let yaml = format!(
        "key: \"{k}\"\nremote:\n  listen: \"0.0.0.0:{port}\"\n  acl: [ {{ deny: \"10.0.0.0/8\" }} ]\n  agent: {{ server: \"vps.example.net:8388\", name: campus, key: \"{agent_key}\" }}\n"
    );
    let path = config_file(&yaml);
    let out = Command::new(BIN)
        .args(["check", "-c", path.to_str().unwrap()])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}");
    assert!(!stdout.contains(&k) && !stdout.contains(&agent_key), "{stdout}");
    let id = Key::from_base64(&k).unwrap().id();
    let doc: serde_yaml::Value = serde_yaml::from_str(&stdout).expect("check prints YAML");
    assert_eq!(doc["key"].as_str(), Some(format!("*** (id {id})").as_str()));
    assert_eq!(doc["remote"]["acl"][0]["deny"].as_str(), Some("10.0.0.0/8"));
    assert_eq!(doc["remote"]["handshake_timeout"].as_u64(), Some(10));
    assert_eq!(doc["remote"]["agent"]["name"].as_str(), Some("campus"));
    assert!(
        stdout.contains(&format!("# note: open TCP {port} and UDP {port}")),
        "{stdout}"
    );
    assert!(
        stdout
            .lines()
            .any(|l| l.starts_with("# warning: remote.listen is 0.0.0.0")),
        "{stdout}"
    );
    drop(held);

    let bad = config_file(&format!("key: \"{k}\"\nremote:\n  max_handshakes: 0\n"));
    let out = Command::new(BIN)
        .args(["check", "-c", bad.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("remote.max_handshakes"));
    assert!(out.stdout.is_empty());
}

// `completions bash|zsh|fish` and `man`, generated from the flags' own definition.
#[test]
fn completions_and_man_page_cover_the_subcommands_and_flags() {
    cli_harness::assert_completions_and_man(BIN, "warren-remote", &["genkey", "check", "completions", "man"]);
}
