#!/usr/bin/env python3
"""warren vs shadowsocks-rust, shadowsocks-libev, ssh -D and a direct connection, on loopback.

Driven by bench/run.sh (which installs the peers and builds the binaries). Every system is
started once, then measured in interleaved rounds (each round runs every system, in a rotated
order), so slow drifts of a shared machine hit all systems alike. Medians and min-max are shown,
with each figure's ratio to shadowsocks-rust chacha20-ietf-poly1305.

Robustness: every wait is bounded, every process this script starts is in its own process group
and is killed on exit (normal, error or signal), and a system that fails to start stops the run
with a non-zero exit and a message naming it.
"""

import argparse
import atexit
import datetime
import os
import platform
import resource
import select
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BASELINE = "ss-rust chacha20"
PROCS = []  # every Popen we started, killed at exit


class BenchError(Exception):
    pass


def log(msg):
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def kill_all():
    for p in PROCS:
        if p.poll() is None:
            try:
                os.killpg(p.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
    for p in PROCS:
        try:
            p.wait(timeout=5)
        except subprocess.TimeoutExpired:
            pass


def on_signal(signum, _frame):
    kill_all()
    sys.exit(128 + signum)


def spawn(argv, logpath, **kw):
    out = open(logpath, "ab")
    p = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=kw.pop("stdout", out), stderr=out,
                         start_new_session=True, **kw)
    PROCS.append(p)
    return p


def stop(p):
    if p.poll() is None:
        try:
            os.killpg(p.pid, signal.SIGTERM)
            p.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait(timeout=5)
        except ProcessLookupError:
            pass


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port, procs, name, logpath, timeout=20.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for p in procs:
            if p.poll() is not None:
                raise BenchError(f"{name}: {p.args[0]} exited with {p.returncode} at start-up; log {logpath}:\n"
                                 + tail(logpath))
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            time.sleep(0.05)
    raise BenchError(f"{name}: port {port} not open after {timeout:.0f}s; log {logpath}:\n" + tail(logpath))


def tail(path, n=15):
    try:
        with open(path, errors="replace") as f:
            return "".join(f.readlines()[-n:])
    except OSError:
        return ""


# ---------------------------------------------------------------- /proc accounting

def children_map():
    kids = {}
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                with open(f"/proc/{d}/stat") as f:
                    ppid = int(f.read().rsplit(")", 1)[1].split()[1])
                kids.setdefault(ppid, []).append(int(d))
            except (OSError, IndexError, ValueError):
                pass
    return kids


def tree(pids):
    kids = children_map()
    out, todo = [], list(pids)
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(kids.get(p, []))
    return out


