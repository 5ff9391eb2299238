#!/usr/bin/env bash
# Round trips per connection (issue 12): time to first byte and a 30-connection "page" on an
# emulated 40 ms RTT, 200 Mbit/s link, warren beside shadowsocks and a direct connection.
#
#   bench/ttfb.sh                        # as root: build, 3 rounds, print the table
#   bench/ttfb.sh --no-build --rounds 5  # existing target/release binaries
#   bench/ttfb.sh --smoke                # CI: 1 round of 3 fetches and a 3-connection page, 10 ms RTT
#
# Options: --rtt-ms N (default 40), --mbit N (default 200), --loss-percent P (random loss each
# way, default 0; the issue's lossy profile is 0.5), --rounds N (default 3), --fetches N
# (sequential fetches per system and round, default 50), --page N (connections of the page,
# default 30), --no-build, --smoke.
#
# The bed: namespaces home -- vps joined by bench's `wanlink` (TUN devices, one-way delay RTT/2
# each way, paced to the rate): this kernel has no netem. The target is an HTTP server on
# 10.77.4.1 (the VPS's own loopback, 1 KiB file). Systems, each measured from home with curl:
#   direct       curl -> 10.77.4.1 (home routes to it through the link): TCP handshake + request
#   warren       warren-local (local.warm_connections: 2, the default) -> warren-remote
#   warren-cold  warren-local with warm_connections: 0 (a TCP handshake per request, as before)
#   ss-rust      sslocal -> ssserver, chacha20-ietf-poly1305 (when sslocal/ssserver are on PATH)
#   ss-libev     ss-local -> ss-server, chacha20-ietf-poly1305 (when on PATH)
# Each round runs the systems in a rotated order. Every wait is bounded; namespaces, processes
# and the temporary directory are removed on exit, failures included.
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$PWD

rtt=40 mbit=200 loss=0 rounds=3 fetches=50 page=30 build=1
while [ $# -gt 0 ]; do
  case $1 in
    --rtt-ms) rtt=${2:?}; shift 2 ;;
    --mbit) mbit=${2:?}; shift 2 ;;
    --loss-percent) loss=${2:?}; shift 2 ;;
    --rounds) rounds=${2:?}; shift 2 ;;
    --fetches) fetches=${2:?}; shift 2 ;;
    --page) page=${2:?}; shift 2 ;;
    --no-build) build=0; shift ;;
    --smoke) rtt=10 rounds=1 fetches=3 page=3; shift ;;
    -h | --help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "ttfb.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
done
for n in "$rtt" "$mbit" "$rounds" "$fetches" "$page"; do
  [[ $n =~ ^[1-9][0-9]{0,4}$ ]] || { echo "ttfb.sh: $n is not a whole number from 1 to 99999" >&2; exit 2; }
done
[[ $loss =~ ^[0-9]{1,2}(\.[0-9]+)?$ ]] || { echo "ttfb.sh: --loss-percent $loss is not a percentage below 100" >&2; exit 2; }

log() { printf '[ttfb %s] %s\n' "$(date -u +%H:%M:%S)" "$*" >&2; }
die() { log "error: $*"; exit 1; }
[ "$(id -u)" = 0 ] || die "needs root (ip netns, TUN devices)"
[ -e /dev/net/tun ] || die "no /dev/net/tun"
for c in curl ip ss python3; do command -v "$c" >/dev/null || die "needs $c"; done

if [ "$build" = 1 ]; then
  cargo build --release -p warren-local -p warren-remote -p warren-bench
fi
bin=${CARGO_TARGET_DIR:-$repo/target}/release
for b in warren-remote warren-local wanlink; do
  [ -x "$bin/$b" ] || die "$bin/$b not found (run without --no-build)"
done

netns_name=ttfb netns_prefix=wtf
# shellcheck source=bench/netns.sh
source bench/netns.sh

log "work directory $work, namespaces $p-{home,vps}"
for n in home vps; do
  ip netns add "$p-$n"
  nss+=("$p-$n")
  in_ns "$n" ip link set lo up
done
link hv home 10.77.1.1 vps 10.77.1.2 "$rtt" "$mbit" "$loss"
in_ns vps ip addr add 10.77.4.1/32 dev lo # the target, next to the VPS
in_ns home ip route add 10.77.4.1/32 via 10.77.1.2

mkdir "$work/site"
head -c 1024 /dev/urandom >"$work/site/1k"
# python's http.server listens with a backlog of 5, which drops SYNs of a 30-connection page:
# the same server with a backlog of 1024.
cat >"$work/site.py" <<'PY'
import functools, http.server, sys

class Server(http.server.ThreadingHTTPServer):
    request_queue_size = 1024

class Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass

Server((sys.argv[1], int(sys.argv[2])), functools.partial(Quiet, directory=sys.argv[3])).serve_forever()
PY
start site vps python3 "$work/site.py" 10.77.4.1 8080 "$work/site"
wait_listen vps 8080 site

key=$("$bin/warren-remote" genkey)
cat >"$work/remote.yaml" <<EOF
key: "$key"
remote:
  listen: "10.77.1.2:8388"
  acl:
    - allow: "10.77.4.1/32"
EOF
start warren-remote vps "$bin/warren-remote" -c "$work/remote.yaml"
wait_listen vps 8388 warren-remote
declare -A socks=([warren]=1080 [warren-cold]=1081 [ss-rust]=1082 [ss-libev]=1083)
for s in warren warren-cold; do
  warm=2
  [ "$s" = warren-cold ] && warm=0
  printf 'key: "%s"\nlocal:\n  listen: "127.0.0.1:%s"\n  remote: "10.77.1.2:8388"\n  warm_connections: %s\n' \
    "$key" "${socks[$s]}" "$warm" >"$work/$s.yaml"
  start "$s" home "$bin/warren-local" -c "$work/$s.yaml"
  wait_listen home "${socks[$s]}" "$s"
