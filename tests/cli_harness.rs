//! The harness both binaries' CLI tests share (`local/tests/cli.rs`, `remote/tests/cli.rs`):
//! a spawned warren-local or warren-remote whose stderr is read line by line, config files in
//! the target's temporary directory, free loopback ports and fresh keys; blocking std, except
//! [`start_remote`], an in-process warren-remote for the tests that need a far end.
//!
//! Not a module of the `warren-tests` crate: each CLI test includes it with
//! `#[path = "../../tests/cli_harness.rs"] mod cli_harness;`, because a binary's path
//! (`CARGO_BIN_EXE_*`) is only known to that binary's own package's tests.
// Each test file uses its own subset of these helpers.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use warren_common::crypto::Key;

/// Upper bound for anything the tests wait for.
pub const BOUND: Duration = Duration::from_secs(10);

/// A running server binary whose stderr is collected line by line. Killed if a test fails
/// before it exits.
pub struct Proc {
    /// The binary's file name, for failure messages.
    name: String,
    child: Child,
    lines: mpsc::Receiver<String>,
    log: Vec<String>,
}

impl Proc {
    /// Starts the binary at `bin` with `args`, stdin and stdout closed, and `RUST_LOG` unset.
    pub fn spawn(bin: &str, args: &[&str]) -> Proc {
        Proc::spawn_env(bin, args, &[])
    }

    /// [`Proc::spawn`] with environment variables set (`(name, value)`).
    pub fn spawn_env(bin: &str, args: &[&str], env: &[(&str, &str)]) -> Proc {
        let name = Path::new(bin)
            .file_name()
            .map_or_else(|| bin.to_owned(), |n| n.to_string_lossy().into_owned());
        let mut child = Command::new(bin)
            .args(args)
            .envs(env.iter().copied())
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("start {name}: {e}"));
        let stderr = child.stderr.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Proc {
            name,
            child,
            lines,
            log: Vec::new(),
        }
    }

    /// Waits (up to 10 s) for a stderr line containing `needle` and returns it.
    pub fn wait_line(&mut self, needle: &str) -> String {
        let until = Instant::now() + BOUND;
        loop {
            let left = until.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    self.log.push(line.clone());
                    if line.contains(needle) {
                        return line;
                    }
                }
                Err(_) => panic!(
                    "no stderr line with {needle:?} within 10 s; stderr so far:\n{}",
                    self.log.join("\n")
                ),
            }
        }
    }

    /// Sends the signal `name` (`TERM`, `INT`, ...) with kill(1).
    pub fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .args([format!("-{name}"), self.child.id().to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -{name} failed");
    }

    /// Waits (up to 10 s) for the process to exit; returns its status and all of its stderr.
    pub fn wait_exit(&mut self) -> (ExitStatus, String) {
        let until = Instant::now() + BOUND;
        let status = loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                break status;
            }
            assert!(
                Instant::now() < until,
                "{} still running after 10 s; stderr:\n{}",
                self.name,
                self.log.join("\n")
            );
            std::thread::sleep(Duration::from_millis(20));
        };
        // The reader thread ends at EOF, which comes right after the exit.
        while let Ok(line) = self.lines.recv_timeout(BOUND) {
            self.log.push(line);
        }
        (status, self.log.join("\n"))
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Writes `yaml` to a fresh file under the target's temporary directory.
pub fn config_file(yaml: &str) -> PathBuf {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let path = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!(
        "{}-cli-{}-{}.yaml",
        env!("CARGO_PKG_NAME"),
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::write(&path, yaml).expect("write config");
    path
}

/// A loopback port nothing listens on right now.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A fresh random key, in the config's base64 form.
pub fn key() -> String {
    Key::generate().to_base64()
}

/// `--version` names the binary and the package version, `--help` lists every one of
/// `help_words`, and both exit 0.
pub fn assert_version_and_help(bin: &str, name: &str, help_words: &[&str]) {
    let out = Command::new(bin).arg("--version").output().unwrap();
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains(name) && text.contains(env!("CARGO_PKG_VERSION")),
        "{text}"
    );
    let out = Command::new(bin).arg("--help").output().unwrap();
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(help_words.iter().all(|w| text.contains(w)), "{text}");
}

