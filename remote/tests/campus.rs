//! The three-machine scenario in network namespaces made by this test: `home` (curl +
//! warren-local), `vps` (warren-remote), `campus` (the agent + the intranet web server on
//! 10.77.3.1, reachable only inside `campus`). Configs are docs/campus/*.yaml with the key and
//! the VPS address filled in. Needs root (ip netns); without it the test says so and returns
//! (tests/reverse.rs is the loopback variant), unless WARREN_REQUIRE_NETNS is set, as .ci/run
//! does where it can.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// Namespaces and processes, all removed on drop (panics included).
struct Lab {
    prefix: String,
    children: Vec<Child>,
    dir: PathBuf,
}

impl Lab {
    fn ns(&self, name: &str) -> String {
        format!("{}{name}", self.prefix)
    }

    fn ip(&self, args: &str) -> bool {
        Command::new("ip")
            .args(args.split_whitespace())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    }

    fn ns_ip(&self, ns: &str, args: &str) {
        let cmd = format!("netns exec {} ip {args}", self.ns(ns));
        assert!(self.ip(&cmd), "ip {cmd} failed");
    }

    fn spawn(&mut self, ns: &str, program: &Path, args: &[&str]) -> usize {
        let log = std::fs::File::create(self.dir.join(format!("{ns}-{}.log", self.children.len()))).unwrap();
        let child = Command::new("ip")
            .args(["netns", "exec", &self.ns(ns)])
            .arg(program)
            .args(args)
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        self.children.push(child);
        self.children.len() - 1
    }

    fn curl(&self, ns: &str, args: &[&str]) -> bool {
        Command::new("ip")
            .args(["netns", "exec", &self.ns(ns), "curl", "-sS", "--max-time", "60"])
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
        for n in ["home", "vps", "campus"] {
            let _ = self.ip(&format!("netns del {}", self.ns(n)));
        }
        if std::thread::panicking() {
            for entry in std::fs::read_dir(&self.dir).into_iter().flatten().flatten() {
                if entry.path().extension().is_some_and(|e| e == "log") {
                    let text = std::fs::read_to_string(entry.path()).unwrap_or_default();
                    eprintln!("== {}\n{text}", entry.path().display());
                }
            }
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn local_binary() -> PathBuf {
    let remote = PathBuf::from(env!("CARGO_BIN_EXE_warren-remote"));
    let local = remote.with_file_name("warren-local");
    if !local.exists() {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let ok = Command::new(cargo)
            .args(["build", "-p", "warren-local"])
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok && local.exists(), "cannot build warren-local next to warren-remote");
    }
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
    let probe = format!("wrnprobe{}", std::process::id());
    let ok = Command::new("ip")
        .args(["netns", "add", &probe])
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        // .ci/run sets this when it can make namespaces itself, so CI never skips this test.
        assert!(
            std::env::var_os("WARREN_REQUIRE_NETNS").is_none(),
            "WARREN_REQUIRE_NETNS is set but `ip netns add` failed"
        );
        eprintln!(
            "cannot create network namespaces here (needs root and iproute2): namespace test skipped; \
             tests/reverse.rs runs the loopback variant of the scenario"
        );
        return;
    }
    let _ = Command::new("ip").args(["netns", "del", &probe]).status();

    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let prefix = format!("wrn{}x{n}", std::process::id());
    let dir = std::env::temp_dir().join(format!("{prefix}-lab"));
    std::fs::create_dir_all(&dir).unwrap();
    let mut lab = Lab {
        prefix,
        children: Vec::new(),
        dir: dir.clone(),
    };
    for ns in ["home", "vps", "campus"] {
        assert!(lab.ip(&format!("netns add {}", lab.ns(ns))));
        lab.ns_ip(ns, "link set lo up");
    }
    assert!(lab.ip(&format!(
        "link add vh netns {} type veth peer name vv netns {}",
        lab.ns("home"),
        lab.ns("vps")
    )));
    assert!(lab.ip(&format!(
        "link add vc netns {} type veth peer name vw netns {}",
        lab.ns("campus"),
        lab.ns("vps")
    )));
    lab.ns_ip("home", "addr add 10.77.1.1/24 dev vh");
    lab.ns_ip("home", "link set vh up");
    lab.ns_ip("vps", "addr add 10.77.1.2/24 dev vv");
    lab.ns_ip("vps", "link set vv up");
    lab.ns_ip("vps", "addr add 10.77.2.2/24 dev vw");
    lab.ns_ip("vps", "link set vw up");
    lab.ns_ip("campus", "addr add 10.77.2.1/24 dev vc");
    lab.ns_ip("campus", "link set vc up");
    // The intranet: an address only the campus namespace has.
    lab.ns_ip("campus", "addr add 10.77.3.1/32 dev lo");

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
    // Neither home nor the VPS reaches the intranet directly.
    assert!(!lab.curl("home", &["--max-time", "2", "-o", "/dev/null", url]));
    assert!(!lab.curl("vps", &["--max-time", "2", "-o", "/dev/null", url]));

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
    let vps_cfg = write("vps.yaml", config("vps.yaml", &key, &agent_key));
    // The stand-in intranet host 10.77.3.1 is an address of the agent's own namespace, and an
    // agent's ACL denies its own interface addresses unless an IP rule allows them (a real
    // intranet host is another machine): allow it by IP.
    let campus_cfg = write(
        "campus.yaml",
        config("campus.yaml", &key, &agent_key).replace("vps.example.net", "10.77.2.2")
            + "  acl:\n    - allow: \"10.77.3.1/32\"\n",
    );
    let laptop_cfg = write(
        "laptop.yaml",
        config("laptop.yaml", &key, &agent_key).replace("vps.example.net", "10.77.1.2"),
    );
    let remote_bin = PathBuf::from(env!("CARGO_BIN_EXE_warren-remote"));
    let local_bin = local_binary();
    let vps_idx = lab.spawn("vps", &remote_bin, &["-c", &vps_cfg]);
    lab.spawn("campus", &remote_bin, &["-c", &campus_cfg]);
    lab.spawn("home", &local_bin, &["-c", &laptop_cfg]);

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

    // The VPS restarts; nobody touches the agent or the laptop.
    let _ = lab.children[vps_idx].kill();
    let _ = lab.children[vps_idx].wait();
    let killed = Instant::now();
    lab.spawn("vps", &remote_bin, &["-c", &vps_cfg]);
    std::fs::remove_file(&out).unwrap();
    fetch_until(&lab, url, &out, Duration::from_secs(30)).expect("fetch after the VPS restart");
    let heal = killed.elapsed();
    assert!(std::fs::read(&out).unwrap() == body);
    println!("heal after VPS restart: {:.2} s", heal.as_secs_f64());

    // The campus link is cut (no FIN, no RST: packets just stop) for longer than the heartbeat's
    // 5 s. A fetch during the outage fails rather than hangs; once the link is back the agent
    // has redialled or redials, and the fetch works again with nobody touching a machine.
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
    while cut.elapsed() < Duration::from_secs(7) {
        std::thread::sleep(Duration::from_millis(100));
    }
    lab.ns_ip("vps", "link set vw up");
    let restored = Instant::now();
    std::fs::remove_file(&out).ok();
    fetch_until(&lab, url, &out, Duration::from_secs(30)).expect("fetch after the link came back");
    assert!(std::fs::read(&out).unwrap() == body);
    println!(
        "heal after a {:.1} s cut of the campus link: {:.2} s after it came back",
        restored.duration_since(cut).as_secs_f64(),
        restored.elapsed().as_secs_f64()
    );
}
