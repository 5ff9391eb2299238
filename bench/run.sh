#!/usr/bin/env bash
# The benchmark, in one command (see README.md, "Benchmarks"):
#
#   bench/run.sh            # install the peers if missing, build, measure everything, write docs/BENCHMARKS.md
#   bench/run.sh --smoke    # tiny sizes, warren and a direct connection only (what CI runs; < 1 min)
#   bench/run.sh --udp      # UDP ASSOCIATE under load instead (bench/udp.py; --udp --smoke for CI)
#
# Other arguments go to bench/bench.py (--rounds, --bytes, --systems, --idle, --out; see --help).
# Before vs after a change, in one run: build the old commit elsewhere and pass its binaries,
#   bench/run.sh --systems direct,warren --baseline-bin-dir /tmp/old/target/release --out -
# which measures it as system "warren@base" beside this checkout's "warren" (ratios to it).
# Peers: shadowsocks-libev, openssh-server/-client and curl from Debian (apt-get, as root or with
# sudo); shadowsocks-rust with `cargo install --locked` into $WARREN_BENCH_CACHE (default
# ~/.cache/warren-bench), outside the repository.
set -euo pipefail
cd "$(dirname "$0")/.."

cache=${WARREN_BENCH_CACHE:-$HOME/.cache/warren-bench}
ss_rust_version=1.25.0
smoke=0
for arg in "$@"; do [ "$arg" = --smoke ] && smoke=1; done

if [ "$smoke" = 0 ]; then
  missing=()
  command -v ss-server >/dev/null || missing+=(shadowsocks-libev)
  [ -x /usr/sbin/sshd ] || command -v sshd >/dev/null || missing+=(openssh-server)
  command -v ssh >/dev/null || missing+=(openssh-client)
  command -v ssh-keygen >/dev/null || missing+=(openssh-client)
  command -v curl >/dev/null || missing+=(curl)
  command -v python3 >/dev/null || missing+=(python3)
  if [ ${#missing[@]} -gt 0 ]; then
    sudo=""
    [ "$(id -u)" = 0 ] || sudo=sudo
    echo "bench: installing ${missing[*]}" >&2
    $sudo env DEBIAN_FRONTEND=noninteractive apt-get update -qq
    $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}"
  fi
  if [ ! -x "$cache/ss-rust/bin/sslocal" ] || [ ! -x "$cache/ss-rust/bin/ssserver" ]; then
    echo "bench: cargo install shadowsocks-rust $ss_rust_version into $cache/ss-rust (several minutes, once)" >&2
    cargo install shadowsocks-rust --version "$ss_rust_version" --locked --root "$cache/ss-rust"
  fi
fi

# The whole workspace, as the README command builds it: selecting packages with -p changes
# feature unification and would rebuild everything a second time.
cargo build --release --workspace
if [ "${1:-}" = --udp ]; then
  shift
  exec python3 bench/udp.py --ss-rust-bin "$cache/ss-rust/bin" "$@"
fi
exec python3 bench/bench.py --ss-rust-bin "$cache/ss-rust/bin" "$@"
