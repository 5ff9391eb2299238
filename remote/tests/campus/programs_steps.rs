//! The steps of remote/tests/campus_programs.rs: the documented configs' templates, the
//! processes of the lab (intranet servers, sshd, warren-local's readiness), and the programs the
//! checks run in `home` (ssh, dig, curl, the UDP counter) with a tcpdump capture on home's only
//! link. Every helper bounds its own time; the scenario and its checks stay in
//! campus_programs.rs.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::lab::Lab;
use crate::{DNS_LISTEN, REDIR_LISTEN, SSH_FORWARD, UDP_FORWARD};

/// The payload of the datagram that ends a capture (see [`end_capture`]).
const CAPTURE_END: &str = "warren capture end";
/// Proxy variables curl would obey; the transparent proxy is checked without any.
const PROXY_VARS: [&str; 8] = [
    "http_proxy",
    "HTTP_PROXY",
    "https_proxy",
    "HTTPS_PROXY",
    "all_proxy",
    "ALL_PROXY",
    "no_proxy",
    "NO_PROXY",
];

/// docs/campus/NAME in the source tree.
pub fn docs(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/campus").join(name)
}

/// warren-local, built from the current source (`cargo test -p warren-remote` builds only
/// warren-remote's binary); runs `cargo build -p warren-local` to the end, panics if it fails.
/// Copied from tests/campus.rs.
pub fn local_binary() -> PathBuf {
    let remote = PathBuf::from(env!("CARGO_BIN_EXE_warren-remote"));
    let local = remote.with_file_name("warren-local");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let ok = Command::new(cargo)
        .args(["build", "-p", "warren-local"])
        .status()
        .is_ok_and(|s| s.success());
    assert!(ok && local.exists(), "cannot build warren-local next to warren-remote");
    local
}

/// docs/campus/NAME with the shared key and the agent's own key filled in.
pub fn config(name: &str, key: &str, agent_key: &str) -> String {
    std::fs::read_to_string(docs(name))
        .unwrap()
        .replace("REPLACE-WITH-warren-remote-genkey-OUTPUT", key)
        .replace("REPLACE-WITH-A-SECOND-genkey-OUTPUT-FOR-THE-AGENT", agent_key)
}

/// `text` with `from` replaced by `to`; panics when `from` is not there (a template changed).
pub fn edit(text: &str, from: &str, to: &str) -> String {
    assert!(text.contains(from), "{from:?} not in the template");
    text.replace(from, to)
}

/// `out` (a program's stdout or stderr) as text, invalid UTF-8 replaced.
pub fn text(out: &[u8]) -> String {
    String::from_utf8_lossy(out).into_owned()
}

/// Writes `content` to `dir/name`; returns that path as a string (for program arguments).
pub fn write_file(dir: &Path, name: &str, content: &[u8]) -> String {
    let p = dir.join(name);
    std::fs::write(&p, content).unwrap();
    p.to_str().unwrap().to_string()
}

