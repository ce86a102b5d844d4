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
# Calls into the allocator (malloc, calloc, realloc, aligned allocations) are counted the same
# way, per handshake and per broadcast: a broadcast reaches R sockets, so an allocation per
# recipient would show as R or more per broadcast.
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

WSGATE_EXTRA=()
# measure NAME LOADGEN-ARGS...: runs one wsgate under callgrind through one loadgen run; prints
# "<instructions> <deliveries>".
measure() {
  local name=$1; shift
  local port; port=$(free_port)
  valgrind --tool=callgrind --callgrind-out-file="$WORK/$name.out" \
    "$BIN/wsgate" --listen "127.0.0.1:$port" --redis-url "$REDIS" --session-secret "$SECRET" \
    --max-handshakes-per-second 0 --max-handshakes-per-second-per-ip 0 --max-pending-sessions 0 \
    --max-pending-sessions-per-ip 0 --max-connections-per-user 0 \
    --max-events-per-second-per-user 0 --max-event-bytes-per-second-per-user 0 \
    --drain-timeout 0 "${WSGATE_EXTRA[@]}" >"$WORK/$name.log" 2>&1 &
  SERVER=$!
  wait_port "$port"
  "$BIN/loadgen" run --system wsgate-callgrind --target "127.0.0.1:$port" --redis-url "$REDIS" --secret "$SECRET" \
    --out "$WORK/$name.jsonl" "$@" >/dev/null
  kill -TERM "$SERVER"; wait "$SERVER" || true; SERVER=
  local ir; ir=$(awk '/^(summary|totals):/ {print $2; exit}' "$WORK/$name.out")
  local counts; counts=$(python3 -c 'import json,sys; r=json.loads(open(sys.argv[1]).readline()); print(r.get("delivered", 0), r.get("published", 0))' "$WORK/$name.jsonl")
  echo "$ir $counts $(allocations "$WORK/$name.out")"
}

# allocations FILE: calls into the allocator recorded in a callgrind output file (names are
# compressed to "(id) name" the first time and "(id)" after).
allocations() {
  python3 - "$1" <<'PY'
import re, sys
alloc = {"malloc", "calloc", "realloc", "posix_memalign", "aligned_alloc", "memalign"}
names, total, callee = {}, 0, None
for line in open(sys.argv[1], errors="replace"):
    m = re.match(r"(c?fn)=\((\d+)\)(?: (.*))?", line)
    if m:
        if m.group(3):
            names[m.group(2)] = m.group(3).strip()
        callee = names.get(m.group(2), "") if m.group(1) == "cfn" else None
    elif line.startswith("calls=") and callee is not None:
        if callee.split("'")[0] in alloc:
            total += int(line.split()[0][6:])
        callee = None
print(total)
PY
}

read -r hs1 _ _ ha1 < <(measure storm1 --scenario connect-storm --connections "$S" --concurrency 50)
read -r hs2 _ _ ha2 < <(measure storm2 --scenario connect-storm --connections $((2 * S)) --concurrency 50)
read -r fo1 d1 p1 fa1 < <(measure fan1 --scenario fanout --connections "$R" --rooms 1 --rate 10 --duration "$D" --drain 5)
read -r fo2 d2 p2 fa2 < <(measure fan2 --scenario fanout --connections "$R" --rooms 1 --rate 10 --duration $((3 * D)) --drain 5)
# The same on the Redis Streams adapter with recovery on: entries read with XREAD, an offset on
# every frame.
WSGATE_EXTRA=(--adapter streams)
read -r so1 sd1 _ _ < <(measure sfan1 --scenario fanout --adapter streams --connections "$R" --rooms 1 --rate 10 --duration "$D" --drain 5)
read -r so2 sd2 _ _ < <(measure sfan2 --scenario fanout --adapter streams --connections "$R" --rooms 1 --rate 10 --duration $((3 * D)) --drain 5)
WSGATE_EXTRA=()

python3 - "$S" "$R" "$hs1" "$hs2" "$d1" "$fo1" "$d2" "$fo2" "$ha1" "$ha2" "$fa1" "$fa2" "$p1" "$p2" "$OUT" "$sd1" "$so1" "$sd2" "$so2" <<'PY'
import sys
s, r, hs1, hs2, d1, fo1, d2, fo2, ha1, ha2, fa1, fa2, p1, p2 = (int(x) for x in sys.argv[1:15])
sd1, so1, sd2, so2 = (int(x) for x in sys.argv[16:20])
per_streams_delivery = (so2 - so1) / max(1, sd2 - sd1)
per_handshake = (hs2 - hs1) / s
per_delivery = (fo2 - fo1) / (d2 - d1)
allocs_handshake = (ha2 - ha1) / s
allocs_broadcast = (fa2 - fa1) / max(1, p2 - p1)
with open(sys.argv[15], "w") as out:
    out.write("## Instructions (callgrind, wsgate only)\n\n")
    out.write("User-space instructions the server executes, counted by `valgrind --tool=callgrind`; repeatable "
              "on a busy machine, so compare these between runs (`loadtest/callgrind.sh`). Each is the difference "
              "of two runs that differ only in size.\n\n")
    out.write("| figure | instructions | allocations | from |\n|---|---|---|---|\n")
    out.write(f"| per handshake (upgrade, cookie, session GET, CONNECT, rooms) | {per_handshake:,.0f} | {allocs_handshake:,.1f} | connect-storm of {s:,} and {2*s:,} sockets |\n")
    out.write(f"| per delivered frame (one room of {r:,}, a Redis broadcast to every member) | {per_delivery:,.0f} | {allocs_broadcast / r:,.3f} ({allocs_broadcast:,.0f} per broadcast of {r:,} frames) | {d2-d1:,} deliveries more in the longer of two fan-out runs |\n")
    out.write(f"| per delivered frame, Redis Streams adapter with recovery (stream entries, an offset on each frame) | {per_streams_delivery:,.0f} ({per_streams_delivery / per_delivery:.2f}× classic) | | {sd2-sd1:,} deliveries more in the longer of two fan-out runs |\n\n")
print(f"callgrind: {per_handshake:,.0f} instructions and {allocs_handshake:,.1f} allocations per handshake; {per_delivery:,.0f} instructions per delivery, {allocs_broadcast:,.0f} allocations per broadcast to {r:,}; streams adapter {per_streams_delivery:,.0f} per delivery ({per_streams_delivery / per_delivery:.2f}× classic)")
PY
