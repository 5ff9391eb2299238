//! The warren-local binary as a user runs it: flags, exit codes, config errors reported before
//! anything is bound, signals, the `--listen` override, and the log's hints and discretion.
//! A warren-remote, where one is needed, runs in-process from the library.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::time::Instant;

const BIN: &str = env!("CARGO_BIN_EXE_warren-local");

#[path = "../../tests/cli_harness.rs"]
mod cli_harness;
use cli_harness::{
    assert_default_config_path, assert_each_exits_2_before_binding, assert_fails_at_binding, assert_version_and_help,
    config_file, free_port, key, start_remote, Proc, BOUND,
};

/// A raw, blocking SOCKS5 CONNECT (with an RFC 1929 login if given). Returns the reply code, or
/// None if the server refused the login.
fn socks5_connect(proxy: SocketAddr, target: SocketAddr, login: Option<(&str, &str)>) -> Option<u8> {
    cli_harness::socks5_open(proxy, target, login).map(|(code, _)| code)
}

// --version and --help print and exit 0.
#[test]
fn version_and_help_exit_0() {
    assert_version_and_help(BIN, "warren-local", &["--listen", "--config"]);
}

// Each config error exits with code 2 and a message naming the field, without binding: the
// listen port is held by the test, so a bind attempt would have failed with "cannot listen"
// instead (the control case shows that it does).
#[test]
fn config_errors_exit_2_before_binding_and_name_the_field() {
    let held = TcpListener::bind("127.0.0.1:0").unwrap();
    let listen = held.local_addr().unwrap();
    let good = key();
    let with = |key: &str, extra: &str| {
        format!("key: \"{key}\"\nlocal:\n  listen: \"{listen}\"\n  remote: \"127.0.0.1:9\"\n{extra}")
    };
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
                file(format!(
                    "key: \"{good}\"\nlocal:\n  listen: \"nope\"\n  remote: \"127.0.0.1:9\"\n"
                )),
            ],
            "local.listen",
        ),
        (
            vec!["-c".into(), file(with(&good, "  colour: blue\n"))],
            "unknown field `colour`",
        ),
        (
            vec![
                "-c".into(),
                file(with(&good, "  users:\n    - {username: alice, password: \"\"}\n")),
            ],
            "local.users[0].password",
        ),
        (
            vec![
                "-c".into(),
                file(with(&good, "  routes:\n    - { domain: a.test, proxy: vsp }\n")),
            ],
            "local.routes[0].proxy: no remote or chain named \"vsp\"",
        ),
        // A file without the binary's own section: refused, not started on defaults.
        (
            vec![
                "-c".into(),
                file(format!("key: \"{good}\"\nremote:\n  listen: \"127.0.0.1:1\"\n")),
            ],
            "local: section missing: warren-local runs from the `local:` section",
        ),
        // ... and --max-connections does not create it.
        (
            vec![
                "-c".into(),
                file(format!("key: \"{good}\"\nremote:\n  listen: \"127.0.0.1:1\"\n")),
                "--max-connections".into(),
                "5".into(),
            ],
            "local: section missing",
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
    assert_fails_at_binding(BIN, config_file(&with(&good, "")).to_str().unwrap());

    // The port stayed held throughout, so a run that had tried to bind would have failed there
    // ("cannot listen"), not with its config error, which each case asserts: no failed run got as far
    // as binding. (Re-binding the port after dropping it raced with the other tests for it.)
    drop(held);
}

// An unknown --log-level or RUST_LOG exits 2 naming the accepted levels (it used to silence
// every log line); `warning` is taken as `warn` (the run gets as far as binding); and a config
// error's cause is printed once (it used to be printed twice).
#[test]
fn bad_log_levels_exit_2_and_config_errors_print_once() {
    let held = TcpListener::bind("127.0.0.1:0").unwrap();
    let listen = held.local_addr().unwrap();
    let config = |extra: &str| {
        let yaml = format!(
            "key: \"{}\"\nlocal:\n  listen: \"{listen}\"\n  remote: \"127.0.0.1:9\"\n{extra}",
            key()
        );
        config_file(&yaml).to_str().unwrap().to_owned()
    };
    let good = config("");
    let accepted = "expected one of error, warn (or warning), info, debug, trace, off";

    for level in ["loud", "warnings", "warren_local"] {
        let (status, log) = Proc::spawn(BIN, &["--log-level", level, "-c", &good]).wait_exit();
        assert_eq!(status.code(), Some(2), "--log-level {level}: {log}");
        assert!(
            log.contains(&format!("--log-level \"{level}\" is not a log level")),
            "{log}"
        );
        assert!(log.contains(accepted), "{log}");
    }
    let out = std::process::Command::new(BIN)
        .args(["-c", &good])
        .env("RUST_LOG", "verbose")
        .output()
        .unwrap();
    let log = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{log}");
    assert!(
        log.contains("RUST_LOG \"verbose\" is not a log level") && log.contains(accepted),
        "{log}"
    );

    // `warning` passes the log setup: the run fails only at binding the held port.
    let (status, log) = Proc::spawn(BIN, &["--log-level", "warning", "-c", &good]).wait_exit();
    assert_eq!(status.code(), Some(2), "{log}");
    assert!(log.contains(&format!("cannot listen on {listen}")), "{log}");

    // Each config error's cause appears once.
    let missing = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("no-such-config.yaml");
    let missing = missing.to_str().unwrap();
    let colour = config("  colour: blue\n");
    for (args, cause) in [
        (["-c", missing], "No such file or directory"),
        (["-c", colour.as_str()], "unknown field `colour`"),
    ] {
        let (status, log) = Proc::spawn(BIN, &args).wait_exit();
        assert_eq!(status.code(), Some(2), "{log}");
        assert_eq!(log.matches(cause).count(), 1, "printed once: {log}");
    }
    drop(held);
}

