#!/usr/bin/env bash
# Instruction counts of one warren build for a fixed workload, under valgrind's callgrind:
# repeatable whatever else the machine is doing, unlike wall-clock throughput (see
# docs/BENCHMARKS.md, "Before and after the restructure").
#
#   bench/callgrind.sh [BIN_DIR]    # default: target/release (build it first: cargo build --release)
#
# Workload: 32 MiB through one SOCKS5 CONNECT, then 200 sequential connections (request and
# first byte), through warren-local and warren-remote on loopback. Prints the total instructions
# each process executed. Run it for two builds to compare them.
set -euo pipefail
cd "$(dirname "$0")/.."
bin=${1:-target/release}
loadgen=target/release/loadgen
command -v valgrind >/dev/null || { echo "callgrind.sh: needs valgrind" >&2; exit 1; }
[ -x "$loadgen" ] && [ -x "$bin/warren-local" ] && [ -x "$bin/warren-remote" ] ||
  { echo "callgrind.sh: build first (cargo build --release); missing binaries" >&2; exit 1; }
work=$(mktemp -d)
pids=()
trap 'kill "${pids[@]}" 2>/dev/null || true; rm -rf "$work"' EXIT

"$loadgen" sink >"$work/sink.addr" 2>/dev/null &
pids+=($!)
for _ in $(seq 1 50); do [ -s "$work/sink.addr" ] && break; sleep 0.1; done
sink=$(head -1 "$work/sink.addr")
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
socks=$(free_port)
tunnel=$(free_port)
cat >"$work/warren.yaml" <<YAML
key: "ZXhhbXBsZSBrZXkgLSBuZXZlciBkZXBsb3kgdGhpcyE="
local: { listen: "127.0.0.1:$socks", remote: "127.0.0.1:$tunnel" }
remote: { listen: "127.0.0.1:$tunnel", acl: [{ allow: "127.0.0.1" }] }
YAML
for side in remote local; do
  valgrind --tool=callgrind --callgrind-out-file="$work/$side.out" \
    "$bin/warren-$side" -c "$work/warren.yaml" --log-level warn 2>"$work/$side.log" &
  pids+=($!)
done
up() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
for _ in $(seq 1 200); do up "$socks" && up "$tunnel" && break; sleep 0.2; done
"$loadgen" throughput --socks "127.0.0.1:$socks" --target "$sink" --bytes 33554432 --streams 1 >/dev/null
"$loadgen" latency --socks "127.0.0.1:$socks" --target "$sink" --count 200 >/dev/null
kill -INT "${pids[1]}" "${pids[2]}"
wait "${pids[1]}" "${pids[2]}" 2>/dev/null || true
for side in local remote; do
  echo "warren-$side instructions: $(awk '/^summary:/ { print $2; exit }' "$work/$side.out")"
done