/// Runs `bin` once per case and checks that each exits with code 2 within [`BOUND`], that its
/// stderr contains the case's needle, and that it never tried to bind ("cannot listen").
pub fn assert_each_exits_2_before_binding(bin: &str, cases: &[(Vec<String>, &str)]) {
    for (args, needle) in cases {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let started = Instant::now();
        let mut proc = Proc::spawn(bin, &args);
        let (status, stderr) = proc.wait_exit();
        assert_eq!(status.code(), Some(2), "{needle}: {stderr}");
        assert!(stderr.contains(needle), "expected {needle:?} in: {stderr}");
        assert!(!stderr.contains("cannot listen"), "{needle}: bound first: {stderr}");
        assert!(started.elapsed() < BOUND);
    }
}

/// The control case: `bin` with a valid config whose listen port is held gets as far as
/// binding and fails there with code 2.
pub fn assert_fails_at_binding(bin: &str, config: &str) {
    let mut proc = Proc::spawn(bin, &["-c", config]);
    let (status, stderr) = proc.wait_exit();
    assert_eq!(status.code(), Some(2));
    assert!(stderr.contains("cannot listen"), "{stderr}");
}

impl Proc {
    /// Sends `sig` and checks the server stops with code 0, saying it got the signal and
    /// ending its log with "stopped".
    pub fn assert_signal_stops(mut self, sig: &str) {
        self.signal(sig);
        let (status, stderr) = self.wait_exit();
        assert_eq!(status.code(), Some(0), "SIG{sig}: {stderr}");
        assert!(stderr.contains("shutdown signal received"), "SIG{sig}: {stderr}");
        assert!(
            stderr.lines().last().unwrap_or("").contains("stopped"),
            "SIG{sig}: {stderr}"
        );
    }
}