// SIGTERM and SIGINT each stop the server with exit code 0 and a "stopped" log line.
#[test]
fn sigterm_and_sigint_exit_0() {
    for sig in ["TERM", "INT"] {
        let listen = format!("127.0.0.1:{}", free_port());
        let path = config_file(&format!(
            "key: \"{}\"\nlocal:\n  listen: \"{listen}\"\n  remote: \"127.0.0.1:9\"\n",
            key()
        ));
        let mut proc = Proc::spawn(BIN, &["-c", path.to_str().unwrap()]);
        proc.wait_line("serving SOCKS5");
        proc.assert_signal_stops(sig);
    }
}

// --listen wins over local.listen: the log names the flag's address, that port accepts
// connections, and the config's port stays unbound.
#[test]
fn listen_flag_overrides_the_config() {
    let in_config = free_port();
    let flag = format!("127.0.0.1:{}", free_port());
    let path = config_file(&format!(
        "key: \"{}\"\nlocal:\n  listen: \"127.0.0.1:{in_config}\"\n  remote: \"127.0.0.1:9\"\n",
        key()
    ));
    let mut proc = Proc::spawn(BIN, &["-c", path.to_str().unwrap(), "--listen", &flag]);
    let line = proc.wait_line("serving SOCKS5");
    assert!(line.contains(&format!("listen={flag}")), "{line}");
    TcpStream::connect(&flag).expect("the flag's port is bound");
    TcpListener::bind(("127.0.0.1", in_config)).expect("the config's port is not bound");
    proc.signal("TERM");
    assert_eq!(proc.wait_exit().0.code(), Some(0));
}

// Against a remote holding another key, a CONNECT gets 0x01 and the log explains the silence
// (wrong key or clocks); even at trace level, neither key nor any password reaches the log.
#[tokio::test(flavor = "multi_thread")]
async fn wrong_key_hint_and_no_secrets_in_the_log() {
    let (local_key, remote_key) = (key(), key());
    let (remote, remote_stop) = start_remote(
        &remote_key,
        "  handshake_timeout: 1\n  acl:\n    - allow: \"127.0.0.1\"\n",
    )
    .await;
    let target = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let target_addr = target.local_addr().unwrap();
    let listen: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let password = "correct-horse-battery-staple";
    let wrong_password = "not-the-password-0451";
    let path = config_file(&format!(
        "key: \"{local_key}\"\nlocal:\n  listen: \"{listen}\"\n  remote: \"{remote}\"\n  connect_timeout: 3\n  \
         users:\n    - {{username: alice, password: \"{password}\"}}\n"
    ));
    let mut proc = Proc::spawn(BIN, &["-c", path.to_str().unwrap(), "--log-level", "trace"]);
    proc.wait_line("serving SOCKS5");

    assert_eq!(
        socks5_connect(listen, target_addr, Some(("alice", wrong_password))),
        None
    );
    let started = Instant::now();
    assert_eq!(
        socks5_connect(listen, target_addr, Some(("alice", password))),
        Some(0x01)
    );
    assert!(started.elapsed() < BOUND);
    let hint = proc.wait_line("wrong key");
    assert!(hint.contains("clock"), "{hint}");

    proc.signal("TERM");
    let (status, stderr) = proc.wait_exit();
    assert_eq!(status.code(), Some(0), "{stderr}");
    for secret in [local_key.as_str(), remote_key.as_str(), password, wrong_password] {
        assert!(
            !stderr.contains(secret),
            "the log shows the secret {secret:?}:\n{stderr}"
        );
    }
    remote_stop.cancel();
}