done
systems=(direct warren warren-cold)
sspass=$(head -c 16 /dev/urandom | base64)
if command -v sslocal >/dev/null && command -v ssserver >/dev/null; then
  start ss-rust-server vps ssserver -s 10.77.1.2:8389 -m chacha20-ietf-poly1305 -k "$sspass"
  start ss-rust home sslocal -b "127.0.0.1:${socks[ss-rust]}" -s 10.77.1.2:8389 -m chacha20-ietf-poly1305 -k "$sspass"
  wait_listen vps 8389 ss-rust-server
  wait_listen home "${socks[ss-rust]}" ss-rust
  systems+=(ss-rust)
else
  log "sslocal/ssserver not on PATH: shadowsocks-rust skipped (cargo install shadowsocks-rust --locked)"
fi
if command -v ss-local >/dev/null && command -v ss-server >/dev/null; then
  start ss-libev-server vps ss-server -s 10.77.1.2 -p 8390 -m chacha20-ietf-poly1305 -k "$sspass"
  start ss-libev home ss-local -s 10.77.1.2 -p 8390 -b 127.0.0.1 -l "${socks[ss-libev]}" -m chacha20-ietf-poly1305 -k "$sspass"
  wait_listen vps 8390 ss-libev-server
  wait_listen home "${socks[ss-libev]}" ss-libev
  systems+=(ss-libev)
else
  log "ss-local/ss-server not on PATH: shadowsocks-libev skipped (apt-get install shadowsocks-libev)"
fi

url=http://10.77.4.1:8080/1k
proxy_args() { [ "$1" = direct ] || echo "--socks5-hostname 127.0.0.1:${socks[$1]}"; }
ttfb() { # ttfb SYSTEM: one fetch; prints the first byte's time in ms, checks the bytes
  local t
  # shellcheck disable=SC2046
  t=$(in_ns home curl -sS --max-time 20 $(proxy_args "$1") -o "$work/got" -w '%{time_starttransfer}' "$url" \
    2>>"$work/curl.log") || return 1
  cmp -s "$work/got" "$work/site/1k" || die "$1: the fetched file differs"
  awk -v t="$t" 'BEGIN { printf "%.1f", t * 1000 }'
}
page() { # page SYSTEM: $page fetches at once; prints the wall time in ms
  local args=() i t0 t1
  for i in $(seq 1 "$page"); do args+=(-o "$work/page.$i" "$url?$i"); done
  t0=$(date +%s%N)
  # shellcheck disable=SC2046
  in_ns home curl -sS --max-time 30 --parallel --parallel-immediate --parallel-max "$page" $(proxy_args "$1") \
    "${args[@]}" 2>>"$work/curl.log" || return 1
  t1=$(date +%s%N)
  for i in $(seq 1 "$page"); do cmp -s "$work/page.$i" "$work/site/1k" || die "$1: page fetch $i differs"; done
  awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.1f", (b - a) / 1e6 }'
}

for s in "${systems[@]}"; do ttfb "$s" >/dev/null || die "$s: first fetch failed (curl log $work/curl.log)"; done
ping_ms=$(in_ns home ping -q -c 5 -i 0.2 -W 2 10.77.1.2 | awk -F/ '/^rtt/ { print $5 }')
log "bed ready: ping RTT ${ping_ms} ms; systems: ${systems[*]}"

results=$work/results.tsv
: >"$results"
n=${#systems[@]}
for r in $(seq 1 "$rounds"); do
  for k in $(seq 0 $((n - 1))); do
    s=${systems[$(((k + r) % n))]}
    for i in $(seq 1 "$fetches"); do
      t=$(ttfb "$s") || die "$s: fetch failed (curl log $work/curl.log)"
      printf '%s\t%s\tttfb\t%s\n' "$r" "$s" "$t" >>"$results"
    done
    t=$(page "$s") || die "$s: page failed (curl log $work/curl.log)"
    printf '%s\t%s\tpage\t%s\n' "$r" "$s" "$t" >>"$results"
    log "round $r/$rounds $s done"
  done
done

python3 - "$results" "$rtt" "$mbit" "$fetches" "$page" "$ping_ms" "$loss" <<'PY'
import statistics, sys
path, rtt, mbit, fetches, page, ping, loss = sys.argv[1:]
ttfb, pages, order = {}, {}, []
for line in open(path):
    r, s, kind, v = line.split()
    if s not in order:
        order.append(s)
    (ttfb if kind == "ttfb" else pages).setdefault(s, []).append(float(v))
def pct(xs, q):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))]
base = "ss-rust" if "ss-rust" in ttfb else "direct"
print(f"{rtt} ms RTT (ping {ping} ms), {mbit} Mbit/s, {loss} % loss each way; {fetches} sequential 1 KiB fetches and one {page}-connection "
      f"page per system per round; ratios to {base}")
print()
print("| system | first byte p50 ms | p90 ms | ratio p50 | page ms (median) | ratio |")
print("|---|---|---|---|---|---|")
b50, bpage = statistics.median(ttfb[base]), statistics.median(pages[base])
for s in order:
    p50, p90, pg = statistics.median(ttfb[s]), pct(ttfb[s], 0.9), statistics.median(pages[s])
    print(f"| {s} | {p50:.1f} | {p90:.1f} | {p50 / b50:.2f}× | {pg:.0f} | {pg / bpage:.2f}× |")
PY