/// `len` bytes of a fixed, varied pattern (different for each `salt`), for byte-exact checks.
pub fn varied(len: u32, salt: u32) -> Vec<u8> {
    (0..len)
        .map(|i| (i.wrapping_add(salt).wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect()
}

/// Starts the intranet in campus: a web site on 10.77.3.1:8080 serving a 4 MiB file `big`
/// (returned), and the UDP echo server of `socks_py` on 10.77.3.1 at the UDP forward's port.
/// Waits up to 100 tries 100 ms apart (each curl at most 60 s) for `url_ip` to answer and 10 s
/// for the echo server's `ready`; panics if either does not come up.
pub fn start_intranet(lab: &mut Lab, socks_py: &str, url_ip: &str) -> Vec<u8> {
    let site = lab.dir.join("site");
    std::fs::create_dir_all(&site).unwrap();
    let body = varied(4 << 20, 0);
    std::fs::write(site.join("big"), &body).unwrap();
    let python = PathBuf::from("python3");
    let site_str = site.to_str().unwrap().to_string();
    let mut args: Vec<&str> = "-m http.server 8080 --bind 10.77.3.1 --directory".split(' ').collect();
    args.push(&site_str);
    lab.spawn("campus", &python, &args);
    let (_, udp_port) = UDP_FORWARD.rsplit_once(':').unwrap();
    let echo = lab.spawn("campus", &python, &[socks_py, "echo", "10.77.3.1", udp_port]);
    let mut up = false;
    for _ in 0..100 {
        if lab.curl("campus", &["-o", "/dev/null", url_ip]) {
            up = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(up, "intranet web server did not start");
    assert!(
        lab.wait_log(echo, "ready", Duration::from_secs(10)),
        "UDP echo server did not start"
    );
    body
}

/// Starts sshd in campus on 10.77.3.1:22 with a host key and an authorized client key made in
/// the lab dir; returns the client key's path once sshd listens (at most 10 s, else panics).
pub fn start_sshd(lab: &mut Lab) -> String {
    let dir = lab.dir.clone();
    let keygen = |name: &str| {
        let path = dir.join(name);
        let ok = Command::new("ssh-keygen")
            .args(["-q", "-t", "ed25519", "-N", "", "-C", name, "-f"])
            .arg(&path)
            .stdin(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "ssh-keygen {name} failed");
        path
    };
    let host_key = keygen("ssh_host_key");
    let client_key = keygen("client_key");
    let authorized = dir.join("authorized_keys");
    std::fs::copy(client_key.with_extension("pub"), &authorized).unwrap();
    let sshd_config = dir.join("sshd_config");
    std::fs::write(
        &sshd_config,
        format!(
            "ListenAddress 10.77.3.1:22\n\
             HostKey {}\n\
             AuthorizedKeysFile {}\n\
             PermitRootLogin prohibit-password\n\
             PasswordAuthentication no\n\
             KbdInteractiveAuthentication no\n\
             StrictModes no\n\
             UsePAM no\n\
             PidFile none\n",
            host_key.display(),
            authorized.display()
        ),
    )
    .unwrap();
    // sshd's privilege separation directory.
    std::fs::create_dir_all("/run/sshd").unwrap();
    // sshd re-executes itself, which needs an absolute path.
    let sshd = ["/usr/sbin/sshd", "/usr/bin/sshd", "/sbin/sshd"]
        .into_iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
        .expect("sshd not found");
    let cfg = sshd_config.to_str().unwrap();
    let check = lab.run("campus", sshd.to_str().unwrap(), &["-t", "-f", cfg]);
    assert!(check.status.success(), "sshd -t: {}", text(&check.stderr));
    let idx = lab.spawn("campus", &sshd, &["-D", "-e", "-f", cfg]);
    assert!(
        lab.wait_log(idx, "Server listening on 10.77.3.1 port 22", Duration::from_secs(10)),
        "sshd did not start: {}",
        lab.log(idx)
    );
    client_key.to_str().unwrap().to_string()
}

/// ssh's arguments (after `ssh`): no config file, `-p port` if given, key `key` only, no
/// host key checks, batch mode, then the `-o` options `extra`, then quiet, to `dest` running
/// `command`. The two ssh runs below differ only in port, `extra` and destination.
fn ssh_args<'a>(
    port: Option<&'a str>,
    key: &'a str,
    extra: &[&'a str],
    dest: &'a str,
    command: &'a str,
) -> Vec<&'a str> {
    let mut args = vec!["-F", "/dev/null"];
    if let Some(port) = port {
        args.extend(["-p", port]);
    }
    args.extend(["-i", key]);
    let checks = [
        "IdentitiesOnly=yes",
        "StrictHostKeyChecking=no",
        "UserKnownHostsFile=/dev/null",
        "BatchMode=yes",
    ];
    for option in checks.iter().chain(extra).chain(&["LogLevel=ERROR"]) {
        args.extend(["-o", option]);
    }
    args.extend([dest, command]);
    args
}

/// `ssh root@10.77.3.1 true` inside campus with `client_key` (no tunnel involved); connect
/// timeout 10 s.
pub fn ssh_in_campus(lab: &Lab, client_key: &str) -> Output {
    let extra = ["ConnectTimeout=10"];
    let args = ssh_args(None, client_key, &extra, "root@10.77.3.1", "true");
    lab.run("campus", "ssh", &args)
}

/// A base64 key for a config, derived from the lab's `n` (distinct per run) and `salt`
/// (distinct per key).
pub fn make_key(n: u32, salt: u8) -> String {
    use base64::Engine;
    let bytes: [u8; 32] = std::array::from_fn(|i| (i as u8).wrapping_mul(37).wrapping_add(n as u8) ^ salt);
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// The (protocol, address) pairs listening in `ns`, from `ss`.
fn listening(lab: &Lab, ns: &str) -> Vec<(String, String)> {
    let out = lab.run(ns, "ss", &["-Hlntu"]);
    text(&out.stdout)
        .lines()
        .filter_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            (f.len() > 4).then(|| (f[0].to_string(), f[4].to_string()))
        })
        .collect()
}

/// Waits until warren-local (process `local`, in home) is up: all its ports listen (SOCKS
/// 1080, the forwards, UDP and TCP for DNS, both redir sockets), polled every 100 ms for at most
/// 30 s; panics with the ports still missing and warren-local's log otherwise.
pub fn wait_local_listening(lab: &Lab, local: usize) {
    let wanted: Vec<(String, String)> = [
        ("tcp", "127.0.0.1:1080"),
        ("tcp", SSH_FORWARD),
        ("udp", UDP_FORWARD),
        ("udp", DNS_LISTEN),
        ("tcp", DNS_LISTEN),
        ("tcp", REDIR_LISTEN),
        ("udp", REDIR_LISTEN),
    ]
    .iter()
    .map(|(p, a)| (p.to_string(), a.to_string()))
    .collect();
    let start = Instant::now();
    let mut missing = wanted.clone();
    while !missing.is_empty() && start.elapsed() < Duration::from_secs(30) {
        std::thread::sleep(Duration::from_millis(100));
        let now = listening(lab, "home");
        missing = wanted.iter().filter(|w| !now.contains(w)).cloned().collect();
    }
    assert!(
        missing.is_empty(),
        "warren-local does not listen on {missing:?}: {}",
        lab.log(local)
    );
}

/// `program ARGS` in namespace `ns`, stdin from `input` (else none), proxy variables removed;
/// runs to the end (callers bound the program's time).
pub fn run_in(lab: &Lab, ns: &str, input: Option<&Path>, program: &str, args: &[&str]) -> Output {
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "exec", &lab.ns(ns), program]).args(args);
    for var in PROXY_VARS {
        cmd.env_remove(var);
    }
    match input {
        Some(path) => cmd.stdin(std::fs::File::open(path).unwrap()),
        None => cmd.stdin(Stdio::null()),
    };
    cmd.output().unwrap()
}

