#!/usr/bin/env bash
# Instructions per handshake and per delivered broadcast frame, counted by
# `valgrind --tool=callgrind` in the wsgate server process (user space only; the kernel's share
# is in the wall-clock tables). Unlike times, the counts repeat within a fraction of a percent
# on a busy machine, so a regression shows between two runs.
#
# Each figure is a difference of two runs of the same scenario that differ only in size, so
# start-up, the cluster subscription and shutdown cancel out:
#   handshakes: connect-storm of S and of 2*S sockets            -> (Ir(2S) - Ir(S)) / S
#   deliveries: fanout of one room of R sockets for D and 3*D s   -> (Ir(3D) - Ir(D)) / (deliveries(3D) - deliveries(D))
#
#   loadtest/callgrind.sh BIN_DIR REDIS_URL OUT_MD [--smoke]
set -euo pipefail
BIN=$1 REDIS=$2 OUT=$3
SMOKE=${4:-}
if [[ $SMOKE == --smoke ]]; then S=100; R=50; D=1; else S=1000; R=500; D=2; fi
SECRET=loadtest-secret
WORK=$(mktemp -d)
SERVER=
cleanup() { [[ -n $SERVER ]] && kill "$SERVER" 2>/dev/null; wait 2>/dev/null || true; rm -rf "$WORK"; }
trap cleanup EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_port() { for _ in $(seq 600); do (exec 3<>/dev/tcp/127.0.0.1/"$1") 2>/dev/null && return 0; sleep 0.1; done; echo "nothing listens on $1" >&2; return 1; }

# measure NAME LOADGEN-ARGS...: runs one wsgate under callgrind through one loadgen run; prints
# "<instructions> <deliveries>".
measure() {
  local name=$1; shift
  local port; port=$(free_port)
  valgrind --tool=callgrind --callgrind-out-file="$WORK/$name.out" \
    "$BIN/wsgate" --listen "127.0.0.1:$port" --redis-url "$REDIS" --session-secret "$SECRET" \
    --max-handshakes-per-second 0 --drain-timeout 0 >"$WORK/$name.log" 2>&1 &
  SERVER=$!
  wait_port "$port"
  "$BIN/loadgen" run --system wsgate-callgrind --target "127.0.0.1:$port" --redis-url "$REDIS" --secret "$SECRET" \
    --out "$WORK/$name.jsonl" "$@" >/dev/null
  kill -TERM "$SERVER"; wait "$SERVER" || true; SERVER=
  local ir; ir=$(awk '/^(summary|totals):/ {print $2; exit}' "$WORK/$name.out")
  local delivered; delivered=$(python3 -c 'import json,sys; print(json.loads(open(sys.argv[1]).readline()).get("delivered", 0))' "$WORK/$name.jsonl")
  echo "$ir $delivered"
}

read -r hs1 _ < <(measure storm1 --scenario connect-storm --connections "$S" --concurrency 50)
read -r hs2 _ < <(measure storm2 --scenario connect-storm --connections $((2 * S)) --concurrency 50)
read -r fo1 d1 < <(measure fan1 --scenario fanout --connections "$R" --rooms 1 --rate 10 --duration "$D" --drain 5)
read -r fo2 d2 < <(measure fan2 --scenario fanout --connections "$R" --rooms 1 --rate 10 --duration $((3 * D)) --drain 5)

python3 - "$S" "$hs1" "$hs2" "$d1" "$fo1" "$d2" "$fo2" "$OUT" <<'PY'
import sys
s, hs1, hs2, d1, fo1, d2, fo2 = (int(x) for x in sys.argv[1:8])
per_handshake = (hs2 - hs1) / s
per_delivery = (fo2 - fo1) / (d2 - d1)
with open(sys.argv[8], "w") as out:
    out.write("## Instructions (callgrind, wsgate only)\n\n")
    out.write("User-space instructions the server executes, counted by `valgrind --tool=callgrind`; repeatable "
              "on a busy machine, so compare these between runs (`loadtest/callgrind.sh`). Each is the difference "
              "of two runs that differ only in size.\n\n")
    out.write("| figure | instructions | from |\n|---|---|---|\n")
    out.write(f"| per handshake (upgrade, cookie, session GET, CONNECT, rooms) | {per_handshake:,.0f} | connect-storm of {s:,} and {2*s:,} sockets |\n")
    out.write(f"| per delivered frame (one room, Redis broadcast to every member) | {per_delivery:,.0f} | {d2-d1:,} deliveries more in the longer of two fan-out runs |\n\n")
print(f"callgrind: {per_handshake:,.0f} instructions per handshake, {per_delivery:,.0f} per delivery")
PY