/// Started without `-c`, `bin` names the default paths it tried and exits 2 when none exists;
/// once a config file is at the first one (`$XDG_CONFIG_HOME/warren/config.yaml`), it starts
/// from that file (shown by reaching the bind of the port the file names, held here).
pub fn assert_default_config_path(bin: &str, yaml_for_listen: impl Fn(std::net::SocketAddr) -> String) {
    assert!(
        !Path::new("/etc/warren/config.yaml").exists(),
        "this machine has /etc/warren/config.yaml, which the binary would use"
    );
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("xdg-{}-{}", std::process::id(), free_port()));
    std::fs::create_dir_all(&dir).unwrap();
    let xdg = dir.to_str().unwrap();
    let expected = dir.join("warren").join("config.yaml");

    let (status, stderr) = Proc::spawn_env(bin, &[], &[("XDG_CONFIG_HOME", xdg)]).wait_exit();
    assert_eq!(status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("no config file"), "{stderr}");
    assert!(stderr.contains(expected.to_str().unwrap()), "{stderr}");
    assert!(stderr.contains("/etc/warren/config.yaml"), "{stderr}");

    // Something at the path that is not a readable file is reported, not passed over.
    std::fs::create_dir_all(&expected).unwrap();
    let (status, stderr) = Proc::spawn_env(bin, &[], &[("XDG_CONFIG_HOME", xdg)]).wait_exit();
    assert_eq!(status.code(), Some(2), "{stderr}");
    assert!(!stderr.contains("no config file"), "{stderr}");
    assert!(stderr.contains(expected.to_str().unwrap()), "{stderr}");
    std::fs::remove_dir(&expected).unwrap();

    let held = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    std::fs::write(&expected, yaml_for_listen(held.local_addr().unwrap())).unwrap();
    let (status, stderr) = Proc::spawn_env(bin, &[], &[("XDG_CONFIG_HOME", xdg)]).wait_exit();
    assert_eq!(status.code(), Some(2), "{stderr}");
    assert!(stderr.contains(expected.to_str().unwrap()), "{stderr}");
    assert!(
        stderr.contains("cannot listen"),
        "it did not start from the file: {stderr}"
    );
    drop(held);
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Starts an in-process warren-remote (the library, on the caller's runtime) with `key` on
/// 127.0.0.1:0; `extra` holds lines for its `remote:` section.
pub async fn start_remote(key: &str, extra: &str) -> (std::net::SocketAddr, tokio_util::sync::CancellationToken) {
    let yaml = format!("key: \"{key}\"\nremote:\n  listen: \"127.0.0.1:0\"\n{extra}");
    let raw = warren_common::config::RawConfig::from_yaml(&yaml, "remote.yaml").unwrap();
    let config = warren_common::config::RemoteConfig::try_from(&raw).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let shutdown = tokio_util::sync::CancellationToken::new();
    tokio::spawn(warren_remote::run(listener, config, shutdown.clone()));
    (addr, shutdown)
}

/// Whether `tool` runs; when it does not, the caller skips that part, unless
/// `WARREN_REQUIRE_PACKAGING_TOOLS` is set (`.ci/run` installs them all).
pub fn have_tool(tool: &str, version_flag: &str) -> bool {
    let found = Command::new(tool)
        .arg(version_flag)
        .output()
        .is_ok_and(|o| o.status.success());
    if !found {
        assert!(
            std::env::var_os("WARREN_REQUIRE_PACKAGING_TOOLS").is_none(),
            "{tool} is required (WARREN_REQUIRE_PACKAGING_TOOLS is set) but not found"
        );
        eprintln!("SKIPPED: {tool} not found");
    }
    found
}

/// `bin completions SHELL` and `bin man` work: bash completes `name <TAB>` to its subcommands
/// (`words`, each checked) and `--config`; zsh and fish accept their scripts (`-n`, syntax only);
/// the man page is roff that groff renders without a warning and names every word.
pub fn assert_completions_and_man(bin: &str, name: &str, words: &[&str]) {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("docs-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let generate = |args: &[&str], file: &str| {
        let out = Command::new(bin).args(args).output().unwrap();
        assert!(out.status.success() && !out.stdout.is_empty(), "{args:?}");
        let path = dir.join(file);
        std::fs::write(&path, &out.stdout).unwrap();
        path
    };
    let bash = generate(&["completions", "bash"], "completion.bash");
    let script = format!(
        "source {}\nf=$(complete -p {name} | sed -E 's/.*-F ([^ ]+).*/\\1/')\n\
         COMP_WORDS=({name} \"\"); COMP_CWORD=1; COMP_LINE=\"{name} \"; COMP_POINT=${{#COMP_LINE}}\n\
         \"$f\" {name} \"\" {name}\nprintf '%s\\n' \"${{COMPREPLY[@]}}\"\n",
        bash.display()
    );
    let out = Command::new("bash").args(["-c", &script]).output().unwrap();
    let offered = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    for word in words.iter().chain(&["--config", "--log-format"]) {
        assert!(
            offered.lines().any(|l| l == *word),
            "bash does not offer {word:?}: {offered}"
        );
    }
    for (shell, file) in [("zsh", "_completion.zsh"), ("fish", "completion.fish")] {
        let path = generate(&["completions", shell], file);
        if have_tool(shell, "--version") {
            let out = Command::new(shell).arg("-n").arg(&path).output().unwrap();
            assert!(
                out.status.success(),
                "{shell}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
    let man = generate(&["man"], "page.1");
    let roff = std::fs::read_to_string(&man).unwrap();
    assert!(roff.contains(&format!(".TH {name} 1")), "{roff}");
    // --out-dir: a page per subcommand too, with the subcommand's own flags.
    let pages = dir.join("pages");
    std::fs::create_dir_all(&pages).unwrap();
    let out = Command::new(bin)
        .args(["man", "--out-dir"])
        .arg(&pages)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let check = std::fs::read_to_string(pages.join(format!("{name}-check.1"))).expect("a page for check");
    assert!(check.contains(&format!(".TH {name}-check 1")), "{check}");
    if have_tool("groff", "--version") {
        let out = Command::new("groff")
            .args(["-man", "-Tutf8", "-ww", "-P-cbou"])
            .arg(&man)
            .output()
            .unwrap();
        let page = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success() && out.stderr.is_empty(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        for word in words.iter().chain(&["--log-format"]) {
            // groff may render a hyphen as U+2010; compare without hyphens.
            let plain = |s: &str| s.replace(['-', '\u{2010}', '\u{2212}'], "");
            assert!(plain(&page).contains(&plain(word)), "man page lacks {word:?}: {page}");
        }
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A raw, blocking SOCKS5 CONNECT to an IPv4 `target` (with an RFC 1929 login if given).
/// Returns the reply code and the connection (relaying after a 0x00 reply), or None if the
/// server refused the login.
pub fn socks5_open(
    proxy: std::net::SocketAddr,
    target: std::net::SocketAddr,
    login: Option<(&str, &str)>,
) -> Option<(u8, std::net::TcpStream)> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(proxy).expect("connect to warren-local");
    s.set_read_timeout(Some(BOUND)).unwrap();
    let method = if login.is_some() { 0x02 } else { 0x00 };
    s.write_all(&[5, 1, method]).unwrap();
    let mut sel = [0u8; 2];
    s.read_exact(&mut sel).expect("method selection");
    assert_eq!(sel, [5, method]);
    if let Some((user, pass)) = login {
        let mut msg = vec![1, user.len() as u8];
        msg.extend_from_slice(user.as_bytes());
        msg.push(pass.len() as u8);
        msg.extend_from_slice(pass.as_bytes());
        s.write_all(&msg).unwrap();
        let mut status = [0u8; 2];
        s.read_exact(&mut status).expect("login status");
        if status[1] != 0 {
            return None;
        }
    }
    let std::net::SocketAddr::V4(v4) = target else {
        panic!("IPv4 targets only")
    };
    let mut req = vec![5, 1, 0, 1];
    req.extend_from_slice(&v4.ip().octets());
    req.extend_from_slice(&v4.port().to_be_bytes());
    s.write_all(&req).unwrap();
    let mut reply = [0u8; 10];
    s.read_exact(&mut reply).expect("a complete SOCKS5 reply within 10 s");
    assert_eq!(reply[0], 5);
    Some((reply[1], s))
}

/// Scrapes `http://ADDR/metrics` with curl and returns each sample as (name with its labels
/// exactly as printed, value), e.g. `("warren_bytes_total{direction=\"up\"}", 3000.0)`.
pub fn scrape(addr: std::net::SocketAddr) -> Vec<(String, f64)> {
    let out = Command::new("curl")
        .args(["-sS", "--max-time", "10", "-i"])
        .arg(format!("http://{addr}/metrics"))
        .output()
        .expect("run curl");
    let text = String::from_utf8_lossy(&out.stdout).replace("\r\n", "\n");
    assert!(out.status.success(), "curl: {}", String::from_utf8_lossy(&out.stderr));
    let (head, body) = text.split_once("\n\n").expect("an HTTP response");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(head.contains("application/openmetrics-text"), "{head}");
    assert!(body.ends_with("# EOF\n"), "OpenMetrics ends with # EOF: {body}");
    body.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|l| {
            let (name, value) = l.rsplit_once(' ').expect("name value");
            (name.to_owned(), value.parse().expect("a number"))
        })
        .collect()
}

/// The value of the sample named exactly `name` (with labels), or 0 when absent (a metric
/// appears once recorded).
pub fn sample(samples: &[(String, f64)], name: &str) -> f64 {
    samples.iter().find(|(n, _)| n == name).map_or(0.0, |(_, v)| *v)
}

/// A TCP echo server on `ip` (port 0), on the caller's runtime, serving until the test ends.
pub async fn echo_on(ip: &str) -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind((ip, 0)).await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut conn, _)) = listener.accept().await {
            tokio::spawn(async move {
                let (mut r, mut w) = conn.split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
            });
        }
    });
    addr
}
