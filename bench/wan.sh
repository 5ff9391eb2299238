#!/usr/bin/env bash
# The campus path on an emulated WAN (issue 10): warren's direct path next to the path through
# the campus agent, over links with real delay and a rate cap.
#
#   bench/wan.sh                                  # as root: build, measure at campus RTT 10 ms, print the table
#   bench/wan.sh --campus-rtt-ms 30 --no-build    # the slower campus link, existing binaries
#
# Options: --campus-rtt-ms N (RTT of the VPS<->campus link, default 10), --home-rtt-ms N (home<->VPS,
# default 40), --home-mbit N (default 200), --campus-mbit N (default 1000), --rounds N (default 3),
# --mib N (the fetched file, default 64), --no-build (use the existing target/release binaries).
#
# The bed: namespaces home -- vps -- campus, as bench/campus.sh, but each link is a pair of TUN
# devices joined by bench's `wanlink` process (one-way delay = RTT/2 each way, paced to the rate,
# drop-tail buffer of 1000 packets): this kernel has no netem. 10.77.1.0/24 joins home and the VPS,
# 10.77.2.0/24 the VPS and campus; the intranet server is on 10.77.3.1 (only campus has it), and
# the "direct" target on 10.77.4.1, an address on the VPS's own loopback (the VPS ACL allows
# exactly that address; a real target would be another machine near the VPS). Both servers are
# the same sendfile(2) HTTP server. curl at home fetches through warren-local's SOCKS5 port:
#   direct: home -> VPS warren-remote -> 10.77.4.1 (the laptop link only)
#   agent:  home -> VPS warren-remote -> sealed agent link -> campus agent -> 10.77.3.1
# Rounds alternate the order. Every wait is bounded; namespaces, processes and the temporary
# directory are removed on exit, failures included.
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$PWD

campus_rtt=10 home_rtt=40 home_mbit=200 campus_mbit=1000 rounds=3 mib=64 build=1
while [ $# -gt 0 ]; do
  case $1 in
    --campus-rtt-ms) campus_rtt=${2:?}; shift 2 ;;
    --home-rtt-ms) home_rtt=${2:?}; shift 2 ;;
    --home-mbit) home_mbit=${2:?}; shift 2 ;;
    --campus-mbit) campus_mbit=${2:?}; shift 2 ;;
    --rounds) rounds=${2:?}; shift 2 ;;
    --mib) mib=${2:?}; shift 2 ;;
    --no-build) build=0; shift ;;
    -h | --help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "wan.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
done
for n in "$campus_rtt" "$home_rtt" "$home_mbit" "$campus_mbit" "$rounds" "$mib"; do
  [[ $n =~ ^[1-9][0-9]{0,4}$ ]] || { echo "wan.sh: $n is not a whole number from 1 to 99999" >&2; exit 2; }
done

log() { printf '[wan %s] %s\n' "$(date -u +%H:%M:%S)" "$*" >&2; }
die() { log "error: $*"; exit 1; }
[ "$(id -u)" = 0 ] || die "needs root (ip netns, TUN devices)"
[ -e /dev/net/tun ] || die "no /dev/net/tun"
for c in curl ip ss python3; do command -v "$c" >/dev/null || die "needs $c"; done

if [ "$build" = 1 ]; then
  cargo build --release --workspace
fi
bin=${CARGO_TARGET_DIR:-$repo/target}/release
for b in warren-remote warren-local wanlink; do
  [ -x "$bin/$b" ] || die "$bin/$b not found (run without --no-build)"
done

netns_name=wanbench netns_prefix=wwn
# shellcheck source=bench/netns.sh
source bench/netns.sh

log "work directory $work, namespaces $p-{home,vps,campus}"
for n in home vps campus; do
  ip netns add "$p-$n"
  nss+=("$p-$n")
  in_ns "$n" ip link set lo up
done
link hv home 10.77.1.1 vps 10.77.1.2 "$home_rtt" "$home_mbit"
link vc campus 10.77.2.1 vps 10.77.2.2 "$campus_rtt" "$campus_mbit"
in_ns campus ip addr add 10.77.3.1/32 dev lo # the intranet: only campus has it
in_ns vps ip addr add 10.77.4.1/32 dev lo    # the direct target, next to the VPS

site=$work/site
mkdir "$site"
head -c $((mib << 20)) /dev/urandom >"$site/big"
cat >"$work/site.py" <<'PY'
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
            self.send_header("Content-Length", str(os.fstat(f.fileno()).st_size))
            self.end_headers()
            self.connection.sendfile(f)

    def log_message(self, *args):
        pass

http.server.ThreadingHTTPServer((sys.argv[1], int(sys.argv[2])), Handler).serve_forever()
PY
start intranet campus python3 "$work/site.py" 10.77.3.1 8080 "$site"
start near vps python3 "$work/site.py" 10.77.4.1 8080 "$site"
wait_listen campus 8080 intranet
wait_listen vps 8080 near

