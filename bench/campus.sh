#!/usr/bin/env bash
# The campus scenario of issue 5 measured in network namespaces: warren next to the usual
# OpenSSH recipe (`ssh -R` from campus to the VPS, `ssh -D` with ProxyJump at home).
#
#   bench/campus.sh                        # as root: install what is missing, build, measure, write docs/BENCHMARKS.md
#   bench/campus.sh --runs 3 --big-mib 64 --out -     # smaller, print the table only
#
# Options: --runs N (fetches per size and system, default 5), --big-mib N (the large file,
# default 256), --heals N (warren VPS restarts, default 3), --out FILE|- (default
# docs/BENCHMARKS.md, the part between <!-- campus:begin --> and <!-- campus:end -->),
# --no-build (use the existing target/release binaries).
#
# The bed is remote/tests/campus.rs's: namespaces home — vps — campus joined by two veth links
# (10.77.1.0/24, 10.77.2.0/24), the intranet web server on 10.77.3.1, an address only campus has,
# and no default route anywhere, so nothing leaves the machine. The script only uses the
# binaries (warren-remote, warren-local) and the configs in docs/campus/, with a generated key
# and the VPS addresses filled in. Every wait is bounded; namespaces, processes and the temporary
# directory are removed on exit, failures included.
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$PWD

runs=5
big_mib=256
heals=3
out=docs/BENCHMARKS.md
build=1
while [ $# -gt 0 ]; do
  case $1 in
    --runs) runs=${2:?--runs needs a number}; shift 2 ;;
    --big-mib) big_mib=${2:?--big-mib needs a number}; shift 2 ;;
    --heals) heals=${2:?--heals needs a number}; shift 2 ;;
    --out) out=${2:?--out needs a file or -}; shift 2 ;;
    --no-build) build=0; shift ;;
    -h | --help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "campus.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
done
for n in "$runs" "$big_mib" "$heals"; do
  [[ $n =~ ^[1-9][0-9]{0,3}$ ]] || { echo "campus.sh: $n is not a count from 1 to 9999" >&2; exit 2; }
done

log() { printf '[campus %s] %s\n' "$(date -u +%H:%M:%S)" "$*" >&2; }
die() { log "error: $*"; exit 1; }

[ "$(id -u)" = 0 ] || die "needs root (ip netns, veth links, sshd)"
[ -n "${EPOCHREALTIME:-}" ] || die "needs bash 5 or later (EPOCHREALTIME)"

