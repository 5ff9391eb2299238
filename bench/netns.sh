# Shared by bench/wan.sh and bench/ttfb.sh (sourced, not run): a temporary work directory,
# namespaces named $p-NAME, background processes with logs in $work, a cleanup that removes all of
# it on exit (failures included, printing the logs' tails), and `link`, which joins two namespaces
# with bench's `wanlink` emulator. The caller sets netns_name (the work directory's prefix),
# netns_prefix (the namespaces'), bin (where wanlink is) and defines log and die first.
# shellcheck shell=bash

tmpbase=/tmp
[ -d /dev/shm ] && [ -w /dev/shm ] && tmpbase=/dev/shm
work=$(mktemp -d "$tmpbase/$netns_name.XXXXXX")
p=$netns_prefix$$
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

in_ns() { local ns=$1; shift; ip netns exec "$p-$ns" "$@"; }
start() { # start NAME NS CMD...: CMD in the background inside NS ("-" = this namespace), log in $work/NAME.log
  local name=$1 ns=$2
  shift 2
  if [ "$ns" = - ]; then
    "$@" >>"$work/$name.log" 2>&1 </dev/null &
  else
    ip netns exec "$p-$ns" "$@" >>"$work/$name.log" 2>&1 </dev/null &
  fi
  pid[$name]=$!
}
alive() { kill -0 "${pid[$1]}" 2>/dev/null; }
wait_listen() { # wait_listen NS PORT NAME (10 s)
  local i
  for i in $(seq 1 100); do
    [ -n "$(in_ns "$1" ss -Hltn "sport = :$2")" ] && return 0
    alive "$3" || die "$3 exited at start-up (log $work/$3.log)"
    [ "$i" = 100 ] || sleep 0.1
  done
  die "$3: nothing listens on port $2 in $1 after 10 s"
}
link() { # link NAME NS_A ADDR_A NS_B ADDR_B RTT_MS MBIT [LOSS_PERCENT]: a wanlink between two namespaces, /24 addresses
  local name=$1 i
  start "$name" - "$bin/wanlink" --ns-a "$p-$2" --dev-a "${p}${name}a" --ns-b "$p-$4" --dev-b "${p}${name}b" \
    --delay-ms "$(awk -v r="$6" 'BEGIN { print r / 2 }')" --rate-mbit "$7" --loss-percent "${8:-0}"
  for i in $(seq 1 50); do
    in_ns "$4" ip link show "${p}${name}b" >/dev/null 2>&1 && break
    alive "$name" || die "wanlink $name exited (log $work/$name.log)"
    [ "$i" = 50 ] && die "wanlink $name: no device after 5 s"
    sleep 0.1
  done
  in_ns "$2" ip addr add "$3/24" dev "${p}${name}a"
  in_ns "$2" ip link set "${p}${name}a" up
  in_ns "$4" ip addr add "$5/24" dev "${p}${name}b"
  in_ns "$4" ip link set "${p}${name}b" up
}