// A remote that accepts and never answers: after connect_timeout the client gets 0x01 and the
// log says the remote did not answer, naming the wrong-key and clock causes and the client.
#[test]
fn silent_remote_hint() {
    // The kernel completes connections into this listener's backlog; nothing ever answers.
    let silent = TcpListener::bind("127.0.0.1:0").unwrap();
    let listen: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let path = config_file(&format!(
        "key: \"{}\"\nlocal:\n  listen: \"{listen}\"\n  remote: \"{}\"\n  connect_timeout: 2\n",
        key(),
        silent.local_addr().unwrap()
    ));
    let mut proc = Proc::spawn(BIN, &["-c", path.to_str().unwrap()]);
    proc.wait_line("serving SOCKS5");
    let target = TcpListener::bind("127.0.0.1:0").unwrap();
    assert_eq!(socks5_connect(listen, target.local_addr().unwrap(), None), Some(0x01));
    let hint = proc.wait_line("did not answer");
    assert!(hint.contains("wrong key") && hint.contains("clock"), "{hint}");
    assert!(hint.contains("peer=127.0.0.1:"), "the warning names the client: {hint}");
    proc.signal("TERM");
    assert_eq!(proc.wait_exit().0.code(), Some(0));
}

// Without -c: "no config file" with the paths tried, or the first of them that exists.
#[test]
fn without_c_the_default_config_file_is_used_or_the_paths_named() {
    let key = key();
    assert_default_config_path(BIN, |listen| {
        format!("key: \"{key}\"\nlocal:\n  listen: \"{listen}\"\n  remote: \"127.0.0.1:1\"\n")
    });
}

// Listening beyond loopback with no users is an open proxy: said at start, before binding. The
// test holds the port on 127.0.0.1, so on Linux the wildcard bind fails rather than exposing a
// proxy (the process is killed as soon as the warning is read in any case).
#[test]
fn an_open_proxy_beyond_loopback_is_warned_about() {
    let held = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = held.local_addr().unwrap().port();
    let yaml = |users: &str| {
        format!(
            "key: \"{}\"\nlocal:\n  listen: \"0.0.0.0:{port}\"\n  remote: \"127.0.0.1:1\"\n{users}",
            key()
        )
    };
    let open = config_file(&yaml(""));
    let mut proc = Proc::spawn(BIN, &["-c", open.to_str().unwrap()]);
    let line = proc.wait_line("open proxy");
    assert!(line.contains("WARN") && line.contains("0.0.0.0"), "{line}");
    drop(proc);
    // With users, no warning (the run ends at the held port's bind).
    let closed = config_file(&yaml("  users:\n    - { username: alice, password: s3cret }\n"));
    let (status, stderr) = Proc::spawn(BIN, &["-c", closed.to_str().unwrap()]).wait_exit();
    assert_eq!(status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("cannot listen"),
        "it stopped before the warnings: {stderr}"
    );
    assert!(!stderr.contains("open proxy"), "{stderr}");
    drop(held);
}

// `completions bash|zsh|fish` and `man`, generated from the flags' own definition.
#[test]
fn completions_and_man_page_cover_the_subcommands_and_flags() {
    cli_harness::assert_completions_and_man(BIN, "warren-local", &["check", "completions", "man", "--remote"]);
    // The check subcommand's own page documents --connect.
    let dir = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("man-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let out = std::process::Command::new(BIN)
        .args(["man", "--out-dir"])
        .arg(&dir)
        .output()
        .unwrap();
    assert!(out.status.success());
    let page = std::fs::read_to_string(dir.join("warren-local-check.1")).unwrap();
    assert!(page.contains("\\-\\-connect"), "{page}");
    std::fs::remove_dir_all(&dir).unwrap();
}

// `--log-format json`: every line on stderr is one JSON object, the ready line's fields among
// them, until the signal stops it.
#[test]
fn log_format_json_writes_one_object_per_line() {
    let file = config_file(&format!(
        "key: \"{}\"\nlocal:\n  listen: \"127.0.0.1:{}\"\n  remote: \"127.0.0.1:1\"\n",
        key(),
        free_port()
    ));
    let mut proc = Proc::spawn(BIN, &["-c", file.to_str().unwrap(), "--log-format", "json"]);
    let line = proc.wait_line("serving SOCKS5");
    let ready: serde_json::Value = serde_json::from_str(&line).expect("a JSON line");
    assert_eq!(ready["level"], "INFO", "{line}");
    assert_eq!(ready["fields"]["remote"], "127.0.0.1:1", "{line}");
    proc.signal("TERM");
    let (status, stderr) = proc.wait_exit();
    assert_eq!(status.code(), Some(0), "{stderr}");
    for line in stderr.lines() {
        serde_json::from_str::<serde_json::Value>(line).unwrap_or_else(|e| panic!("{e}: {line:?}"));
    }
    assert!(stderr.contains("\"stopped\""), "{stderr}");
}