# ------------------------------------------------------------------ packages and binaries
missing=()
[ -x /usr/sbin/sshd ] || command -v sshd >/dev/null || missing+=(openssh-server)
{ command -v ssh && command -v ssh-keygen; } >/dev/null || missing+=(openssh-client)
command -v curl >/dev/null || missing+=(curl)
{ command -v ip && command -v ss; } >/dev/null || missing+=(iproute2)
command -v python3 >/dev/null || missing+=(python3)
command -v pgrep >/dev/null || missing+=(procps)
if [ ${#missing[@]} -gt 0 ]; then
  log "installing ${missing[*]}"
  DEBIAN_FRONTEND=noninteractive apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}"
fi
sshd_bin=$(command -v sshd || echo /usr/sbin/sshd)
case $sshd_bin in /*) ;; *) die "sshd must be run by absolute path, found $sshd_bin" ;; esac

if [ "$build" = 1 ]; then
  # The whole workspace, as bench/run.sh builds it (a -p selection would rebuild everything).
  cargo build --release --workspace
fi
bin=${CARGO_TARGET_DIR:-$repo/target}/release
for b in warren-remote warren-local; do
  [ -x "$bin/$b" ] || die "$bin/$b not found (run without --no-build)"
done

# ------------------------------------------------------------------ bed and clean-up
tmpbase=/tmp
[ -d /dev/shm ] && [ -w /dev/shm ] && tmpbase=/dev/shm # fetched files on tmpfs: no disk in the figures
work=$(mktemp -d "$tmpbase/campusbench.XXXXXX")
p=wcb$$ # unique prefix: namespaces $p-home..., veth ends ${p}h...
nss=()
declare -A pid=()

cleanup() {
  local rc=$? ns x i left
  set +e
  trap - EXIT INT TERM
  if [ "$rc" != 0 ]; then
    for x in "$work"/*.log; do
      [ -s "$x" ] && { echo "== $x" >&2; tail -n 20 "$x" >&2; }
    done
  fi
  # Every process in our namespaces was started by this script; then the ones it started directly.
  for ns in "${nss[@]}"; do
    for x in $(ip netns pids "$ns" 2>/dev/null); do kill -TERM "$x" 2>/dev/null; done
  done
  for x in "${pid[@]}"; do kill -TERM "$x" 2>/dev/null; done
  for i in $(seq 1 30); do
    left=()
    for ns in "${nss[@]}"; do mapfile -t -O "${#left[@]}" left < <(ip netns pids "$ns" 2>/dev/null); done
    [ ${#left[@]} = 0 ] && break
    [ "$i" = 30 ] && kill -KILL "${left[@]}" 2>/dev/null
    sleep 0.1
  done
  for x in "${pid[@]}"; do kill -KILL "$x" 2>/dev/null; done
  wait 2>/dev/null
  for ns in "${nss[@]}"; do ip netns del "$ns" 2>/dev/null; done
  rm -rf "$work"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

in_ns() { # in_ns NS CMD...: run CMD inside namespace NS (home, vps, campus)
  local ns=$1
  shift
  ip netns exec "$p-$ns" "$@"
}

start() { # start NAME NS CMD...: CMD in the background inside NS, output in $work/NAME.log
  local name=$1 ns=$2
  shift 2
  ip netns exec "$p-$ns" "$@" >>"$work/$name.log" 2>&1 </dev/null &
  pid[$name]=$!
}

alive() { kill -0 "${pid[$1]}" 2>/dev/null; }

all_alive() { # all_alive NAME...: stop the run if one of them has exited
  local n
  for n in "$@"; do
    alive "$n" || die "$n (pid ${pid[$n]}) exited unexpectedly; log $work/$n.log"
  done
}

wait_listen() { # wait_listen NS PORT NAME: until something listens on TCP PORT in NS (10 s)
  local i
  for i in $(seq 1 100); do
    [ -n "$(in_ns "$1" ss -Hltn "sport = :$2")" ] && return 0
    alive "$3" || die "$3 exited at start-up (log $work/$3.log)"
    [ "$i" = 100 ] || sleep 0.1
  done
  die "$3: nothing listens on port $2 in $1 after 10 s"
}

now() { # microseconds since the epoch
  local t=$EPOCHREALTIME
  echo "${t//[!0-9]/}"
}
since() { # since T: seconds from T (microseconds) until now, 2 decimals
  local d=$(($(now) - $1))
  printf '%d.%02d' $((d / 1000000)) $((d % 1000000 / 10000))
}

log "work directory $work, namespaces $p-{home,vps,campus}"
for n in home vps campus; do
  ip netns add "$p-$n"
  nss+=("$p-$n")
  in_ns "$n" ip link set lo up
done
ip link add "${p}h" netns "$p-home" type veth peer name "${p}v" netns "$p-vps"
ip link add "${p}c" netns "$p-campus" type veth peer name "${p}w" netns "$p-vps"
in_ns home ip addr add 10.77.1.1/24 dev "${p}h"
in_ns home ip link set "${p}h" up
in_ns vps ip addr add 10.77.1.2/24 dev "${p}v"
in_ns vps ip link set "${p}v" up
in_ns vps ip addr add 10.77.2.2/24 dev "${p}w"
in_ns vps ip link set "${p}w" up
in_ns campus ip addr add 10.77.2.1/24 dev "${p}c"
in_ns campus ip link set "${p}c" up
in_ns campus ip addr add 10.77.3.1/32 dev lo # the intranet: only campus has this address

# The intranet site: random files served by a tiny threaded HTTP server that uses sendfile(2),
# so the server costs as little CPU as possible (its ceiling is the `direct` row).
site=$work/site
mkdir "$site"
head -c $((4 << 20)) /dev/urandom >"$site/small"
head -c $((big_mib << 20)) /dev/urandom >"$site/big"
cat >"$work/intranet.py" <<'EOF'
import http.server, os, sys

ROOT = sys.argv[3]

class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.0"

    def do_GET(self):
        try:
            f = open(os.path.join(ROOT, os.path.basename(self.path)), "rb")
        except OSError:
            self.send_error(404)
            return
        with f:
            self.send_response(200)
            self.send_header("Content-Type", "application/octet-stream")
            self.send_header("Content-Length", str(os.fstat(f.fileno()).st_size))
            self.end_headers()
            self.connection.sendfile(f)

    def log_message(self, *args):
        pass

http.server.ThreadingHTTPServer((sys.argv[1], int(sys.argv[2])), Handler).serve_forever()
EOF
start intranet campus python3 "$work/intranet.py" 10.77.3.1 8080 "$site"
wait_listen campus 8080 intranet
url=http://10.77.3.1:8080
in_ns campus curl -sS --max-time 10 -o /dev/null "$url/small" || die "the intranet server does not answer in campus"
# The premise: neither home nor the VPS reaches the intranet server directly.
for n in home vps; do
  if in_ns "$n" curl -s --max-time 2 -o /dev/null "$url/small"; then
    die "$n reaches the intranet server directly: the bed is wrong"
  fi
done
log "bed ready: campus reaches $url, home and vps do not"

# ------------------------------------------------------------------ measurement helpers
results=$work/results.tsv # system  size  MB/s
: >"$results"

step() { # step RECIPE MACHINE DESCRIPTION: one set-up action a person does on one machine
  printf '%s\t%s\n' "$2" "$3" >>"$work/steps-$1.tsv"
  log "$1 step $(wc -l <"$work/steps-$1.tsv") on $2: $3"
}

fetch() { # fetch NS SOCKS|"" FILE MAXTIME: GET $url/FILE into $work/got, check it; prints MB/s
  local ns=$1 socks=$2 file=$3 maxt=$4 r bytes secs
  local args=(-sS --max-time "$maxt" -o "$work/got" -w '%{size_download} %{time_total}')
  [ -n "$socks" ] && args+=(--socks5-hostname "$socks")
  rm -f "$work/got"
  r=$(in_ns "$ns" curl "${args[@]}" "$url/$file" 2>>"$work/curl.log") || return 1
  read -r bytes secs <<<"$r"
  cmp -s "$work/got" "$site/$file" || die "$ns via ${socks:-direct}: fetched $file differs from the original ($bytes bytes)"
  awk -v b="$bytes" -v s="$secs" 'BEGIN { printf "%.1f", b / s / 1e6 }'
}

declare -A route=([direct]="campus " [ssh]="home 127.0.0.1:1081" [warren]="home 127.0.0.1:1080")

cpu_ticks() { # cpu_ticks SYSTEM: "machine/program ticks" lines, user+system time so far of the recipe's processes
  local ns x f comm k
  local -a a
  local -A t=()
  for ns in "${nss[@]}"; do
    for x in $(ip netns pids "$ns"); do
      f=$(cat "/proc/$x/stat" 2>/dev/null) || continue
      comm=${f#*(}
      comm=${comm%%)*}
      case $1:$comm in
        ssh:ssh | ssh:sshd | warren:vps-remote | warren:campus-agent | warren:home-local) ;;
        *) continue ;;
      esac
      read -ra a <<<"${f##*) }"
      k=${ns#"$p-"}/$comm
      t[$k]=$((${t[$k]:-0} + a[11] + a[12])) # utime stime
    done
  done
  for k in "${!t[@]}"; do echo "$k ${t[$k]}"; done
}

measure() { # measure SYSTEM FILE: one timed fetch, recorded in $results (and CPU for the big file)
  local ns socks mbs t0
  all_alive intranet vps-sshd campus-sshd ssh-R ssh-D warren-vps warren-campus warren-home
  read -r ns socks <<<"${route[$1]}"
  t0=$(cpu_ticks "$1")
  mbs=$(fetch "$ns" "$socks" "$2" 300) || die "$1: fetch of $2 failed (curl log $work/curl.log)"
  printf '%s\t%s\t%s\n' "$1" "$2" "$mbs" >>"$results"
  if [ "$2" = big ] && [ "$1" != direct ]; then # CPU s/GiB: in total and per machine/program
    cpu_ticks "$1" | before=$t0 awk -v sys="$1" -v hz="$(getconf CLK_TCK)" -v mib="$big_mib" '
      BEGIN { n = split(ENVIRON["before"], b, "\n"); for (i = 1; i <= n; i++) { split(b[i], kv, " "); was[kv[1]] = kv[2] } }
      { d = ($2 - was[$1]) / hz / (mib / 1024); total += d; printf "%s\tcpu:%s\t%.2f\n", sys, $1, d }
      END { printf "%s\tcpu\t%.2f\n", sys, total }' >>"$results"
  fi
  log "$1 $2: $mbs MB/s"
}

first_fetch() { # first_fetch SYSTEM: until one 4 MiB fetch succeeds byte-exact (30 s)
  local ns socks start
  read -r ns socks <<<"${route[$1]}"
  start=$(now)
  for _ in $(seq 1 60); do
    fetch "$ns" "$socks" small 10 >/dev/null && { log "$1 carries the intranet page (after $(since "$start") s)"; return 0; }
    sleep 0.5
  done
  die "$1: no successful fetch within 30 s"
}

# ------------------------------------------------------------------ the OpenSSH recipe
# The client configs below stand in for DNS ("vps") and for ~/.ssh's default key and
# known_hosts paths, which this script must not touch; they are not counted as steps.
s=$work/ssh
mkdir -p "$s/vps" "$s/campus" "$s/home"
mkdir -p /run/sshd # sshd's privilege-separation directory (as bench/bench.py does)
start_sshd() { # start_sshd NAME NS DIR ADDRESS: an sshd on ADDRESS:22 configured by -o options only
  start "$1" "$2" "$sshd_bin" -D -e -f /dev/null -o "HostKey=$3/host_key" -o "ListenAddress=$4" \
    -o "AuthorizedKeysFile=$3/authorized_keys" -o PermitRootLogin=prohibit-password -o PasswordAuthentication=no \
    -o KbdInteractiveAuthentication=no -o UsePAM=no -o StrictModes=no -o AllowTcpForwarding=yes -o PidFile=none
  wait_listen "$2" 22 "$1"
}
client_config() { # client_config DIR VPS_ADDRESS
  cat >"$1/config" <<EOF
Host vps
  HostName $2
  User root
Host *
  IdentityFile $1/id_ed25519
  IdentitiesOnly yes
  UserKnownHostsFile $1/known_hosts
  StrictHostKeyChecking yes
  BatchMode yes
  ExitOnForwardFailure yes
EOF
}
hostkey() { cut -d' ' -f1,2 "$1/host_key.pub"; }
client_config "$s/campus" 10.77.2.2
client_config "$s/home" 10.77.1.2
: >"$s/vps/authorized_keys"
: >"$s/campus/authorized_keys"

ssh-keygen -q -t ed25519 -N '' -C vps-host -f "$s/vps/host_key"
start_sshd vps-sshd vps "$s/vps" 0.0.0.0
step ssh vps "sshd running with TCP forwarding allowed (host key, sshd)"
ssh-keygen -q -t ed25519 -N '' -C campus-host -f "$s/campus/host_key"
start_sshd campus-sshd campus "$s/campus" 127.0.0.1
step ssh campus "sshd running on 127.0.0.1:22 (host key, sshd)"
ssh-keygen -q -t ed25519 -N '' -C campus -f "$s/campus/id_ed25519"
step ssh campus "ssh-keygen: campus's key for the VPS"
cat "$s/campus/id_ed25519.pub" >>"$s/vps/authorized_keys"
step ssh vps "authorized_keys += campus's public key"
echo "10.77.2.2 $(hostkey "$s/vps")" >"$s/campus/known_hosts"
step ssh campus "known_hosts += the VPS's host key"
start ssh-R campus ssh -F "$s/campus/config" -N -R 2222:127.0.0.1:22 vps
wait_listen vps 2222 ssh-R
step ssh campus "ssh -N -R 2222:127.0.0.1:22 vps"
ssh-keygen -q -t ed25519 -N '' -C home -f "$s/home/id_ed25519"
step ssh home "ssh-keygen: the user's key"
cat "$s/home/id_ed25519.pub" >>"$s/vps/authorized_keys"
step ssh vps "authorized_keys += the user's public key (for the jump)"
cat "$s/home/id_ed25519.pub" >>"$s/campus/authorized_keys"
step ssh campus "authorized_keys += the user's public key"
{ echo "10.77.1.2 $(hostkey "$s/vps")"; echo "[127.0.0.1]:2222 $(hostkey "$s/campus")"; } >"$s/home/known_hosts"
step ssh home "known_hosts += the VPS's and the campus host's keys"
start ssh-D home ssh -F "$s/home/config" -N -D 1081 -J vps -p 2222 root@127.0.0.1
wait_listen home 1081 ssh-D
step ssh home "ssh -N -D 1081 -J vps -p 2222 root@127.0.0.1"
first_fetch ssh

# ------------------------------------------------------------------ warren
# The binaries run through symlinks with neutral names (and the configs sit in a directory
# without "warren" in its path): on a shared machine, someone's `pkill warren-remote` must not
# end this run's processes (it did while this script was being written).
w=$work/cfg
mkdir "$w" "$work/bin"
ln -s "$bin/warren-remote" "$work/bin/vps-remote"
ln -s "$bin/warren-remote" "$work/bin/campus-agent"
ln -s "$bin/warren-local" "$work/bin/home-local"
key=$("$bin/warren-remote" genkey)
step warren any "warren-remote genkey"
agent_key=$("$bin/warren-remote" genkey)
step warren any "warren-remote genkey (the agent's own key)"
conf() { # conf NAME VPS_ADDRESS: docs/campus/NAME with the keys and the VPS address filled in
  sed -e "s|REPLACE-WITH-warren-remote-genkey-OUTPUT|$key|" -e "s|REPLACE-WITH-A-SECOND-genkey-OUTPUT-FOR-THE-AGENT|$agent_key|" \
    -e "s|vps.example.net|$2|" "docs/campus/$1" >"$w/$1"
  grep -q "$key" "$w/$1" || die "docs/campus/$1 has no key placeholder"
}
conf vps.yaml 10.77.1.2
step warren vps "vps.yaml (the key)"
start warren-vps vps "$work/bin/vps-remote" -c "$w/vps.yaml"
wait_listen vps 8388 warren-vps
step warren vps "warren-remote -c vps.yaml"
conf campus.yaml 10.77.2.2
# The stand-in intranet host 10.77.3.1 is an address of the agent's own namespace, which its ACL
# denies unless an IP rule allows it (a real intranet host is another machine): not a user step.
printf '  acl:\n    - allow: "10.77.3.1/32"\n' >>"$w/campus.yaml"
step warren campus "campus.yaml (the key, the agent key, the VPS address)"
start warren-campus campus "$work/bin/campus-agent" -c "$w/campus.yaml"
step warren campus "warren-remote -c campus.yaml"
conf laptop.yaml 10.77.1.2
step warren home "laptop.yaml (the key, the VPS address)"
start warren-home home "$work/bin/home-local" -c "$w/laptop.yaml"
wait_listen home 1080 warren-home
step warren home "warren-local -c laptop.yaml"
first_fetch warren

# ------------------------------------------------------------------ throughput
load_before=$(cut -d' ' -f1 /proc/loadavg)
systems=(direct ssh warren)
for r in $(seq 1 "$runs"); do
  k=$(((r - 1) % ${#systems[@]}))
  for sys in "${systems[@]:k}" "${systems[@]:0:k}"; do # rotated order: slow drifts hit every system
    log "round $r/$runs: $sys"
    measure "$sys" small
    measure "$sys" big
  done
done

# ------------------------------------------------------------------ VPS restarts
notes=$work/notes.txt
: >"$notes"
vps_sshds() { # pids of every sshd in the vps namespace (listener and per-connection processes)
  local x
  for x in $(ip netns pids "$p-vps"); do
    [ "$(cat "/proc/$x/comm" 2>/dev/null)" = sshd ] && echo "$x"
  done
  return 0
}

# (a) Only the listening sshd restarts (what `systemctl restart ssh` does on Debian: the unit's
# KillMode=process leaves the connections' processes running).
kill -KILL "${pid[vps-sshd]}"
wait "${pid[vps-sshd]}" 2>/dev/null || true
start_sshd vps-sshd vps "$s/vps" 0.0.0.0
if fetch home 127.0.0.1:1081 small 10 >/dev/null; then
  echo "- OpenSSH, only the listening sshd restarted (Debian's \`systemctl restart ssh\` keeps the connections' processes): the tunnel kept working." >>"$notes"
else
  echo "- OpenSSH, only the listening sshd restarted: the tunnel broke." >>"$notes"
fi

# (b) The VPS restarts: every sshd process there dies (as in a reboot or crash), sshd starts again.
mapfile -t victims < <(vps_sshds)
kill -KILL "${victims[@]}"
t0=$(now)
wait "${pid[vps-sshd]}" 2>/dev/null || true
start_sshd vps-sshd vps "$s/vps" 0.0.0.0
ssh_heal=""
deadline=$((t0 + 30000000))
for _ in $(seq 1 30); do
  if fetch home 127.0.0.1:1081 small 5 >/dev/null; then ssh_heal=$(since "$t0"); break; fi
  [ "$(now)" -lt "$deadline" ] || break
  sleep 1
done
if [ -n "$ssh_heal" ]; then
  log "ssh healed after $ssh_heal s"
  echo "ssh	$ssh_heal" >"$work/heal-ssh.tsv"
else
  log "ssh did not heal within 30 s"
  echo "ssh	none" >"$work/heal-ssh.tsv"
fi
states=()
for c in ssh-R ssh-D; do
  if alive "$c"; then
    states+=("still running")
  else
    rc=0
    wait "${pid[$c]}" 2>/dev/null || rc=$?
    states+=("had exited (status $rc)")
  fi
done
echo "- OpenSSH, the VPS restarted (every sshd process there killed, sshd started again): 30 s later campus's \`ssh -R\` ${states[0]} and home's \`ssh -D -J\` ${states[1]}; nothing redials them (that needs autossh or a supervisor on both machines)." >>"$notes"

# warren: the VPS's warren-remote is killed and started again; nobody touches the others.
: >"$work/heal-warren.tsv"
for h in $(seq 1 "$heals"); do
  all_alive warren-vps warren-campus warren-home
  kill -KILL "${pid[warren-vps]}"
  wait "${pid[warren-vps]}" 2>/dev/null || true
  t0=$(now)
  start warren-vps vps "$work/bin/vps-remote" -c "$w/vps.yaml"
  healed=""
  deadline=$((t0 + 30000000))
  for _ in $(seq 1 150); do
    if fetch home 127.0.0.1:1080 small 10 >/dev/null; then healed=$(since "$t0"); break; fi
    [ "$(now)" -lt "$deadline" ] || break
    sleep 0.2
  done
  [ -n "$healed" ] || die "warren did not heal within 30 s of VPS restart $h"
  log "warren healed after VPS restart $h/$heals: $healed s"
  printf 'warren\t%s\n' "$healed" >>"$work/heal-warren.tsv"
done
load_after=$(cut -d' ' -f1 /proc/loadavg)

# ------------------------------------------------------------------ report
python3 - "$work" "$out" "$runs" "$big_mib" "$heals" "$load_before" "$load_after" <<'EOF'
import datetime, os, platform, statistics, sys

work, out, runs, big_mib, heals, load_before, load_after = sys.argv[1:]
res = {}
for line in open(os.path.join(work, "results.tsv")):
    system, size, mbs = line.split()
    res.setdefault((system, size), []).append(float(mbs))
steps = {r: [l.rstrip("\n").split("\t") for l in open(os.path.join(work, f"steps-{r}.tsv"))] for r in ("ssh", "warren")}
heal = {r: [l.split()[1] for l in open(os.path.join(work, f"heal-{r}.tsv"))] for r in ("ssh", "warren")}
notes = open(os.path.join(work, "notes.txt")).read().strip()

def cell(xs, fmt="{:.0f}"):
    s = fmt.format(statistics.median(xs))
    if len(xs) > 1:
        s += f" ({fmt.format(min(xs))}–{fmt.format(max(xs))})"
    return s

def machines(r):
    return len({m for m, _ in steps[r] if m != "any"})

def heal_cell(r):
    xs = heal[r]
    if "none" in xs:
        return "did not heal (30 s)"
    xs = [float(x) for x in xs]
    return cell(xs, "{:.1f}") + " s" + (f", {len(xs)} restarts" if len(xs) > 1 else "")

rows = [
    ("direct (curl inside campus: the server's ceiling)", "–", cell(res["direct", "small"]),
     cell(res["direct", "big"]), "–", "–"),
    ("OpenSSH: `ssh -R` + `ssh -D -J`", f"{len(steps['ssh'])} on {machines('ssh')} machines",
     cell(res["ssh", "small"]), cell(res["ssh", "big"]), cell(res["ssh", "cpu"], "{:.1f}"), heal_cell("ssh")),
    ("warren", f"{len(steps['warren'])} on {machines('warren')} machines", cell(res["warren", "small"]),
     cell(res["warren", "big"]), cell(res["warren", "cpu"], "{:.1f}"), heal_cell("warren")),
]
ratio = lambda k: statistics.median(res["warren", k]) / statistics.median(res["ssh", k])
heal_ratio = "heals vs does not" if "none" in heal["ssh"] else "–"
rows.append(("**warren / OpenSSH**", f"**{len(steps['warren']) / len(steps['ssh']):.2f}×**",
             f"**{ratio('small'):.2f}×**", f"**{ratio('big'):.2f}×**", f"**{ratio('cpu'):.2f}×**", heal_ratio))

cpu = "unknown"
for line in open("/proc/cpuinfo"):
    if line.startswith("model name"):
        cpu = line.split(":", 1)[1].strip()
        break
date = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
head = ["system", "set-up steps", "4 MiB MB/s", f"{big_mib} MiB MB/s", "CPU s/GiB (all its processes)",
        "heal after VPS restart"]
md = [f"Generated by `bench/campus.sh` on {date}: {cpu}, {os.cpu_count()} cores, "
      f"{platform.system()} {platform.release()}. Load average (1 min) {load_before} before the fetches, "
      f"{load_after} after the restarts.",
      f"Each speed is the median (min–max) of {runs} fetches of a file of random bytes by curl at home "
      f"(`--socks5-hostname`, output on tmpfs, every fetch compared byte for byte with `cmp`); MB/s = 10^6 bytes "
      f"per second over curl's total time, connection set-up included. Systems alternate in rotated order. "
      f"CPU: user+system time of every process of the recipe on the three machines (ssh and sshd; the three "
      f"warren processes) during each {big_mib} MiB fetch, per GiB; 2 cores give at most 2 s per second. "
      f"Heal: time from killing the VPS's process(es) until a 4 MiB fetch at home succeeds again, polling; "
      f"nothing else is touched.", "",
      "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
md += ["| " + " | ".join(r) + " |" for r in rows]
md += ["", "Set-up steps as the script performs them:", ""]
for r, name in (("ssh", "OpenSSH"), ("warren", "warren")):
    md.append(f"- {name}: " + "; ".join(f"{i}. {m}: {d}" for i, (m, d) in enumerate(steps[r], 1)) + ".")
for r, name in (("ssh", "OpenSSH"), ("warren", "warren")):
    parts = sorted((k[1][4:], statistics.median(v)) for k, v in res.items() if k[0] == r and k[1].startswith("cpu:"))
    md.append(f"- CPU s/GiB by machine/program, {name}: " + ", ".join(f"{k} {v:.1f}" for k, v in parts) + ".")
md += [notes, ""]
text = "\n".join(md)
print(text)
if out != "-":
    begin, end = "<!-- campus:begin -->", "<!-- campus:end -->"
    old = open(out).read() if os.path.exists(out) else "# Benchmarks\n"
    if begin not in old or end not in old:
        old = old.rstrip() + "\n\n## The campus scenario in network namespaces (`bench/campus.sh`)\n\n" + begin + "\n" + end + "\n"
    before, rest = old.split(begin, 1)
    with open(out, "w") as f:
        f.write(before + begin + "\n" + text + "\n" + end + rest.split(end, 1)[1])
    print(f"[campus] wrote {out}", file=sys.stderr)
EOF
