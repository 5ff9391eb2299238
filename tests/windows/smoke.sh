#!/usr/bin/env bash
# The Windows smoke test (issue 13): warren-local.exe, cross-built for x86_64-pc-windows-gnu, runs
# under wine against a Linux warren-remote, and curl fetches a page through its SOCKS5 port, then
# through its HTTP proxy port. Everything on 127.0.0.1.
#
#   tests/windows/smoke.sh LOCAL_EXE LINUX_REMOTE
#
# Needs wine64, gcc-mingw-w64-x86-64, curl and python3 (Debian); .ci/run and .ci/platforms
# install them.
set -euo pipefail
local_exe=$(realpath "$1")
remote_bin=$(realpath "$2")
here=$(cd "$(dirname "$0")" && pwd)
work=$(mktemp -d)
pids=()
cleanup() {
  status=$?
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wineserver=$(command -v wineserver || echo /usr/lib/wine/wineserver64)
  WINEPREFIX=$work/prefix "$wineserver" -k 2>/dev/null || true
  if [ "$status" != 0 ]; then
    echo "--- remote.log" >&2; cat "$work/remote.log" >&2 || true
    echo "--- local.log" >&2; cat "$work/local.log" >&2 || true
  fi
  rm -rf "$work"
}
trap cleanup EXIT

wine=/usr/lib/wine/wine64
[ -x "$wine" ] || wine=$(command -v wine64 || command -v wine)
export WINEPREFIX=$work/prefix WINEDEBUG=-all

# bcryptprimitives.dll beside the .exe: wine looks in the program's own folder first.
cp "$local_exe" "$work/warren-local.exe"
x86_64-w64-mingw32-gcc -shared -O2 -o "$work/bcryptprimitives.dll" \
  "$here/bcryptprimitives.c" "$here/bcryptprimitives.def" -ladvapi32

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
socks=$(free_port); tunnel=$(free_port); site=$(free_port)
key=$(python3 -c 'import base64,os; print(base64.b64encode(os.urandom(32)).decode())')
cat > "$work/warren.yaml" <<YAML
key: "$key"
local: { listen: "127.0.0.1:$socks", remote: "127.0.0.1:$tunnel" }
remote: { listen: "127.0.0.1:$tunnel", acl: [{ allow: "127.0.0.1" }] }
YAML
mkdir "$work/site"
echo "warren on windows: $key" > "$work/site/index.html"
python3 -m http.server "$site" --bind 127.0.0.1 --directory "$work/site" >/dev/null 2>&1 &
pids+=($!)
"$remote_bin" -c "$work/warren.yaml" > "$work/remote.log" 2>&1 &
pids+=($!)
for _ in $(seq 1 100); do
  grep -q "accepting tunnels" "$work/remote.log" && break
  sleep 0.1
done
grep -q "accepting tunnels" "$work/remote.log" || { echo "warren-remote did not start" >&2; exit 1; }
(cd "$work" && exec "$wine" ./warren-local.exe -c warren.yaml) > "$work/local.log" 2>&1 &
local_pid=$!
pids+=("$local_pid")

# The first start of wine creates its prefix: up to two minutes, in 1 s steps; a process that
# exited ends the wait at once.
for _ in $(seq 1 120); do
  grep -q "serving SOCKS5" "$work/local.log" && break
  kill -0 "$local_pid" 2>/dev/null || break
  sleep 1
done
cat "$work/local.log"
grep -q "serving SOCKS5" "$work/local.log" || { echo "warren-local.exe did not start" >&2; exit 1; }

expected="warren on windows: $key"
got=$(curl -sS --max-time 20 --socks5-hostname "127.0.0.1:$socks" "http://127.0.0.1:$site/index.html")
[ "$got" = "$expected" ] || { echo "SOCKS5 through warren-local.exe returned: $got" >&2; exit 1; }
got=$(curl -sS --max-time 20 --proxy "http://127.0.0.1:$socks" "http://127.0.0.1:$site/index.html")
[ "$got" = "$expected" ] || { echo "HTTP proxy through warren-local.exe returned: $got" >&2; exit 1; }
grep -q "connection finished" "$work/remote.log" || { echo "the remote logged no tunnelled connection" >&2; exit 1; }
echo "windows smoke: warren-local.exe carried a SOCKS5 and an HTTP-proxy request to a Linux warren-remote"