/// Plain curl in home (no proxy options, no proxy variables) fetching `url` into `out`, at most
/// `secs` seconds to connect and in all.
pub fn curl_home(lab: &Lab, url: &str, out: &Path, secs: u32) -> Output {
    let (secs, out) = (secs.to_string(), out.to_str().unwrap());
    let args = ["-sS", "--connect-timeout", &secs, "--max-time", &secs, url, "-o", out];
    run_in(lab, "home", None, "curl", &args)
}

/// ssh through the forward in home: `command` run in campus as root, stdin from `input`; at
/// most 120 s in all (connect timeout 20 s, the link declared dead after 3 × 5 s silent).
pub fn ssh(lab: &Lab, key: &str, input: Option<&Path>, command: &str) -> Output {
    let port = SSH_FORWARD.rsplit(':').next().unwrap();
    let extra = ["ConnectTimeout=20", "ServerAliveInterval=5", "ServerAliveCountMax=3"];
    let mut args = vec!["120", "ssh"];
    args.extend(ssh_args(Some(port), key, &extra, "root@127.0.0.1", command));
    run_in(lab, "home", input, "timeout", &args)
}

/// `command` through the ssh forward until it succeeds: at most 10 tries, 500 ms apart (each
/// bounded as in [`ssh`]); its stdout, or `None` when every try failed.
pub fn ssh_until_up(lab: &Lab, key: &str, command: &str) -> Option<String> {
    for _ in 0..10 {
        let out = ssh(lab, key, None, command);
        if out.status.success() {
            return Some(text(&out.stdout));
        }
        eprintln!("ssh through the forward failed, retrying: {}", text(&out.stderr));
        std::thread::sleep(Duration::from_millis(500));
    }
    None
}