# The links themselves, before trusting them: ping RTTs, and one plain TCP fetch home <- 10.77.4.1
# with no warren in between (the laptop link's ceiling).
rtt() { in_ns "$1" ping -q -c 5 -i 0.2 -W 2 "$2" | awk -F/ '/^rtt/ { print $5 }'; }
command -v ping >/dev/null && checks="ping RTT home-vps $(rtt home 10.77.1.2) ms, vps-campus $(rtt vps 10.77.2.1) ms; "
in_ns home ip route add 10.77.4.1/32 via 10.77.1.2
plain=$(in_ns home curl -sS --max-time 120 -o /dev/null -w '%{size_download} %{time_total}' http://10.77.4.1:8080/big) ||
  die "plain TCP fetch over the laptop link failed"
checks="${checks:-}plain TCP (curl, no warren) home <- vps: $(awk -v r="$plain" 'BEGIN { split(r, a, " "); printf "%.1f", a[1] / a[2] / 1e6 }') MB/s"
log "$checks"
in_ns home ip route del 10.77.4.1/32 via 10.77.1.2 # from here on, only warren reaches it

w=$work/cfg
mkdir "$w" "$work/bin"
ln -s "$bin/warren-remote" "$work/bin/vps-remote"
ln -s "$bin/warren-remote" "$work/bin/campus-agent"
ln -s "$bin/warren-local" "$work/bin/home-local"
key=$("$bin/warren-remote" genkey)
agent_key=$("$bin/warren-remote" genkey)
conf() { # conf NAME VPS_ADDRESS: docs/campus/NAME with the keys and the VPS address filled in
  sed -e "s|REPLACE-WITH-warren-remote-genkey-OUTPUT|$key|" -e "s|REPLACE-WITH-A-SECOND-genkey-OUTPUT-FOR-THE-AGENT|$agent_key|" \
    -e "s|vps.example.net|$2|" "docs/campus/$1" >"$w/$1"
  grep -q "$key" "$w/$1" || die "docs/campus/$1 has no key placeholder"
}
conf vps.yaml 10.77.1.2
printf '  acl:\n    - allow: "10.77.4.1/32"\n' >>"$w/vps.yaml" # the stand-in target on the VPS's own lo
conf campus.yaml 10.77.2.2
printf '  acl:\n    - allow: "10.77.3.1/32"\n' >>"$w/campus.yaml" # likewise inside campus
conf laptop.yaml 10.77.1.2
start warren-vps vps "$work/bin/vps-remote" -c "$w/vps.yaml"
wait_listen vps 8388 warren-vps
start warren-campus campus "$work/bin/campus-agent" -c "$w/campus.yaml"
start warren-home home "$work/bin/home-local" -c "$w/laptop.yaml"
wait_listen home 1080 warren-home

declare -A url=([direct]=http://10.77.4.1:8080/big [agent]=http://10.77.3.1:8080/big)
fetch() { # fetch SYSTEM: one fetch at home through SOCKS5; prints "MB/s TTFB_ms", checks the bytes
  local r bytes secs ttfb
  rm -f "$work/got"
  r=$(in_ns home curl -sS --max-time 300 --socks5-hostname 127.0.0.1:1080 -o "$work/got" \
    -w '%{size_download} %{time_total} %{time_starttransfer}' "${url[$1]}" 2>>"$work/curl.log") || return 1
  read -r bytes secs ttfb <<<"$r"
  cmp -s "$work/got" "$site/big" || die "$1: the fetched file differs from the original ($bytes bytes)"
  awk -v b="$bytes" -v s="$secs" -v t="$ttfb" 'BEGIN { printf "%.1f %.0f", b / s / 1e6, t * 1000 }'
}
ok=0
for _ in $(seq 1 60); do # the agent registers within a few RTTs; 30 s bound
  if fetch agent >/dev/null 2>&1; then ok=1; break; fi
  sleep 0.5
done
[ "$ok" = 1 ] || die "no fetch through the agent within 30 s"
log "bed ready: home reaches the intranet through the agent"

results=$work/results.tsv
: >"$results"
systems=(direct agent)
for r in $(seq 1 "$rounds"); do
  order=("${systems[@]}")
  [ $((r % 2)) = 0 ] && order=(agent direct)
  for s in "${order[@]}"; do
    for n in warren-vps warren-campus warren-home hv vc intranet near; do
      alive "$n" || die "$n exited (log $work/$n.log)"
    done
    m=$(fetch "$s") || die "$s: fetch failed (curl log $work/curl.log)"
    printf '%s\t%s\t%s\n' "$r" "$s" "$m" >>"$results"
    log "round $r/$rounds $s: $m (MB/s, first byte ms)"
  done
done

echo "$checks"
python3 - "$results" "$campus_rtt" "$home_rtt" "$home_mbit" "$campus_mbit" "$mib" <<'PY'
import statistics, sys
path, crtt, hrtt, hmbit, cmbit, mib = sys.argv[1:]
rows = {}
for line in open(path):
    r, s, mbs, ttfb = line.split()
    rows.setdefault(s, {})[int(r)] = (float(mbs), float(ttfb))
rounds = sorted(rows["direct"])
print(f"home--({hrtt} ms RTT, {hmbit} Mbit/s)--vps--({crtt} ms RTT, {cmbit} Mbit/s)--campus; {mib} MiB fetch, "
      f"{len(rounds)} rounds")
print()
print("| path | MB/s per round | median MB/s | first byte, median ms |")
print("|---|---|---|---|")
for s in ("direct", "agent"):
    xs = [rows[s][r][0] for r in rounds]
    ts = [rows[s][r][1] for r in rounds]
    print(f"| {s} | {' / '.join(f'{x:.1f}' for x in xs)} | {statistics.median(xs):.1f} | {statistics.median(ts):.0f} |")
ratios = [rows["agent"][r][0] / rows["direct"][r][0] for r in rounds]
print(f"| **agent / direct** | {' / '.join(f'{x:.2f}' for x in ratios)} | **{statistics.median(ratios):.2f}×** | |")
PY
