#!/usr/bin/env bash
# Soak (issue 12): warren-local and warren-remote on loopback carry 200 concurrent streams, round
# after round of fresh connections, for a long time; every 10 s the resident memory and open
# file descriptors of both are sampled. A leak shows as growth after the first minutes.
#
#   bench/soak.sh                          # 1 hour, 200 streams, release binaries (builds them)
#   bench/soak.sh --minutes 2 --no-build   # a short run
#
# Options: --minutes N (default 60), --streams N (default 200), --kib N (pushed per stream and
# round, default 256), --no-build. Listens on 127.0.0.1:18398 (remote) and 18399 (local). Not part of CI (it runs for an hour); prints a table of
# RSS (MiB) and fds at minutes 1, 5, 15, 30 and the end, the growth from minute 5 to the end and
# the second half's range; samples are taken between rounds, when no stream is open.
# Every wait is bounded; processes and the temporary directory are removed on exit.
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$PWD

minutes=60 streams=200 kib=256 build=1
while [ $# -gt 0 ]; do
  case $1 in
    --minutes) minutes=${2:?}; shift 2 ;;
    --streams) streams=${2:?}; shift 2 ;;
    --kib) kib=${2:?}; shift 2 ;;
    --no-build) build=0; shift ;;
    -h | --help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "soak.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
done
for n in "$minutes" "$streams" "$kib"; do
  [[ $n =~ ^[1-9][0-9]{0,4}$ ]] || { echo "soak.sh: $n is not a whole number from 1 to 99999" >&2; exit 2; }
done
log() { printf '[soak %s] %s\n' "$(date -u +%H:%M:%S)" "$*" >&2; }
die() { log "error: $*"; exit 1; }

if [ "$build" = 1 ]; then
  cargo build --release -p warren-local -p warren-remote -p warren-bench
fi
bin=${CARGO_TARGET_DIR:-$repo/target}/release
for b in warren-remote warren-local loadgen; do
  [ -x "$bin/$b" ] || die "$bin/$b not found (run without --no-build)"
done
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

work=$(mktemp -d /tmp/soak.XXXXXX)
pids=()
cleanup() {
  local rc=$?
  set +e
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null; done
  wait 2>/dev/null
  [ "$rc" != 0 ] && for f in "$work"/*.log; do echo "== $f" >&2; tail -n 20 "$f" >&2; done
  rm -rf "$work"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

port() { # port NAME: the port a process logged it listens on (5 s)
  local i p
  for i in $(seq 1 50); do
    p=$(grep -oE '127\.0\.0\.1:[0-9]+' "$work/$1.log" 2>/dev/null | head -n 1 | cut -d: -f2)
    [ -n "$p" ] && { echo "$p"; return 0; }
    sleep 0.1
  done
  die "$1 printed no address (log $work/$1.log)"
}

"$bin/loadgen" sink --listen 127.0.0.1:0 >"$work/sink.log" 2>&1 &
pids+=($!)
sink=127.0.0.1:$(port sink)
key=$("$bin/warren-remote" genkey)
printf 'key: "%s"\nremote:\n  listen: "127.0.0.1:18398"\n  acl:\n    - allow: "127.0.0.1/32"\nlocal:\n  listen: "127.0.0.1:18399"\n  remote: "127.0.0.1:18398"\n' \
  "$key" >"$work/config.yaml"
"$bin/warren-remote" -c "$work/config.yaml" >"$work/remote.log" 2>&1 &
pids+=($!)
remote_pid=$!
"$bin/warren-local" -c "$work/config.yaml" >"$work/local.log" 2>&1 &
pids+=($!)
local_pid=$!
for i in $(seq 1 50); do
  ss -Hltn "sport = :18399" | grep -q . && ss -Hltn "sport = :18398" | grep -q . && break
  [ "$i" = 50 ] && die "warren did not listen on 18398/18399 within 5 s"
  sleep 0.1
done

sample() { # sample MINUTE: "minute local_rss_kib local_fds remote_rss_kib remote_fds"
  local l r
  l=$(awk '/^VmRSS/ { print $2 }' "/proc/$local_pid/status")
  r=$(awk '/^VmRSS/ { print $2 }' "/proc/$remote_pid/status")
  printf '%s\t%s\t%s\t%s\t%s\n' "$1" "$l" "$(ls "/proc/$local_pid/fd" | wc -l)" "$r" "$(ls "/proc/$remote_pid/fd" | wc -l)"
}

log "soak: $streams streams x $kib KiB per round for $minutes min through 127.0.0.1:18399 -> $sink"
: >"$work/samples.tsv"
start=$(date +%s)
end=$((start + minutes * 60))
rounds=0 failed=0 next=$start
while [ "$(date +%s)" -lt "$end" ]; do
  kill -0 "$local_pid" 2>/dev/null || die "warren-local exited"
  kill -0 "$remote_pid" 2>/dev/null || die "warren-remote exited"
  if ! timeout 120 "$bin/loadgen" throughput --socks 127.0.0.1:18399 --target "$sink" \
    --bytes $((kib * 1024)) --streams "$streams" >>"$work/loadgen.log" 2>&1; then
    failed=$((failed + 1))
  fi
  rounds=$((rounds + 1))
  now=$(date +%s)
  if [ "$now" -ge "$next" ]; then
    sample "$(awk -v a="$start" -v b="$now" 'BEGIN { printf "%.2f", (b - a) / 60 }')" >>"$work/samples.tsv"
    next=$((now + 10))
  fi
done
sample "$minutes.00" >>"$work/samples.tsv"

echo "soak: $minutes min, $streams concurrent streams, $rounds rounds, $failed failed rounds"
cp "$work/samples.tsv" /tmp/soak-samples.tsv
echo "every sample (minute, local RSS KiB, local fds, remote RSS KiB, remote fds): /tmp/soak-samples.tsv"
python3 - "$work/samples.tsv" <<'PY'
import sys
rows = [list(map(float, l.split())) for l in open(sys.argv[1]) if l.strip()]
def at(m):
    return min(rows, key=lambda r: abs(r[0] - m))
print("| minute | local RSS MiB | local fds | remote RSS MiB | remote fds |")
print("|---|---|---|---|---|")
for m in sorted({1, 5, 15, 30, rows[-1][0]}):
    if m > rows[-1][0]:
        continue
    r = at(m)
    print(f"| {r[0]:.0f} | {r[1] / 1024:.1f} | {r[2]:.0f} | {r[3] / 1024:.1f} | {r[4]:.0f} |")
a, b = at(5), rows[-1]
late = [r for r in rows if r[0] >= rows[-1][0] / 2]
print()
print(f"second half, min-max: local RSS {min(r[1] for r in late) / 1024:.1f}-{max(r[1] for r in late) / 1024:.1f} MiB, "
      f"remote RSS {min(r[3] for r in late) / 1024:.1f}-{max(r[3] for r in late) / 1024:.1f} MiB")
print(f"from minute {a[0]:.0f} to the end: local RSS {(b[1] - a[1]) / 1024:+.1f} MiB, fds {b[2] - a[2]:+.0f}; "
      f"remote RSS {(b[3] - a[3]) / 1024:+.1f} MiB, fds {b[4] - a[4]:+.0f}")
PY
