//! The namespace lab of remote/tests/campus.rs: three namespaces joined by veth pairs, the
//! processes started inside them (each with its own log file), and a per-namespace `/etc/hosts`.
//! Everything is removed on drop, panics included; on a panic every log is printed first.
//!
//! ```text
//!  home 10.77.1.1 ─vh──vv─ 10.77.1.2 vps 10.77.2.2 ─vw──vc─ 10.77.2.1 campus (+ 10.77.3.1 on lo)
//! ```

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// Namespaces, processes and files, all removed on drop.
pub struct Lab {
    prefix: String,
    children: Vec<Child>,
    logs: Vec<PathBuf>,
    /// `/etc/netns/<ns>` directories this lab made (`ip netns exec` mounts their files over /etc).
    etc: Vec<PathBuf>,
    pub dir: PathBuf,
    /// Distinguishes this lab's keys from another run's.
    pub n: u32,
}

impl Lab {
    /// The three namespaces, linked and addressed; `None` when namespaces cannot be made here
    /// (not root, no iproute2), unless WARREN_REQUIRE_NETNS is set: then that is a failure.
    pub fn new() -> Option<Lab> {
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
            return None;
        }
        let _ = Command::new("ip").args(["netns", "del", &probe]).status();

        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let prefix = format!("wrn{}x{n}", std::process::id());
        let dir = std::env::temp_dir().join(format!("{prefix}-lab"));
        std::fs::create_dir_all(&dir).unwrap();
        let lab = Lab {
            prefix,
            children: Vec::new(),
            logs: Vec::new(),
            etc: Vec::new(),
            dir,
            n,
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
        Some(lab)
    }

    /// The real name of this lab's namespace `name`.
    pub fn ns(&self, name: &str) -> String {
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

    /// `ip ARGS` inside namespace `ns`; panics when it fails.
    pub fn ns_ip(&self, ns: &str, args: &str) {
        let cmd = format!("netns exec {} ip {args}", self.ns(ns));
        assert!(self.ip(&cmd), "ip {cmd} failed");
    }

    /// Gives namespace `ns` its own /etc/hosts (seen by processes started after this).
    pub fn hosts(&mut self, ns: &str, text: &str) {
        self.etc_file(ns, "hosts", text);
    }

    /// Gives namespace `ns` its own /etc/`name` (e.g. `resolv.conf`, `nsswitch.conf`), seen by
    /// processes started after this.
    #[allow(dead_code)] // not every test that includes the lab uses it
    pub fn etc_file(&mut self, ns: &str, name: &str, text: &str) {
        let etc = PathBuf::from("/etc/netns").join(self.ns(ns));
        std::fs::create_dir_all(&etc).unwrap();
        if !self.etc.contains(&etc) {
            self.etc.push(etc.clone());
        }
        std::fs::write(etc.join(name), text).unwrap();
    }

    /// Starts `program ARGS` in `ns`, output to its own log file; returns its index.
    pub fn spawn(&mut self, ns: &str, program: &Path, args: &[&str]) -> usize {
        let path = self.dir.join(format!("{ns}-{}.log", self.children.len()));
        let log = std::fs::File::create(&path).unwrap();
        let child = Command::new("ip")
            .args(["netns", "exec", &self.ns(ns)])
            .arg(program)
            .args(args)
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        self.children.push(child);
        self.logs.push(path);
        self.children.len() - 1
    }

    /// Ends process `idx` (started by [`Lab::spawn`]).
    pub fn kill(&mut self, idx: usize) {
        let _ = self.children[idx].kill();
        let _ = self.children[idx].wait();
    }

    /// Asks process `idx` to stop with SIGINT (tcpdump then finishes its capture file) and
    /// waits for it at most `limit`; true when it ended by itself, else it is killed.
    #[allow(dead_code)] // not every test that includes the lab uses it
    pub fn interrupt(&mut self, idx: usize, limit: Duration) -> bool {
        if let Ok(Some(_)) = self.children[idx].try_wait() {
            return true;
        }
        let pid = self.children[idx].id().to_string();
        let _ = Command::new("kill").args(["-INT", &pid]).status();
        let start = Instant::now();
        while start.elapsed() < limit {
            if let Ok(Some(_)) = self.children[idx].try_wait() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        self.kill(idx);
        false
    }

    /// What process `idx` has written so far.
    pub fn log(&self, idx: usize) -> String {
        std::fs::read_to_string(&self.logs[idx]).unwrap_or_default()
    }

    /// Polls process `idx`'s log until it contains `needle`, for at most `limit`.
    pub fn wait_log(&self, idx: usize, needle: &str, limit: Duration) -> bool {
        let start = Instant::now();
        while start.elapsed() < limit {
            if self.log(idx).contains(needle) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        self.log(idx).contains(needle)
    }

    /// Runs `program ARGS` in `ns` to the end (the program bounds its own time).
    pub fn run(&self, ns: &str, program: &str, args: &[&str]) -> Output {
        Command::new("ip")
            .args(["netns", "exec", &self.ns(ns), program])
            .args(args)
            .output()
            .unwrap()
    }

    /// curl in `ns` (at most 60 s); true when it succeeded.
    pub fn curl(&self, ns: &str, args: &[&str]) -> bool {
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
        for etc in &self.etc {
            let _ = std::fs::remove_dir_all(etc);
        }
        if std::thread::panicking() {
            for path in &self.logs {
                let text = std::fs::read_to_string(path).unwrap_or_default();
                eprintln!("== {}\n{text}", path.display());
            }
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
