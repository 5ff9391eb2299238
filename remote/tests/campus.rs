//! The three-machine scenario in network namespaces made by this test: `home` (curl, SOCKS5
//! clients, warren-local), `vps` (warren-remote), `campus` (the agent, the intranet web server
//! and UDP echo server on 10.77.3.1, reachable only inside `campus`, and the name
//! `intranet.campus.test` that only `campus` resolves). Configs are docs/campus/*.yaml with the
//! keys and the VPS address filled in. Checked through the agent: a page fetch (CONNECT), UDP
//! ASSOCIATE with both `udp_transport`s by address and by name, BIND with a peer inside campus,
//! two impostor agents that must not take the name, a VPS restart and a cut link.
//! Needs root (ip netns); without it the test says so and returns (tests/reverse.rs is the
//! loopback variant), unless WARREN_REQUIRE_NETNS is set, as .ci/run does where it can.

#[path = "campus/checks.rs"]
mod checks;
#[path = "campus/lab.rs"]
mod lab;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use lab::Lab;

/// The SOCKS5 client, UDP echo server and BIND peer run inside the namespaces.
const SOCKS_PY: &str = include_str!("campus/socks.py");

/// warren-local, built from the current source (`cargo test -p warren-remote` builds only
/// warren-remote's binary).
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
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/campus").join(name);
    std::fs::read_to_string(path)
        .unwrap()
        .replace("REPLACE-WITH-warren-remote-genkey-OUTPUT", key)
        .replace("REPLACE-WITH-A-SECOND-genkey-OUTPUT-FOR-THE-AGENT", agent_key)
}

/// `text` with `from` replaced by `to`; panics when `from` is not there (a template changed).
fn edit(text: &str, from: &str, to: &str) -> String {
    assert!(text.contains(from), "{from:?} not in the template");
    text.replace(from, to)
}