/// programs.py's `udpcount HOST PORT 100 [BIND]` in home: sends 100 datagrams and reports
/// `echoed K ...` (the program bounds its own time).
pub fn udpcount(lab: &Lab, programs_py: &str, host: &str, port: &str, bind: &[&str]) -> Output {
    let mut args = vec![programs_py, "udpcount", host, port, "100"];
    args.extend_from_slice(bind);
    run_in(lab, "home", None, "python3", &args)
}

/// The K of udpcount's `echoed K ...` line in `stdout`, if there is one.
pub fn echoed(stdout: &str) -> Option<u32> {
    stdout
        .lines()
        .find_map(|l| l.strip_prefix("echoed "))
        .and_then(|rest| rest.split(' ').next())
        .and_then(|k| k.parse::<u32>().ok())
}

/// dig in home against the DNS forwarder: one try, at most 10 s.
pub fn dig(lab: &Lab, extra: &[&str]) -> Output {
    let (host, port) = DNS_LISTEN.rsplit_once(':').unwrap();
    let server = format!("@{host}");
    let mut args = vec![server.as_str(), "-p", port, "+tries=1", "+time=10"];
    args.extend_from_slice(extra);
    run_in(lab, "home", None, "dig", &args)
}

/// Starts tcpdump on home's only link (vh), writing every packet unbuffered to `pcap`; returns
/// its process index once it listens (at most 10 s, else panics). Stop it with [`end_capture`].
pub fn start_capture(lab: &mut Lab, pcap: &Path) -> usize {
    let mut args: Vec<&str> = "-i vh -nn -U --immediate-mode -B 65536 -Z root -w".split(' ').collect();
    args.push(pcap.to_str().unwrap());
    let tcpdump = lab.spawn("home", Path::new("tcpdump"), &args);
    assert!(
        lab.wait_log(tcpdump, "listening on", Duration::from_secs(10)),
        "tcpdump did not start: {}",
        lab.log(tcpdump)
    );
    tcpdump
}

/// Stops the tcpdump `idx` writing `pcap` once everything sent before has been written: a
/// marker datagram from home to the VPS's discard port, sent until it shows up in the file
/// (tcpdump -U writes packets in order; at most 50 tries 100 ms apart), then SIGINT (at most
/// 10 s to stop). Panics if the marker never shows up or tcpdump does not stop.
pub fn end_capture(lab: &mut Lab, idx: usize, pcap: &Path) {
    let send = format!(
        "import socket; socket.socket(socket.AF_INET, socket.SOCK_DGRAM).sendto(b{CAPTURE_END:?}, ('10.77.1.2', 9))"
    );
    let marker = CAPTURE_END.as_bytes();
    let mut seen = false;
    for _ in 0..50 {
        run_in(lab, "home", None, "python3", &["-c", &send]);
        std::thread::sleep(Duration::from_millis(100));
        let raw = std::fs::read(pcap).unwrap_or_default();
        if raw.windows(marker.len()).any(|w| w == marker) {
            seen = true;
            break;
        }
    }
    assert!(
        seen,
        "the capture's end marker never reached {}: {}",
        pcap.display(),
        lab.log(idx)
    );
    assert!(
        lab.interrupt(idx, Duration::from_secs(10)),
        "tcpdump did not stop on SIGINT"
    );
}

/// How many packets of the capture `pcap` match the tcpdump `filter` (read in home with
/// `tcpdump -r`, which ends with the file); panics if tcpdump fails.
pub fn count_captured(lab: &Lab, pcap: &Path, filter: &str) -> usize {
    let out = lab.run("home", "tcpdump", &["-r", pcap.to_str().unwrap(), "-nn", filter]);
    assert!(out.status.success(), "tcpdump -r {filter}: {}", text(&out.stderr));
    text(&out.stdout).lines().count()
}

/// Whether the raw bytes of the capture `pcap` contain `needle` anywhere.
pub fn captured_bytes(pcap: &Path, needle: &[u8]) -> bool {
    let raw = std::fs::read(pcap).unwrap();
    raw.windows(needle.len()).any(|w| w == needle)
}
