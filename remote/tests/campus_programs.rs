//! Issue 14 through unmodified programs, in the namespace lab of tests/campus.rs (`home` runs
//! warren-local, `vps` warren-remote, `campus` the agent and the intranet host 10.77.3.1, whose
//! name `intranet.campus.test` only `campus` resolves). warren-local runs
//! docs/campus/laptop-programs.yaml and home loads docs/campus/redir.nft, so the documented
//! examples are what is tested:
//!
//! 1. `ssh -p 2222 root@127.0.0.1` in home reaches a real sshd in campus (TCP forward to
//!    intranet.campus.test:22) and carries 1 MiB byte-exact;
//! 2. 100 datagrams to 127.0.0.1:7007 (UDP forward) come back from the echo server in campus;
//! 3. `dig @127.0.0.1` (UDP and TCP) answers intranet.campus.test with 10.77.3.1, AAAA with an
//!    empty NOERROR, and a capture on home's only link holds tunnel packets but no DNS packet
//!    and not the name;
//! 4. with `nameserver 127.0.0.1` and the nftables rules, plain `curl
//!    http://intranet.campus.test:8080/big` fetches the campus page (transparent proxy); without
//!    the rules home cannot reach 10.77.3.1.
//!
//! Needs root (ip netns), sshd, ssh-keygen, dig, nft, tcpdump, curl and python3; without
//! namespaces the test says so and returns, unless WARREN_REQUIRE_NETNS is set.

#[allow(dead_code)] // this test uses part of the lab
#[path = "campus/lab.rs"]
mod lab;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use lab::Lab;

/// The UDP echo server (`echo HOST PORT`).
const SOCKS_PY: &str = include_str!("campus/socks.py");
/// The UDP forward's client (`udpcount HOST PORT N`).
const PROGRAMS_PY: &str = include_str!("campus/programs.py");
/// A name only the campus namespace resolves (its own /etc/hosts), to 10.77.3.1.
const INTRANET_NAME: &str = "intranet.campus.test";
/// The ports of laptop-programs.yaml (the test checks the file still says so).
const SSH_FORWARD: &str = "127.0.0.1:2222";
const UDP_FORWARD: &str = "127.0.0.1:7007";
const DNS_LISTEN: &str = "127.0.0.1:53";
const REDIR_LISTEN: &str = "127.0.0.1:12345";
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

fn docs(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/campus").join(name)
}

