#!/usr/bin/env bash
# Runs the official Socket.IO protocol test suite (socketio/socket.io,
# docs/socket.io-protocol/v5-test-suite, 32 cases) against examples/echo.
#
# The suite is not published to any package registry, and CI reaches only registries, so nothing
# of it is vendored here: pass a checkout of socketio/socket.io at the pinned revision.
#
#   tests/protocol-suite/run.sh /path/to/socket.io        (or WSGATE_PROTOCOL_SUITE=/path/…)
#
# Its own dependencies (mocha, chai, ws, node-fetch) come from npm with the suite's lock file.
# The suite's URL (localhost:3000) is pointed at a free port; nothing else is changed.
set -euo pipefail
PINNED=8632d4c0926252386c236472588e2bf048c716fe
src=${1:-${WSGATE_PROTOCOL_SUITE:-}}
if [ -z "$src" ]; then
  echo "protocol suite: skipped (no checkout of socketio/socket.io given; see tests/protocol-suite/run.sh)"
  exit 0
fi
root=$(cd "$(dirname "$0")/../.." && pwd)
suite=docs/socket.io-protocol/v5-test-suite
work=$(mktemp -d)
echo_pid=""
cleanup() {
  [ -n "$echo_pid" ] && kill "$echo_pid" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

git_dir=$src
[ -d "$src/.git" ] && git_dir="$src/.git"
for f in test-suite.js node-imports.js package.json package-lock.json; do
  git --git-dir="$git_dir" show "$PINNED:$suite/$f" >"$work/$f"
done
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
sed -i "s#http://localhost:3000#http://127.0.0.1:$port#" "$work/test-suite.js"
(cd "$work" && npm ci --no-audit --no-fund --loglevel=error >/dev/null)

echo_bin=${WSGATE_ECHO_BIN:-$root/target/debug/examples/echo}
# The suite's server settings: pingInterval 300, pingTimeout 200, connectTimeout 1000.
"$echo_bin" --listen "127.0.0.1:$port" --ping-interval 300 --ping-timeout 200 --connect-timeout 1000 >/dev/null &
echo_pid=$!
for _ in $(seq 100); do
  curl -fs "http://127.0.0.1:$port/healthz" >/dev/null 2>&1 && break
  sleep 0.05
done
(cd "$work" && npx mocha --reporter dot test-suite.js)