fn fetch_until(lab: &Lab, url: &str, out: &Path, limit: Duration) -> Option<Duration> {
    let start = Instant::now();
    while start.elapsed() < limit {
        if lab.curl(
            "home",
            &["--socks5-hostname", "127.0.0.1:1080", url, "-o", out.to_str().unwrap()],
        ) {
            return Some(start.elapsed());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    None
}

#[test]
fn campus_intranet_through_reverse_tunnel_in_namespaces() {
    let Some(mut lab) = Lab::new() else {
        eprintln!(
            "cannot create network namespaces here (needs root and iproute2): namespace test skipped; \
             tests/reverse.rs runs the loopback variant of the scenario"
        );
        return;
    };
    let (dir, n) = (lab.dir.clone(), lab.n);
    // Only the campus namespace (so only the agent) resolves this name.
    lab.hosts(
        "campus",
        &format!("127.0.0.1 localhost\n10.77.3.1 {}\n", checks::INTRANET_NAME),
    );
    let script = dir.join("socks.py");
    std::fs::write(&script, SOCKS_PY).unwrap();
    let script = script.to_str().unwrap().to_string();

    // The intranet site: a 4 MiB file of varied bytes.
    let site = dir.join("site");
    std::fs::create_dir_all(&site).unwrap();
    let body: Vec<u8> = (0..4u32 << 20)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
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
    let echo = lab.spawn("campus", &python, &[&script, "echo", "10.77.3.1", checks::ECHO_PORT]);
    let url = "http://10.77.3.1:8080/big";
    let mut up = false;
    for _ in 0..100 {
        if lab.curl("campus", &["-o", "/dev/null", url]) {
            up = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(up, "intranet server did not start");
    assert!(
        lab.wait_log(echo, "ready", Duration::from_secs(10)),
        "UDP echo server did not start"
    );
    // Neither home nor the VPS reaches the intranet directly, nor resolves its name.
    assert!(!lab.curl("home", &["--max-time", "2", "-o", "/dev/null", url]));
    assert!(!lab.curl("vps", &["--max-time", "2", "-o", "/dev/null", url]));
    for (ns, resolves) in [("home", false), ("vps", false), ("campus", true)] {
        let found = lab
            .run(ns, "getent", &["hosts", checks::INTRANET_NAME])
            .status
            .success();
        assert_eq!(found, resolves, "{ns} resolving {}", checks::INTRANET_NAME);
    }

    let make_key = |salt: u8| {
        use base64::Engine;
        let bytes: [u8; 32] = std::array::from_fn(|i| (i as u8).wrapping_mul(37).wrapping_add(n as u8) ^ salt);
        base64::engine::general_purpose::STANDARD.encode(bytes)
    };
    // The laptops' shared key, and the agent's own (docs/campus/*.yaml).
    let (key, agent_key) = (make_key(0), make_key(0x5a));
    let write = |name: &str, text: String| {
        let p = dir.join(name);
        std::fs::write(&p, text).unwrap();
        p.to_str().unwrap().to_string()
    };
    // The template routes campus.example.edu names via the agent; this bed's name is campus.test.
    let vps_text = config("vps.yaml", &key, &agent_key);
    assert!(
        vps_text.ends_with("via: campus }\n"),
        "vps.yaml no longer ends with its routes"
    );
    let vps_cfg = write(
        "vps.yaml",
        vps_text + "    - { domain: \"campus.test\", via: campus }\n",
    );
    // The stand-in intranet host 10.77.3.1 is an address of the agent's own namespace, and an
    // agent's ACL denies its own interface addresses unless an IP rule allows them (a real
    // intranet host is another machine): allow it by IP.
    let campus_text = edit(&config("campus.yaml", &key, &agent_key), "vps.example.net", "10.77.2.2")
        + "  acl:\n    - allow: \"10.77.3.1/32\"\n";
    let campus_cfg = write("campus.yaml", campus_text.clone());
    let laptop_text = edit(&config("laptop.yaml", &key, &agent_key), "vps.example.net", "10.77.1.2");
    // A second laptop proxy carrying UDP over TCP (the template's default is `udp`).
    let laptop_tcp_cfg = write(
        "laptop-tcp.yaml",
        edit(
            &laptop_text,
            "listen: \"127.0.0.1:1080\"",
            "listen: \"127.0.0.1:1081\"\n  udp_transport: tcp",
        ),
    );
    let laptop_cfg = write("laptop.yaml", laptop_text);
    // Impostors: the agent's config run a second time (another listen port), and one whose
    // agent key is the laptops' shared key (its own top-level key differs: a config whose
    // agent key is its shared key is refused at start), giving up on an answer after 1 s.
    let twin_cfg = write("twin.yaml", edit(&campus_text, "127.0.0.1:8389", "127.0.0.1:8390"));
    let thief_text = edit(
        &config("campus.yaml", &make_key(0xc3), &key),
        "vps.example.net",
        "10.77.2.2",
    );
    let thief_cfg = write(
        "thief.yaml",
        edit(&thief_text, "127.0.0.1:8389", "127.0.0.1:8391") + "  handshake_timeout: 1\n",
    );
    let remote_bin = PathBuf::from(env!("CARGO_BIN_EXE_warren-remote"));
    let local_bin = local_binary();
    let vps_idx = lab.spawn("vps", &remote_bin, &["-c", &vps_cfg, "--log-level", "info"]);
    let agent_idx = lab.spawn("campus", &remote_bin, &["-c", &campus_cfg]);
    lab.spawn("home", &local_bin, &["-c", &laptop_cfg]);
    lab.spawn("home", &local_bin, &["-c", &laptop_tcp_cfg]);

    let out = dir.join("fetched");
    fetch_until(&lab, url, &out, Duration::from_secs(30)).expect("first fetch through the reverse tunnel");
    assert!(std::fs::read(&out).unwrap() == body, "fetched page differs");

    let start = Instant::now();
    assert!(lab.curl(
        "home",
        &["--socks5-hostname", "127.0.0.1:1080", url, "-o", out.to_str().unwrap()]
    ));
    let secs = start.elapsed().as_secs_f64();
    assert!(std::fs::read(&out).unwrap() == body);
    println!(
        "campus fetch: 4 MiB in {secs:.3} s = {:.1} MB/s (including curl start-up)",
        4.194304 / secs
    );

    checks::udp_through_agent(&lab, &script, "1080", "udp");
    checks::udp_through_agent(&lab, &script, "1081", "tcp");
    checks::bind_through_agent(&mut lab, &script);
    let fetch = |lab: &Lab| {
        let _ = std::fs::remove_file(&out);
        lab.curl(
            "home",
            &["--socks5-hostname", "127.0.0.1:1080", url, "-o", out.to_str().unwrap()],
        ) && std::fs::read(&out).is_ok_and(|got| got == body)
    };
    checks::impostors(&mut lab, &remote_bin, vps_idx, &twin_cfg, &thief_cfg, fetch);

    // The VPS restarts; nobody touches the agent or the laptop.
    lab.kill(vps_idx);
    let killed = Instant::now();
    lab.spawn("vps", &remote_bin, &["-c", &vps_cfg]);
    std::fs::remove_file(&out).unwrap();
    fetch_until(&lab, url, &out, Duration::from_secs(30)).expect("fetch after the VPS restart");
    let heal = killed.elapsed();
    assert!(std::fs::read(&out).unwrap() == body);
    println!("heal after VPS restart: {:.2} s", heal.as_secs_f64());

    // The campus link is cut (no FIN, no RST: packets just stop) for longer than the heartbeat
    // allows (12 s of silence, beats 1-3 s apart). A fetch during the outage fails rather than
    // hangs; both ends must notice the dead session by its heartbeat alone, and once the link is
    // back the agent registers again (TCP alone would have carried the old session on, as it did
    // with a 7 s cut) and the fetch works with nobody touching a machine.
    let registrations = |lab: &Lab| lab.log(agent_idx).matches("agent registered").count();
    let before_cut = registrations(&lab);
    assert!(
        before_cut >= 1,
        "the agent logged its registration: {}",
        lab.log(agent_idx)
    );
    lab.ns_ip("vps", "link set vw down");
    let cut = Instant::now();
    let started = Instant::now();
    let during = lab.curl(
        "home",
        &[
            "--max-time",
            "30",
            "--socks5-hostname",
            "127.0.0.1:1080",
            url,
            "-o",
            "/dev/null",
        ],
    );
    assert!(!during, "a fetch succeeded over a cut link");
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "a fetch over the cut link hung until curl gave up"
    );
    while cut.elapsed() < Duration::from_secs(17) {
        std::thread::sleep(Duration::from_millis(100));
    }
    lab.ns_ip("vps", "link set vw up");
    let restored = Instant::now();
    std::fs::remove_file(&out).ok();
    fetch_until(&lab, url, &out, Duration::from_secs(30)).expect("fetch after the link came back");
    assert!(
        registrations(&lab) > before_cut,
        "the agent did not register again after a 17 s silent cut (the heartbeat should end the session): {}",
        lab.log(agent_idx)
    );
    assert!(std::fs::read(&out).unwrap() == body);
    println!(
        "heal after a {:.1} s cut of the campus link: {:.2} s after it came back",
        restored.duration_since(cut).as_secs_f64(),
        restored.elapsed().as_secs_f64()
    );
}