/// warren-local, built from the current source (`cargo test -p warren-remote` builds only
/// warren-remote's binary). Copied from tests/campus.rs.
fn local_binary() -> PathBuf {
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
fn config(name: &str, key: &str, agent_key: &str) -> String {
    std::fs::read_to_string(docs(name))
        .unwrap()
        .replace("REPLACE-WITH-warren-remote-genkey-OUTPUT", key)
        .replace("REPLACE-WITH-A-SECOND-genkey-OUTPUT-FOR-THE-AGENT", agent_key)
}

/// `text` with `from` replaced by `to`; panics when `from` is not there (a template changed).
fn edit(text: &str, from: &str, to: &str) -> String {
    assert!(text.contains(from), "{from:?} not in the template");
    text.replace(from, to)
}

fn text(out: &[u8]) -> String {
    String::from_utf8_lossy(out).into_owned()
}

/// `program ARGS` in namespace `ns`, stdin from `input` (else none), proxy variables removed.
fn run_in(lab: &Lab, ns: &str, input: Option<&Path>, program: &str, args: &[&str]) -> Output {
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

/// Plain curl in home (no proxy options, no proxy variables), at most `secs` seconds.
fn curl_home(lab: &Lab, url: &str, out: &Path, secs: u32) -> Output {
    let secs = secs.to_string();
    run_in(
        lab,
        "home",
        None,
        "curl",
        &[
            "-sS",
            "--connect-timeout",
            &secs,
            "--max-time",
            &secs,
            url,
            "-o",
            out.to_str().unwrap(),
        ],
    )
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

/// ssh through the forward in home: `command` run in campus as root, stdin from `input`.
fn ssh(lab: &Lab, key: &str, input: Option<&Path>, command: &str) -> Output {
    let port = SSH_FORWARD.rsplit(':').next().unwrap();
    run_in(
        lab,
        "home",
        input,
        "timeout",
        &[
            "120",
            "ssh",
            "-F",
            "/dev/null",
            "-p",
            port,
            "-i",
            key,
            "-o",
            "IdentitiesOnly=yes",
            "-o",
            "StrictHostKeyChecking=no",
            "-o",
            "UserKnownHostsFile=/dev/null",
            "-o",
            "BatchMode=yes",
            "-o",
            "ConnectTimeout=20",
            "-o",
            "ServerAliveInterval=5",
            "-o",
            "ServerAliveCountMax=3",
            "-o",
            "LogLevel=ERROR",
            "root@127.0.0.1",
            command,
        ],
    )
}

/// dig in home against the DNS forwarder: one try, at most 10 s.
fn dig(lab: &Lab, extra: &[&str]) -> Output {
    let (host, port) = DNS_LISTEN.rsplit_once(':').unwrap();
    let server = format!("@{host}");
    let mut args = vec![server.as_str(), "-p", port, "+tries=1", "+time=10"];
    args.extend_from_slice(extra);
    run_in(lab, "home", None, "dig", &args)
}

/// Starts sshd in campus on 10.77.3.1:22 with a host key and an authorized client key made in
/// the lab dir; returns the client key's path once sshd listens.
fn start_sshd(lab: &mut Lab) -> String {
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

/// Stops the tcpdump `idx` writing `pcap` once everything sent before has been written: a
/// marker datagram from home to the VPS's discard port, sent until it shows up in the file
/// (tcpdump -U writes packets in order), then SIGINT.
fn end_capture(lab: &mut Lab, idx: usize, pcap: &Path) {
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

#[test]
fn campus_programs_through_forwards_dns_and_redir_in_namespaces() {
    let Some(mut lab) = Lab::new() else {
        eprintln!("cannot create network namespaces here (needs root and iproute2): namespace test skipped");
        return;
    };
    let (dir, n) = (lab.dir.clone(), lab.n);
    // Only campus resolves the intranet name; home's resolver is warren-local's DNS forwarder,
    // and home has a default route (as a laptop has) through the VPS, which forwards nothing.
    lab.hosts("campus", &format!("127.0.0.1 localhost\n10.77.3.1 {INTRANET_NAME}\n"));
    lab.hosts("home", "127.0.0.1 localhost\n::1 localhost\n");
    lab.etc_file(
        "home",
        "resolv.conf",
        "nameserver 127.0.0.1\noptions attempts:1 timeout:10\n",
    );
    lab.etc_file(
        "home",
        "nsswitch.conf",
        "passwd: files\ngroup: files\nshadow: files\nhosts: files dns\n",
    );
    lab.ns_ip("home", "route add default via 10.77.1.2 dev vh");
    let write = |name: &str, content: &[u8]| {
        let p = dir.join(name);
        std::fs::write(&p, content).unwrap();
        p.to_str().unwrap().to_string()
    };
    let socks_py = write("socks.py", SOCKS_PY.as_bytes());
    let programs_py = write("programs.py", PROGRAMS_PY.as_bytes());

    // The intranet: a web site with a 4 MiB file, a UDP echo server and sshd, all on 10.77.3.1.
    let varied = |len: u32, salt: u32| -> Vec<u8> {
        (0..len)
            .map(|i| (i.wrapping_add(salt).wrapping_mul(2_654_435_761) >> 13) as u8)
            .collect()
    };
    let site = dir.join("site");
    std::fs::create_dir_all(&site).unwrap();
    let body = varied(4 << 20, 0);
    std::fs::write(site.join("big"), &body).unwrap();
    let python = PathBuf::from("python3");
    let site_str = site.to_str().unwrap().to_string();
    lab.spawn(
        "campus",
        &python,
        &[
            "-m",
            "http.server",
            "8080",
            "--bind",
            "10.77.3.1",
            "--directory",
            &site_str,
        ],
    );
    let (udp_host, udp_port) = UDP_FORWARD.rsplit_once(':').unwrap();
    let echo = lab.spawn("campus", &python, &[&socks_py, "echo", "10.77.3.1", udp_port]);
    let url_ip = "http://10.77.3.1:8080/big";
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
    let client_key = start_sshd(&mut lab);
    // sshd answers inside campus with the client key (no tunnel involved).
    let direct = lab.run(
        "campus",
        "ssh",
        &[
            "-F",
            "/dev/null",
            "-i",
            &client_key,
            "-o",
            "IdentitiesOnly=yes",
            "-o",
            "StrictHostKeyChecking=no",
            "-o",
            "UserKnownHostsFile=/dev/null",
            "-o",
            "BatchMode=yes",
            "-o",
            "ConnectTimeout=10",
            "-o",
            "LogLevel=ERROR",
            "root@10.77.3.1",
            "true",
        ],
    );
    assert!(direct.status.success(), "ssh inside campus: {}", text(&direct.stderr));

    // Before warren-local: home neither resolves the name nor reaches the intranet.
    let home_hosts = lab.run("home", "cat", &["/etc/hosts"]);
    assert!(home_hosts.status.success());
    assert!(
        !text(&home_hosts.stdout).contains(INTRANET_NAME),
        "home's /etc/hosts names the intranet"
    );
    let resolved = lab.run("home", "getent", &["hosts", INTRANET_NAME]);
    assert!(!resolved.status.success(), "home resolved {INTRANET_NAME} by itself");
    let unreachable = curl_home(&lab, url_ip, &dir.join("direct"), 3);
    assert!(!unreachable.status.success(), "home reached the intranet directly");

    // Configs: the documented ones, with keys and the VPS address filled in.
    let make_key = |salt: u8| {
        use base64::Engine;
        let bytes: [u8; 32] = std::array::from_fn(|i| (i as u8).wrapping_mul(37).wrapping_add(n as u8) ^ salt);
        base64::engine::general_purpose::STANDARD.encode(bytes)
    };
    let (key, agent_key) = (make_key(0), make_key(0x5a));
    let vps_text = config("vps.yaml", &key, &agent_key);
    assert!(
        vps_text.ends_with("via: campus }\n"),
        "vps.yaml no longer ends with its routes"
    );
    let vps_cfg = write(
        "vps.yaml",
        (vps_text + "    - { domain: \"campus.test\", via: campus }\n").as_bytes(),
    );
    // 10.77.3.1 is an address of the agent's own namespace: allowed by IP (see tests/campus.rs).
    let campus_text = edit(&config("campus.yaml", &key, &agent_key), "vps.example.net", "10.77.2.2")
        + "  acl:\n    - allow: \"10.77.3.1/32\"\n";
    let campus_cfg = write("campus.yaml", campus_text.as_bytes());
    let laptop_text = edit(
        &config("laptop-programs.yaml", &key, &agent_key),
        "vps.example.net",
        "10.77.1.2",
    );
    for addr in [SSH_FORWARD, UDP_FORWARD, DNS_LISTEN, REDIR_LISTEN] {
        assert!(
            laptop_text.contains(&format!("listen: \"{addr}\"")),
            "laptop-programs.yaml no longer listens on {addr}"
        );
    }
    assert!(laptop_text.contains(&format!("to: \"{INTRANET_NAME}:22\"")));
    assert!(laptop_text.contains(&format!("to: \"10.77.3.1:{udp_port}\", udp: true")));
    let laptop_cfg = write("laptop-programs.yaml", laptop_text.as_bytes());
    let nft_file = docs("redir.nft");
    let nft_text = std::fs::read_to_string(&nft_file).unwrap();
    let redir_port = REDIR_LISTEN.rsplit(':').next().unwrap();
    assert!(
        nft_text.contains(&format!(
            "ip daddr 10.77.3.0/24 meta l4proto tcp redirect to :{redir_port}"
        )),
        "redir.nft no longer redirects the campus range to the redir port"
    );

    let remote_bin = PathBuf::from(env!("CARGO_BIN_EXE_warren-remote"));
    let local_bin = local_binary();
    lab.spawn("vps", &remote_bin, &["-c", &vps_cfg]);
    let agent = lab.spawn("campus", &remote_bin, &["-c", &campus_cfg]);
    let local = lab.spawn("home", &local_bin, &["-c", &laptop_cfg]);
    assert!(
        lab.wait_log(agent, "agent registered", Duration::from_secs(30)),
        "the agent did not register: {}",
        lab.log(agent)
    );
    // warren-local is up when all its ports listen (UDP and TCP for DNS).
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
        let now = listening(&lab, "home");
        missing = wanted.iter().filter(|w| !now.contains(w)).cloned().collect();
    }
    assert!(
        missing.is_empty(),
        "warren-local does not listen on {missing:?}: {}",
        lab.log(local)
    );

    // 1. ssh through the TCP forward runs in campus and carries 1 MiB byte-exact.
    let mut where_ran = None;
    for _ in 0..10 {
        let out = ssh(&lab, &client_key, None, "ip -o addr show lo");
        if out.status.success() {
            where_ran = Some(text(&out.stdout));
            break;
        }
        eprintln!("ssh through the forward failed, retrying: {}", text(&out.stderr));
        std::thread::sleep(Duration::from_millis(500));
    }
    let where_ran = where_ran.expect("ssh through the forward on 127.0.0.1:2222");
    assert!(
        where_ran.contains("10.77.3.1"),
        "ssh did not run in campus: {where_ran}"
    );
    let data = varied(1 << 20, 12_345);
    let input = dir.join("ssh-input");
    std::fs::write(&input, &data).unwrap();
    let out = ssh(&lab, &client_key, Some(&input), "cat");
    assert!(out.status.success(), "ssh cat: {}", text(&out.stderr));
    assert!(
        out.stdout == data,
        "ssh cat returned {} bytes, not the 1 MiB sent",
        out.stdout.len()
    );
    println!("ssh through the forward: 1 MiB echoed by cat in campus");

    // 2. UDP forward: 100 datagrams to the echo server in campus.
    let out = run_in(
        &lab,
        "home",
        None,
        "python3",
        &[&programs_py, "udpcount", udp_host, udp_port, "100"],
    );
    let stdout = text(&out.stdout);
    let echoed = stdout
        .lines()
        .find_map(|l| l.strip_prefix("echoed "))
        .and_then(|rest| rest.split(' ').next())
        .and_then(|k| k.parse::<u32>().ok());
    println!("UDP forward: {}", stdout.trim());
    assert!(
        echoed.is_some_and(|k| k >= 95),
        "UDP forward: {stdout} {}",
        text(&out.stderr)
    );

    // 3. DNS through the forwarder, watched on home's only link.
    let pcap = dir.join("home.pcap");
    let pcap_str = pcap.to_str().unwrap().to_string();
    let tcpdump = lab.spawn(
        "home",
        Path::new("tcpdump"),
        &[
            "-i",
            "vh",
            "-nn",
            "-U",
            "--immediate-mode",
            "-B",
            "65536",
            "-Z",
            "root",
            "-w",
            &pcap_str,
        ],
    );
    assert!(
        lab.wait_log(tcpdump, "listening on", Duration::from_secs(10)),
        "tcpdump did not start: {}",
        lab.log(tcpdump)
    );
    for transport in ["+notcp", "+tcp"] {
        let out = dig(&lab, &[transport, "+short", INTRANET_NAME]);
        let answer = text(&out.stdout);
        assert!(
            out.status.success() && answer.lines().collect::<Vec<_>>() == ["10.77.3.1"],
            "dig {transport} {INTRANET_NAME}: {answer} {}",
            text(&out.stderr)
        );
    }
    let out = dig(&lab, &[INTRANET_NAME, "AAAA"]);
    let full = text(&out.stdout);
    assert!(
        out.status.success() && full.contains("status: NOERROR") && full.contains("ANSWER: 0,"),
        "dig AAAA {INTRANET_NAME}: {full}"
    );
    // The system resolver (resolv.conf: nameserver 127.0.0.1) finds it too.
    let out = lab.run("home", "getent", &["hosts", INTRANET_NAME]);
    assert!(
        text(&out.stdout).starts_with("10.77.3.1 "),
        "getent hosts {INTRANET_NAME} in home: {}",
        text(&out.stdout)
    );
    println!("DNS forwarder: {INTRANET_NAME} is 10.77.3.1 over UDP and TCP, AAAA empty");

    // The capture of the DNS checks: tunnel packets, none lost, no DNS packet, never the name.
    end_capture(&mut lab, tcpdump, &pcap);
    assert!(
        lab.log(tcpdump)
            .lines()
            .any(|l| l.trim() == "0 packets dropped by kernel"),
        "the capture lost packets: {}",
        lab.log(tcpdump)
    );
    let read = |filter: &str| {
        let out = lab.run("home", "tcpdump", &["-r", &pcap_str, "-nn", filter]);
        assert!(out.status.success(), "tcpdump -r {filter}: {}", text(&out.stderr));
        text(&out.stdout).lines().count()
    };
    let tunnel = read("tcp and host 10.77.1.2 and port 8388");
    assert!(tunnel > 0, "the capture holds no tunnel packet");
    assert_eq!(read("port 53"), 0, "DNS packets left home");
    let raw = std::fs::read(&pcap).unwrap();
    let has = |needle: &[u8]| raw.windows(needle.len()).any(|w| w == needle);
    assert!(
        !has(b"\x08intranet\x06campus\x04test"),
        "the query name left home in the clear"
    );
    assert!(!has(b"intranet"), "the intranet name left home in the clear");
    println!("capture on vh: {tunnel} tunnel packets, no DNS packet, no intranet name");

    // 4. Transparent proxy: plain curl by name once the documented rules are loaded.
    let check = lab.run("home", "nft", &["-c", "-f", nft_file.to_str().unwrap()]);
    assert!(check.status.success(), "nft -c -f redir.nft: {}", text(&check.stderr));
    let load = lab.run("home", "nft", &["-f", nft_file.to_str().unwrap()]);
    assert!(load.status.success(), "nft -f redir.nft: {}", text(&load.stderr));
    let fetched = dir.join("fetched");
    let url_name = format!("http://{INTRANET_NAME}:8080/big");
    let out = curl_home(&lab, &url_name, &fetched, 30);
    assert!(out.status.success(), "curl {url_name} in home: {}", text(&out.stderr));
    assert!(
        std::fs::read(&fetched).unwrap() == body,
        "the page fetched by name differs"
    );
    std::fs::remove_file(&fetched).unwrap();
    let out = curl_home(&lab, url_ip, &fetched, 30);
    assert!(out.status.success(), "curl {url_ip} in home: {}", text(&out.stderr));
    assert!(
        std::fs::read(&fetched).unwrap() == body,
        "the page fetched by address differs"
    );
    // The connection by name went by name: the DNS forwarder's answer mapped the address back.
    let by_name = format!("target={INTRANET_NAME}:8080 protocol=\"redir\"");
    assert!(
        lab.log(local).contains(&by_name),
        "no redirected connection to {INTRANET_NAME} by name in warren-local's log:\n{}",
        lab.log(local)
    );
    println!("transparent proxy: plain curl fetched the 4 MiB page by name and by address");

    // 5. UDP by TPROXY: the documented policy route, then 100 datagrams sent straight to the
    // campus echo server's address, by a program with no idea of any proxy.
    lab.ns_ip("home", "rule add fwmark 0x77 lookup 177");
    lab.ns_ip("home", "route add local 0.0.0.0/0 dev lo table 177");
    let out = run_in(
        &lab,
        "home",
        None,
        "python3",
        &[&programs_py, "udpcount", "10.77.3.1", udp_port, "100", "0.0.0.0"],
    );
    let stdout = text(&out.stdout);
    let echoed = stdout
        .lines()
        .find_map(|l| l.strip_prefix("echoed "))
        .and_then(|rest| rest.split(' ').next())
        .and_then(|k| k.parse::<u32>().ok());
    println!("UDP by TPROXY: {}", stdout.trim());
    assert!(
        echoed.is_some_and(|k| k >= 95),
        "UDP by TPROXY to 10.77.3.1:{udp_port}: {stdout} {}\nwarren-local:\n{}",
        text(&out.stderr),
        lab.log(local)
    );
    assert!(
        lab.log(local).contains("protocol=\"redir-udp\""),
        "the datagrams did not go through warren-local's TPROXY socket"
    );
}