def rss_kib(pids):
    total = 0
    for p in tree(pids):
        try:
            with open(f"/proc/{p}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1])
        except OSError:
            pass
    return total


def cpu_seconds(pids):
    """user + sys of the process trees, including reaped children."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0
    for p in tree(pids):
        try:
            with open(f"/proc/{p}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            total += sum(int(x) for x in fields[11:15])  # utime stime cutime cstime
        except (OSError, ValueError):
            pass
    return total / tick


# ---------------------------------------------------------------- systems

class System:
    """A proxy (local + remote processes) with a SOCKS5 port; `direct` has none."""

    def __init__(self, name, workdir, bins, sink):
        self.name, self.workdir, self.bins, self.sink = name, workdir, bins, sink
        self.socks = None
        # Port-forward systems ("warren forward", "ssh -L") carry every connection to the sink
        # from this port: the load generator connects to it with no SOCKS handshake.
        self.forward = None
        self.procs = []
        self.logpath = os.path.join(workdir, name.replace(" ", "_").replace("/", "_") + ".log")

    def start(self):
        if self.name == "direct":
            return
        self.socks = free_port()
        srv = free_port()
        b, lp = self.bins, self.logpath
        if self.name == "warren forward":
            self.forward = free_port()
            cfg = os.path.join(self.workdir, "warren_forward.yaml")
            with open(cfg, "w") as f:
                f.write(f"""key: "{WARREN_KEY}"
local:
  listen: "127.0.0.1:{self.socks}"
  remote: "127.0.0.1:{srv}"
  max_connections: 30000
  forwards: [ {{ listen: "127.0.0.1:{self.forward}", to: "{self.sink}" }} ]
remote:
  listen: "127.0.0.1:{srv}"
  max_connections: 30000
  acl: [{{ allow: "127.0.0.1" }}]
""")
            remote = spawn([b["warren-remote"], "-c", cfg, "--log-level", "warn"], lp)
            wait_port(srv, [remote], self.name, lp)
            local = spawn([b["warren-local"], "-c", cfg, "--log-level", "warn"], lp)
            self.procs = [local, remote]
        elif self.name in ("warren", "warren@base", "warren uot"):
            # "warren uot" is warren with UDP carried over TCP (local.udp_transport: tcp).
            suffix = "@base" if self.name == "warren@base" else ""
            transport = "tcp" if self.name == "warren uot" else "udp"
            cfg = os.path.join(self.workdir, self.name.replace(" ", "_") + ".yaml")
            with open(cfg, "w") as f:
                f.write(f"""key: "{WARREN_KEY}"
local: {{ listen: "127.0.0.1:{self.socks}", remote: "127.0.0.1:{srv}", max_connections: 30000, udp_transport: {transport} }}
remote:
  listen: "127.0.0.1:{srv}"
  max_connections: 30000
  acl: [{{ allow: "127.0.0.1" }}]
""")
            remote = spawn([b["warren-remote" + suffix], "-c", cfg, "--log-level", "warn"], lp)
            wait_port(srv, [remote], self.name, lp)
            local = spawn([b["warren-local" + suffix], "-c", cfg, "--log-level", "warn"], lp)
            self.procs = [local, remote]
        elif self.name.startswith("ss-rust"):
            if self.name.endswith("2022"):
                method, key = "2022-blake3-chacha20-poly1305", SS2022_KEY
            else:
                method, key = "chacha20-ietf-poly1305", "bench-password"
            # -U: TCP and UDP (bench/udp.py measures UDP ASSOCIATE through the same processes).
            common = ["-m", method, "-k", key, "--tcp-no-delay", "-U"]
            remote = spawn([b["ssserver"], "-s", f"127.0.0.1:{srv}", *common], lp)
            wait_port(srv, [remote], self.name, lp)
            local = spawn([b["sslocal"], "-b", f"127.0.0.1:{self.socks}", "-s", f"127.0.0.1:{srv}", *common], lp)
            self.procs = [local, remote]
        elif self.name == "ss-libev chacha20":
            common = ["-m", "chacha20-ietf-poly1305", "-k", "bench-password", "--no-delay", "-n", "65536", "-u"]
            remote = spawn([b["ss-server"], "-s", "127.0.0.1", "-p", str(srv), *common], lp)
            wait_port(srv, [remote], self.name, lp)
            local = spawn([b["ss-local"], "-s", "127.0.0.1", "-p", str(srv), "-b", "127.0.0.1", "-l",
                           str(self.socks), *common], lp)
            self.procs = [local, remote]
        elif self.name in ("ssh -D", "ssh -L"):
            d = os.path.join(self.workdir, "ssh")
            os.makedirs(d, exist_ok=True)
            for k in ("host", "client"):
                if not os.path.exists(f"{d}/{k}"):
                    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", f"{d}/{k}"],
                                   check=True, timeout=30)
            shutil.copy(f"{d}/client.pub", f"{d}/authorized_keys")
            os.chmod(f"{d}/authorized_keys", 0o600)
            os.makedirs("/run/sshd", exist_ok=True)
            with open(f"{d}/sshd_config", "w") as f:
                f.write(f"""ListenAddress 127.0.0.1
Port {srv}
HostKey {d}/host
AuthorizedKeysFile {d}/authorized_keys
PermitRootLogin prohibit-password
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
StrictModes no
AllowTcpForwarding yes
MaxSessions 100000
PidFile none
""")
            remote = spawn([b["sshd"], "-D", "-e", "-f", f"{d}/sshd_config"], lp)
            wait_port(srv, [remote], self.name, lp)
            if self.name == "ssh -L":
                self.forward = free_port()
                how = ["-L", f"127.0.0.1:{self.forward}:{self.sink}"]
            else:
                how = ["-D", f"127.0.0.1:{self.socks}"]
            local = spawn([b["ssh"], "-N", *how, "-p", str(srv), "-i", f"{d}/client",
                           "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
                           "-o", "BatchMode=yes", "-o", "ExitOnForwardFailure=yes", "-o", "LogLevel=ERROR",
                           f"{os.environ.get('USER') or 'root'}@127.0.0.1"], lp)
            self.procs = [local, remote]
        else:
            raise BenchError(f"unknown system {self.name}")
        wait_port(self.forward or self.socks, self.procs, self.name, lp)
        # One real request proves the whole path works before anything is timed.
        lat = loadgen(self.bins, ["latency", *self.route(), "--count", "1"], timeout=30)
        if lat is None:
            raise BenchError(f"{self.name}: started but could not carry a connection; log {lp}:\n" + tail(lp))

    def stop(self):
        for p in self.procs:
            stop(p)
        self.procs = []

    def route(self):
        if self.forward:
            return ["--target", f"127.0.0.1:{self.forward}"]
        r = ["--target", self.sink]
        if self.socks:
            r += ["--socks", f"127.0.0.1:{self.socks}"]
        return r

    def pids(self):
        return [p.pid for p in self.procs]


SINK_LOG = []
SINK = []  # the shared sink process; a measurement with a dead sink stops the run


def check_sink():
    if SINK and SINK[0].poll() is not None:
        raise BenchError(f"the loadgen sink exited with {SINK[0].returncode}:\n" + tail(SINK_LOG[0]))


def loadgen(bins, args, timeout):
    check_sink()
    env = dict(os.environ, RUST_BACKTRACE="0")
    try:
        r = subprocess.run([bins["loadgen"], *args], capture_output=True, text=True, timeout=timeout,
                           start_new_session=True, env=env)
    except subprocess.TimeoutExpired:
        log(f"loadgen {' '.join(args)}: timed out after {timeout}s")
        return None
    if r.returncode != 0:
        log(f"loadgen {' '.join(args)}: exit {r.returncode}: {r.stderr.strip()[:500]}")
        return None
    return r.stdout.split()


WARREN_KEY = "YmVuY2htYXJrIGtleSAtIGxvb3BiYWNrIG9ubHkhISE="  # 32 bytes, loopback only
SS2022_KEY = "YmVuY2htYXJrIGtleSAtIGxvb3BiYWNrIG9ubHkhISE="


# ---------------------------------------------------------------- measurements

def measure_round(sys_, a, res):
    r = res.setdefault(sys_.name, {})
    before = cpu_seconds(sys_.pids())
    out = loadgen(sys_.bins, ["throughput", *sys_.route(), "--bytes", str(a.bytes)], timeout=a.timeout)
    after = cpu_seconds(sys_.pids())
    if out:
        r.setdefault("single", []).append(float(out[0]))
        if sys_.procs:
            r.setdefault("cpu", []).append((after - before) / (a.bytes / 2**30))
    else:
        r.setdefault("errors", []).append("single-stream run failed")
    out = loadgen(sys_.bins, ["throughput", *sys_.route(), "--bytes", str(a.bytes // a.streams), "--streams",
                              str(a.streams)], timeout=a.timeout)
    if out:
        r.setdefault("multi", []).append(float(out[0]))
    else:
        r.setdefault("errors", []).append(f"{a.streams}-stream run failed")
    out = loadgen(sys_.bins, ["latency", *sys_.route(), "--count", str(a.latency_count)], timeout=a.timeout)
    if out:
        r.setdefault("p50", []).append(float(out[0]))
        r.setdefault("p99", []).append(float(out[1]))
    else:
        r.setdefault("errors", []).append("latency run failed")


def settle_rss(pids, seconds, still=0.5):
    """RSS once it stops moving (bounded by `seconds`): samples every 0.5 s until the samples of
    the last `still` seconds agree within 1%. After connections close, `still` must outlast a
    proxy's periodic memory release (warren trims its heap every 5 s), or a sample taken just
    before the release would be reported."""
    samples = [rss_kib(pids)]
    window = max(1, int(still / 0.5))
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        time.sleep(0.5)
        samples.append(rss_kib(pids))
        recent = samples[-(window + 1):]
        if len(recent) == window + 1 and max(recent) - min(recent) <= max(64, max(recent) // 100):
            return samples[-1]
    return samples[-1]


def measure_idle(sys_, a, res):
    r = res.setdefault(sys_.name, {})
    sys_.stop()
    sys_.start()  # fresh processes
    # The baseline is an idle proxy that has served: 20 connections opened, held 1 s and closed,
    # so it already counts what the first connection costs once and for all (code pages faulted
    # in, worker threads' stacks and caches touched), not memory held for connections.
    subprocess.run([sys_.bins["loadgen"], "idle", *sys_.route(), "--count", "20", "--hold", "1"],
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=a.timeout, check=False)
    base = settle_rss(sys_.pids(), 15, still=6) if sys_.procs else 0
    r["rss_idle"] = base
    for n in a.idle:
        p = subprocess.Popen([sys_.bins["loadgen"], "idle", *sys_.route(), "--count", str(n), "--hold", "600"],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
        PROCS.append(p)
        ready, _, _ = select.select([p.stdout], [], [], a.timeout)
        line = p.stdout.readline().split() if ready else []
        if len(line) != 2:
            stop(p)
            r.setdefault("errors", []).append(f"idle {n}: loadgen gave no count")
            continue
        opened, failed = int(line[0]), int(line[1])
        held = settle_rss(sys_.pids(), 10) if sys_.procs else 0
        stop(p)
        after = settle_rss(sys_.pids(), 30, still=6) if sys_.procs else 0
        r[f"idle{n}"] = {
            "opened": opened, "failed": failed,
            "per_conn": (held - base) / max(opened, 1) if sys_.procs else None,
            "after_pct": 100.0 * (after - base) / base if sys_.procs and base else None,
        }


# ---------------------------------------------------------------- report

def med(xs):
    return statistics.median(xs) if xs else None


def cell(xs, base_xs, fmt="{:.0f}", spread=True):
    if not xs:
        return "failed"
    m = med(xs)
    s = fmt.format(m)
    if spread and len(xs) > 1:
        s += f" ({fmt.format(min(xs))}–{fmt.format(max(xs))})"
    b = med(base_xs) if base_xs else None
    if b:
        s += f" **{m / b:.2f}×**"
    return s


def table(order, res, a):
    base = res.get(a.ratio_to, {})
    head = ["system", "1 stream MB/s", f"{a.streams} streams MB/s", "connect p50 µs", "connect p99 µs",
            "CPU s/GiB (local+remote)"]
    for n in a.idle:
        head.append(f"RSS/conn KiB @{n} (failed)")
    head.append("RSS after close vs idle")
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name in order:
        r = res.get(name, {})
        row = [name, cell(r.get("single"), base.get("single")), cell(r.get("multi"), base.get("multi")),
               cell(r.get("p50"), base.get("p50")), cell(r.get("p99"), base.get("p99")),
               cell(r.get("cpu"), base.get("cpu"), "{:.2f}") if name != "direct" else "–"]
        afters = []
        for n in a.idle:
            i, bi = r.get(f"idle{n}"), base.get(f"idle{n}")
            if not i:
                row.append("failed")
                continue
            if i["per_conn"] is None:
                row.append(f"– ({i['failed']})")
                continue
            s = f"{i['per_conn']:.1f}"
            if bi and bi["per_conn"]:
                s += f" **{i['per_conn'] / bi['per_conn']:.2f}×**"
            row.append(s + f" ({i['failed']})")
            if i["after_pct"] is not None:
                afters.append(f"{i['after_pct']:+.0f}%")
        row.append(" / ".join(afters) if afters else "–")
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


def machine():
    cpu = platform.processor() or "unknown"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return cpu, os.cpu_count()


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bin-dir", default=os.path.join(REPO, "target", "release"))
    ap.add_argument("--baseline-bin-dir", default=None,
                    help="another build's warren-local/-remote, measured as system 'warren@base' (before vs after a change)")
    ap.add_argument("--ss-rust-bin", default=os.path.expanduser("~/.cache/warren-bench/ss-rust/bin"))
    ap.add_argument("--systems", default="direct,warren,ss-rust chacha20,ss-rust 2022,ss-libev chacha20,ssh -D")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--bytes", type=int, default=2**30, help="bytes per throughput run (8 streams share it)")
    ap.add_argument("--streams", type=int, default=8)
    ap.add_argument("--latency-count", type=int, default=1000)
    ap.add_argument("--idle", default="1000,10000", help="idle connection counts")
    ap.add_argument("--timeout", type=float, default=300, help="bound on any single measurement (s)")
    ap.add_argument("--out", default=os.path.join(REPO, "docs", "BENCHMARKS.md"),
                    help="markdown file whose generated section is replaced ('-' for none)")
    ap.add_argument("--smoke", action="store_true", help="tiny sizes, warren and direct only (CI)")
    a = ap.parse_args()
    if a.smoke:
        a.systems, a.rounds, a.bytes, a.latency_count, a.idle, a.timeout = "direct,warren", 1, 4 << 20, 20, "50", 60
        if a.out == ap.get_default("out"):
            a.out = "-"
    a.idle = [int(x) for x in a.idle.split(",") if x]
    order = [s.strip() for s in a.systems.split(",") if s.strip()]
    # Ratios are to ss-rust when it runs; a before/after run without it compares to the baseline build.
    a.ratio_to = BASELINE if BASELINE in order or not a.baseline_bin_dir else "warren@base"

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    atexit.register(kill_all)

    # Enough descriptors for the largest idle run: loadgen, sink and each proxy's local side hold
    # N or 2N sockets.
    want = max(a.idle, default=0) * 2 + 1024
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    for limit in (max(want, 65536), hard):
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (limit, max(limit, hard)))
            break
        except (ValueError, OSError):
            continue
    fd_limit = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    fd_note = ""
    if fd_limit < want:
        fd_note = (f"open-files limit {fd_limit} (hard limit; could not raise it to {want}, which allows 1024 "
                   f"spare): a proxy's local side needs 2 descriptors per connection, so the largest idle run "
                   f"may not fully succeed here; the table's failed column says whether it did.")
        log("WARNING: " + fd_note)

    bins = {n: os.path.join(a.bin_dir, n) for n in ("warren-local", "warren-remote", "loadgen")}
    bins.update({n: os.path.join(a.ss_rust_bin, n) for n in ("sslocal", "ssserver")})
    if a.baseline_bin_dir:
        bins.update({n + "@base": os.path.join(a.baseline_bin_dir, n) for n in ("warren-local", "warren-remote")})
        if "warren@base" not in order:
            order.insert(order.index("warren") + 1 if "warren" in order else len(order), "warren@base")
    for n in ("ss-local", "ss-server", "ssh"):
        bins[n] = shutil.which(n) or n
    bins["sshd"] = shutil.which("sshd") or "/usr/sbin/sshd"
    needed = {"warren": ["warren-local", "warren-remote"], "warren uot": ["warren-local", "warren-remote"], "warren@base": ["warren-local@base", "warren-remote@base"],
              "ss-rust chacha20": ["sslocal", "ssserver"],
              "ss-rust 2022": ["sslocal", "ssserver"], "ss-libev chacha20": ["ss-local", "ss-server"],
              "ssh -D": ["ssh", "sshd"], "ssh -L": ["ssh", "sshd"],
              "warren forward": ["warren-local", "warren-remote"], "direct": []}
    for s in order:
        if s not in needed:
            raise BenchError(f"unknown system {s!r}; known: {', '.join(needed)}")
        for n in needed[s] + ["loadgen"]:
            if not (os.path.isfile(bins[n]) and os.access(bins[n], os.X_OK)):
                raise BenchError(f"{s}: {bins[n]} not found (run bench/run.sh, which installs and builds it)")

    workdir = tempfile.mkdtemp(prefix="warren-bench-")
    load_before = os.getloadavg()
    log(f"workdir {workdir}; load average {load_before[0]:.2f}; fd limit {fd_limit}")
    sink_log = os.path.join(workdir, "sink.log")
    sink = subprocess.Popen([bins["loadgen"], "sink"], stdout=subprocess.PIPE, stderr=open(sink_log, "ab"), text=True,
                            start_new_session=True, env=dict(os.environ, RUST_BACKTRACE="0"))
    PROCS.append(sink)
    SINK.append(sink)
    SINK_LOG.append(sink_log)
    ready, _, _ = select.select([sink.stdout], [], [], 10)
    if not ready:
        raise BenchError("loadgen sink did not print its address")
    sink_addr = sink.stdout.readline().strip()

    systems = {}
    for s in order:
        log(f"starting {s}")
        systems[s] = System(s, workdir, bins, sink_addr)
        systems[s].start()

    res = {}
    for rnd in range(a.rounds):
        k = rnd % len(order)
        for s in order[k:] + order[:k]:
            log(f"round {rnd + 1}/{a.rounds}: {s}")
            measure_round(systems[s], a, res)
    for s in order:
        if a.idle:
            log(f"idle connections: {s}")
            measure_idle(systems[s], a, res)
        systems[s].stop()
    load_after = os.getloadavg()
    kill_all()

    cpu, cores = machine()
    now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    errors = [f"- {s}: {e}" for s in order for e in res.get(s, {}).get("errors", [])]
    md = [f"Generated by `bench/run.sh` on {now}: {cpu}, {cores} cores, {platform.system()} {platform.release()}.",
          f"Load average (1 min) {load_before[0]:.2f} before, {load_after[0]:.2f} after the run.",
          f"{a.rounds} interleaved rounds; each cell is the median (min–max) and, in bold, the ratio to "
          f"{a.ratio_to}{'-ietf-poly1305' if a.ratio_to == BASELINE else ''}. Throughput: {a.bytes / 2**30:g} GiB per run ({a.streams} streams share it); "
          f"latency: {a.latency_count} sequential connections per round (SOCKS5 handshake + CONNECT + first byte "
          f"from the target); CPU: user+sys of local+remote during the single-stream run; RSS/conn: "
          f"(RSS of local+remote with N idle tunnelled connections − idle RSS) / N, where idle is after a 20-connection warm-up; after close: "
          f"RSS once the connections have closed, relative to that idle RSS.", "", table(order, res, a), ""]
    if fd_note:
        md += ["Note: " + fd_note, ""]
    if errors:
        md += ["Failures:", *errors, ""]
    text = "\n".join(md)
    print(text)
    if a.out != "-":
        begin, end = "<!-- bench:begin (generated by bench/run.sh) -->", "<!-- bench:end -->"
        old = open(a.out).read() if os.path.exists(a.out) else "# Benchmarks\n\n" + begin + "\n" + end + "\n"
        if begin not in old or end not in old:
            old = old.rstrip() + "\n\n" + begin + "\n" + end + "\n"
        head, rest = old.split(begin, 1)
        new = head + begin + "\n" + text + "\n" + end + rest.split(end, 1)[1]
        with open(a.out, "w") as f:
            f.write(new)
        log(f"wrote {a.out}")
    shutil.rmtree(workdir, ignore_errors=True)
    bad = [s for s in order if res.get(s, {}).get("errors")]
    if a.smoke and bad:
        raise BenchError("smoke run failed: " + "; ".join(errors))


if __name__ == "__main__":
    try:
        main()
    except BenchError as e:
        kill_all()
        print(f"bench: error: {e}", file=sys.stderr)
        sys.exit(1)
