#!/usr/bin/env bash
# What the agent link costs, on loopback: a fetch through laptop → VPS → agent → intranet web
# server, per build, with the CPU seconds each warren process spent per GiB (from
# /proc/PID/stat), interleaved round by round so two builds see the same machine.
#
#   bench/agent_cost.sh                                   # target/release, 256 MiB, 3 rounds
#   bench/agent_cost.sh --base-bin /path/to/old/release   # the same beside an older build
#   bench/agent_cost.sh --mib 64 --rounds 1               # a smoke run
#
# --base-bin DIR: warren-remote and warren-local of a build from before issue 10 (its configs
# have no agent keys, its agent link is not sealed). Everything listens on 127.0.0.1; the web
# server is python3's http.server; every wait is bounded and everything is stopped on exit.
set -euo pipefail
cd "$(dirname "$0")/.."

new=target/release
base=""
mib=256
rounds=3
while [ $# -gt 0 ]; do
  case $1 in
    --base-bin) base=${2:?--base-bin needs a directory}; shift 2 ;;
    --new-bin) new=${2:?--new-bin needs a directory}; shift 2 ;;
    --mib) mib=${2:?--mib needs a number}; shift 2 ;;
    --rounds) rounds=${2:?--rounds needs a number}; shift 2 ;;
    -h | --help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "agent_cost.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
done
for n in "$mib" "$rounds"; do
  [[ $n =~ ^[1-9][0-9]{0,3}$ ]] || { echo "agent_cost.sh: $n is not a count from 1 to 9999" >&2; exit 2; }
done
for b in "$new" ${base:+"$base"}; do
  [ -x "$b/warren-remote" ] && [ -x "$b/warren-local" ] || { echo "agent_cost.sh: no warren binaries in $b" >&2; exit 2; }
done

work=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
cpu() { awk '{print $14 + $15}' "/proc/$1/stat"; } # utime + stime, in clock ticks
hz=$(getconf CLK_TCK)

mkdir "$work/site"
head -c $((mib << 20)) /dev/urandom >"$work/site/big"
site_port=$(free_port)
python3 -m http.server "$site_port" --bind 127.0.0.1 --directory "$work/site" >/dev/null 2>&1 &
pids+=($!)

# start NAME BIN_DIR: VPS, agent and laptop for one build; sets ${NAME}_{vps,agent,local}_pid
# and ${NAME}_socks.
start() {
  local name=$1 dir=$2 key agent_key vps_port agent_port socks agents="" agent_line=""
  key=$("$dir/warren-remote" genkey)
  vps_port=$(free_port); agent_port=$(free_port); socks=$(free_port)
  if [ "$name" = new ]; then
    agent_key=$("$dir/warren-remote" genkey)
    agents="  agents: { campus: { key: \"$agent_key\" } }"
    agent_line=", key: \"$agent_key\""
  fi
  cat >"$work/$name-vps.yaml" <<EOF
key: "$key"
remote:
  listen: "127.0.0.1:$vps_port"
$agents
  routes:
    - { cidr: "127.0.0.1/32", port: $site_port, via: campus }
EOF
  cat >"$work/$name-agent.yaml" <<EOF
key: "$key"
remote:
  listen: "127.0.0.1:$agent_port"
  acl: [ { allow: "127.0.0.1/32" } ]
  agent: { server: "127.0.0.1:$vps_port", name: campus$agent_line }
EOF
  cat >"$work/$name-local.yaml" <<EOF
key: "$key"
local: { listen: "127.0.0.1:$socks", remote: "127.0.0.1:$vps_port" }
EOF
  "$dir/warren-remote" -c "$work/$name-vps.yaml" >"$work/$name-vps.log" 2>&1 &
  pids+=($!); printf -v "${name}_vps_pid" %s $!
  "$dir/warren-remote" -c "$work/$name-agent.yaml" >"$work/$name-agent.log" 2>&1 &
  pids+=($!); printf -v "${name}_agent_pid" %s $!
  "$dir/warren-local" -c "$work/$name-local.yaml" >"$work/$name-local.log" 2>&1 &
  pids+=($!); printf -v "${name}_local_pid" %s $!
  printf -v "${name}_socks" %s "$socks"
  for _ in $(seq 100); do
    curl -s -o /dev/null --max-time 2 --socks5-hostname "127.0.0.1:$socks" "http://127.0.0.1:$site_port/" && return 0
    sleep 0.1
  done
  echo "agent_cost.sh: the $name build never served a page (logs: $work/$name-*.log)" >&2
  cat "$work/$name-"*.log >&2
  exit 1
}

builds=(new)
start new "$new"
if [ -n "$base" ]; then builds+=(base); start base "$base"; fi

echo "| round | build | MB/s | CPU s/GiB: laptop | VPS | agent |"
echo "|---|---|---|---|---|---|"
for round in $(seq "$rounds"); do
  for b in "${builds[@]}"; do
    vps=${b}_vps_pid agent=${b}_agent_pid local=${b}_local_pid socks=${b}_socks
    c0=("$(cpu "${!local}")" "$(cpu "${!vps}")" "$(cpu "${!agent}")")
    t0=$EPOCHREALTIME
    curl -sS -o /dev/null --max-time 600 --socks5-hostname "127.0.0.1:${!socks}" "http://127.0.0.1:$site_port/big"
    t1=$EPOCHREALTIME
    c1=("$(cpu "${!local}")" "$(cpu "${!vps}")" "$(cpu "${!agent}")")
    python3 - "$mib" "$t0" "$t1" "$hz" "$round" "$b" "${c0[@]}" "${c1[@]}" <<'EOF'
import sys
mib, t0, t1, hz = int(sys.argv[1]), float(sys.argv[2]), float(sys.argv[3]), int(sys.argv[4])
round_, build = sys.argv[5], sys.argv[6]
c0, c1 = list(map(int, sys.argv[7:10])), list(map(int, sys.argv[10:13]))
gib = mib / 1024
per = [(b - a) / hz / gib for a, b in zip(c0, c1)]
print(f"| {round_} | {build} | {mib * 2**20 / 1e6 / (t1 - t0):.0f} | {per[0]:.2f} | {per[1]:.2f} | {per[2]:.2f} |")
EOF
  done
done
