#!/usr/bin/env bash
# Runs every loadgen scenario against wsgate and the Node reference, side by side, on this
# machine, and writes docs/BENCHMARKS.md (full run) or target/loadtest-smoke.md (--smoke).
#
#   loadtest/run.sh            full run (several minutes); needs redis-server, node, npm
#   loadtest/run.sh --smoke    seconds; checks the harness end to end (part of scripts/test)
set -euo pipefail
cd "$(dirname "$0")/.."

SMOKE=0
for arg in "$@"; do
  case "$arg" in
    --smoke) SMOKE=1 ;;
    *) echo "usage: $0 [--smoke]" >&2; exit 2 ;;
  esac
done

if ((SMOKE)); then
  PROFILE=debug
  STORM=300; IDLE=300; IDLE_WORKERS=1; FAN=200; ROOMS=4; RATE=50; DUR=2; FAN_DUR=2; DRAIN=2
  LAT=200; LAT_ROOMS=2; LAT_RATE=20; CHURN_OBS=100; CHURN_RATE=20; BIG=0; POLL=100; ROLL=100; INB=100; INB_RATE=2; JIT=50; JIT_DUR=5
  CL_FAN=400; CL_ROOMS=8; CL_RATE=20
  OUT=target/loadtest-smoke.md
else
  PROFILE=release
  STORM=10000; IDLE=19000; IDLE_WORKERS=2; FAN=10000; ROOMS=10; RATE=200; DUR=10; FAN_DUR=5; DRAIN=15
  LAT=1000; LAT_ROOMS=10; LAT_RATE=100; CHURN_OBS=1000; CHURN_RATE=200; BIG=${BIG:-100000}; POLL=4000; ROLL=2000; INB=1000; INB_RATE=5; JIT=500; JIT_DUR=20
  CL_FAN=8000; CL_ROOMS=400; CL_RATE=2000
  OUT=docs/BENCHMARKS.md
fi
SECRET=loadtest-secret

# The revision the binaries are built from (recorded now: the tree may change during the run).
REVISION=$(git describe --always --dirty 2>/dev/null || echo unknown)
if [[ $PROFILE == release ]]; then
  cargo build --release --locked -p wsgate -p wsgate-loadtest
else
  cargo build --locked -p wsgate -p wsgate-loadtest
fi
BIN=${CARGO_TARGET_DIR:-target}/$PROFILE
(cd loadtest/node-reference && npm ci --no-audit --no-fund --loglevel=error)

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_port() { for _ in $(seq 200); do (exec 3<>/dev/tcp/127.0.0.1/"$1") 2>/dev/null && return 0; sleep 0.05; done; echo "nothing listens on $1" >&2; return 1; }

WORK=$(mktemp -d)
PIDS=()
DROP_DB=
# The servers are waited for before their directory goes: a Redis Cluster node still writing its
# nodes.conf or log on the way out once made rm fail ("Directory not empty") and the run exit 1.
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
  [[ -n $DROP_DB ]] && eval "$DROP_DB"
  rm -rf "$WORK"
}
trap cleanup EXIT

REDIS_PORT=$(free_port)
redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save "" --appendonly no --maxclients 200000 --logfile "$WORK/redis.log" &
PIDS+=($!)
wait_port "$REDIS_PORT"
REDIS=redis://127.0.0.1:$REDIS_PORT
RESULTS=$WORK/results.jsonl

# Session-store and adapter flags both systems get (the same names on both sides); empty:
# connect-redis and the classic adapter on the Redis above.
STORE_ARGS=()
ADAPTER_ARGS=()
SERVER_REDIS=$REDIS

# start_nodes SYSTEM COUNT: starts COUNT fresh server processes; sets TARGETS and SERVER_PIDS.
start_nodes() {
  TARGETS=(); SERVER_PIDS=()
  for _ in $(seq "$2"); do
    local port; port=$(free_port)
    if [[ $1 == wsgate ]]; then
      # The handshake rate limits, the pending budgets and the per-user limits are off: these
      # runs measure capacity, not the limits (load comes from one address, and the fan-out
      # scenario puts 1,000 sockets in each user).
      "$BIN/wsgate" --listen "127.0.0.1:$port" --redis-url "$SERVER_REDIS" --session-secret "$SECRET" --max-handshakes-per-second 0 --max-handshakes-per-second-per-ip 0 --max-pending-sessions 0 --max-pending-sessions-per-ip 0 --max-connections-per-user 0 --max-events-per-second-per-user 0 --max-event-bytes-per-second-per-user 0 "${STORE_ARGS[@]}" "${ADAPTER_ARGS[@]}" >>"$WORK/wsgate.log" 2>&1 &
    else
      node loadtest/node-reference/server.mjs --port "$port" --redis-url "$SERVER_REDIS" --secret "$SECRET" "${STORE_ARGS[@]}" "${ADAPTER_ARGS[@]}" >>"$WORK/node.log" 2>&1 &
    fi
    SERVER_PIDS+=($!); PIDS+=($!)
    wait_port "$port"
    TARGETS+=(--target "127.0.0.1:$port")
  done
  sleep 0.5
}
stop_nodes() { for p in "${SERVER_PIDS[@]}"; do kill "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done; }

loadgen() {
  local system=$1; shift
  local pids=(); for p in "${SERVER_PIDS[@]}"; do pids+=(--server-pid "$p"); done
  "$BIN/loadgen" run --system "$system" "${TARGETS[@]}" "${pids[@]}" --redis-url "$SERVER_REDIS" --secret "$SECRET" --out "$RESULTS" "$@" >/dev/null
}

for system in wsgate node; do
  start_nodes $system 1; loadgen $system --variant "$STORM sockets, 500 in flight, 1 node" --scenario connect-storm --connections $STORM --concurrency 500; stop_nodes
  start_nodes $system 1; loadgen $system --variant "$IDLE sockets, 1 node" --scenario idle-hold --connections $IDLE --workers $IDLE_WORKERS --duration $DUR; stop_nodes
  start_nodes $system 2; loadgen $system --variant "capacity: $FAN sockets in $ROOMS rooms, 2 nodes, $RATE msg/s" --scenario fanout --connections $FAN --workers $IDLE_WORKERS --rooms $ROOMS --rate $RATE --duration $FAN_DUR --drain $DRAIN; stop_nodes
  start_nodes $system 2; loadgen $system --variant "cross-node latency: $LAT sockets in $LAT_ROOMS rooms, 2 nodes, $LAT_RATE msg/s" --scenario fanout --connections $LAT --rooms $LAT_ROOMS --rate $LAT_RATE --duration $DUR; stop_nodes
  start_nodes $system 2; loadgen $system --variant "$CHURN_OBS observers, 2 nodes, $CHURN_RATE connects/s" --scenario churn --connections $CHURN_OBS --churn-rate $CHURN_RATE --rate $LAT_RATE --duration $DUR; stop_nodes
  # Each polling session holds 2 connections (GET, POST) and a third while upgrading.
  start_nodes $system 1; loadgen $system --variant "$POLL polling sessions, 1 node, then all upgraded" --scenario polling --connections $POLL --workers $IDLE_WORKERS --concurrency 200 --duration $DUR; stop_nodes
  start_nodes $system 1; loadgen $system --variant "$INB sockets, $INB_RATE events/s each with acks, 1 node" --scenario inbound --connections $INB --events-per-socket $INB_RATE --duration $DUR; stop_nodes
  # A deploy: two nodes behind nginx, each restarted in turn (it starts and stops its own nodes).
  node loadtest/node-reference/rolling-restart.mjs --system $system --wsgate-bin "$BIN/wsgate" --redis-url "$REDIS" --secret "$SECRET" \
    --clients $ROLL --variant "$ROLL clients, 2 nodes behind nginx, each restarted in turn" --out "$RESULTS" >/dev/null
  # The same deploy on the Redis Streams adapter with connection state recovery: nothing lost.
  node loadtest/node-reference/rolling-restart.mjs --system $system --wsgate-bin "$BIN/wsgate" --redis-url "$REDIS" --secret "$SECRET" \
    --clients $ROLL --adapter streams --variant "$ROLL clients, 2 nodes behind nginx, each restarted in turn, streams adapter with recovery" --out "$RESULTS" >/dev/null
  # Connection state recovery on the Redis Streams adapter: connections cut every 1-2 s.
  node loadtest/node-reference/jitter.mjs --system $system --wsgate-bin "$BIN/wsgate" --redis-url "$REDIS" --secret "$SECRET" \
    --clients $JIT --rate 20 --duration $JIT_DUR --out "$RESULTS" \
    --variant "$JIT clients, 2 nodes, streams adapter, 20 msg/s, each connection cut 1-2 s after it opened, reconnects to the other node" >/dev/null
done
# Connect storms with the sessions in connect-memcached and connect-pg-simple (the cluster adapter
# stays on Redis): what a handshake costs when the lookup goes to memcached or PostgreSQL.
MEMCACHED_PORT=$(free_port)
memcached -p "$MEMCACHED_PORT" -l 127.0.0.1 -U 0 -m 256 -c 4096 $( ((EUID == 0)) && echo "-u root") &
PIDS+=($!)
wait_port "$MEMCACHED_PORT"
PG_ADMIN=${WSGATE_TEST_PG_URL:-postgres://postgres@127.0.0.1:5432/postgres}
PG_DB=wsgate_bench_$$
psql "$PG_ADMIN" -qc "CREATE DATABASE $PG_DB"
DROP_DB="psql '$PG_ADMIN' -qc 'DROP DATABASE IF EXISTS $PG_DB WITH (FORCE)'"
PG_URL=${PG_ADMIN%/*}/$PG_DB
psql "$PG_URL" -q -f loadtest/node-reference/node_modules/connect-pg-simple/table.sql
for store in memcached postgres; do
  if [[ $store == memcached ]]; then store_url=memcache://127.0.0.1:$MEMCACHED_PORT; else store_url=$PG_URL; fi
  STORE_ARGS=(--session-store "$store" --session-store-url "$store_url")
  [[ $store == memcached ]] && STORE_ARGS+=(--session-prefix sess:)
  for system in wsgate node; do
    start_nodes $system 1
    loadgen $system --variant "$STORM sockets, 500 in flight, 1 node, sessions in $( [[ $store == postgres ]] && echo connect-pg-simple || echo connect-$store )" --scenario connect-storm --connections $STORM --concurrency 500 --session-store "$store" --session-store-url "$store_url"
    stop_nodes
  done
done
STORE_ARGS=()
eval "$DROP_DB"; DROP_DB=

# Fan-out on a Redis Cluster of 3 masters with 4 server nodes (many small rooms, many messages:
# what Redis and the nodes pay per message shows): wsgate with the sharded adapter,
# wsgate with the classic one, and Node with createShardedAdapter. Socket n is in room n % ROOMS
# and on node n % 4, so every room lives on one node: the case sharding is for.
CLUSTER_PORTS=(); CLUSTER_PIDS=()
for _ in 1 2 3; do
  # 10000-15999 (bus ports 20000-25999): below the ephemeral range the servers and loadgen use.
  while :; do port=$((10000 + RANDOM % 6000)); python3 -c "import socket,sys
for p in ($port, $port + 10000):
    s = socket.socket(); s.bind(('127.0.0.1', p)); s.close()" 2>/dev/null && [[ " ${CLUSTER_PORTS[*]} " != *" $port "* ]] && break; done
  mkdir -p "$WORK/cluster"
  redis-server --port "$port" --bind 127.0.0.1 --save "" --appendonly no --cluster-enabled yes \
    --cluster-config-file "nodes-$port.conf" --dir "$WORK/cluster" --logfile "$WORK/cluster/$port.log" &
  CLUSTER_PIDS+=($!); PIDS+=($!); CLUSTER_PORTS+=("$port")
done
for port in "${CLUSTER_PORTS[@]}"; do wait_port "$port"; done
redis-cli --cluster create "${CLUSTER_PORTS[@]/#/127.0.0.1:}" --cluster-yes >/dev/null
for port in "${CLUSTER_PORTS[@]}"; do
  for _ in $(seq 200); do redis-cli -p "$port" cluster info | grep -q cluster_state:ok && break; sleep 0.05; done
done
SERVER_REDIS=$(printf 'redis://127.0.0.1:%s,' "${CLUSTER_PORTS[@]}"); SERVER_REDIS=${SERVER_REDIS%,}
redis_pids=(); for p in "${CLUSTER_PIDS[@]}"; do redis_pids+=(--redis-pid "$p"); done
CL_VARIANT="Redis Cluster of 3 masters, 4 nodes: $CL_FAN sockets in $CL_ROOMS rooms, each room on one node, $CL_RATE msg/s"
for run in wsgate:sharded wsgate-classic:classic node:sharded; do
  system=${run%%:*}; adapter=${run#*:}
  ADAPTER_ARGS=(--redis-cluster --adapter "$adapter")
  start_nodes "${system%-classic}" 4
  loadgen "$system" --variant "$CL_VARIANT" --scenario fanout --connections $CL_FAN --rooms $CL_ROOMS --rate $CL_RATE \
    --duration $FAN_DUR --drain $DRAIN --redis-cluster --adapter "$adapter" "${redis_pids[@]}"
  stop_nodes
done
ADAPTER_ARGS=(); SERVER_REDIS=$REDIS

if ((BIG > 0)); then
  # Scale beyond one process: a cluster of gateway nodes holding BIG sockets, one broadcast
  # room containing all of them.
  NODES=$(( (BIG + 15999) / 16000 ))
  start_nodes wsgate $NODES
  # About 1,000 handshakes in flight in all: with 300 per worker (4,800 at 250k) the two cores
  # were so oversubscribed that 0.2 % of session lookups passed their 2 s timeout.
  loadgen wsgate-cluster --variant "scale: $BIG sockets on $NODES gateway processes, one room" --scenario fanout --connections "$BIG" --workers "$NODES" --rooms 1 --rate 1 --duration 5 --drain 10 --concurrency $(( 1000 / NODES + 1 ))
  stop_nodes
fi

# Instruction counts (wsgate only): the figures that stay put on a noisy machine.
if command -v valgrind >/dev/null; then
  loadtest/callgrind.sh "$BIN" "$REDIS" "$WORK/callgrind.md" $( ((SMOKE)) && echo --smoke )
else
  echo "valgrind is not installed: no instruction counts in this run" | tee "$WORK/callgrind.md"
fi

{
  echo "# Benchmarks: wsgate vs the Node stack, side by side"
  echo
  echo "Generated by \`loadtest/run.sh$([[ $SMOKE == 1 ]] && echo ' --smoke')\` on $(date -u +%Y-%m-%d). Both systems ran on the same"
  echo "machine, in the same run, under the same load, one after the other, with fresh server processes per scenario."
  echo
  echo "- machine: $(nproc) cores ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)), $(free -g | awk '/Mem:/{print $2}') GiB RAM, $(uname -sr); load generator, Redis and servers share the cores"
  echo "- wsgate $REVISION ($PROFILE build), $(rustc --version)"
  echo "- Node reference: node $(node --version), socket.io 4.8.4, @socket.io/redis-adapter 8.3.0, express-session 1.19.0, connect-redis 9.0.0 (loadtest/node-reference/server.mjs)"
  echo "- $(redis-server --version | cut -d' ' -f1-3)"
  echo "- every socket authenticates with a signed express-session cookie against a connect-redis record, joins namespace /, its user room and its session room"
  echo
  echo "Sizes: connect-storm $STORM sockets (500 handshakes in flight); idle-hold $IDLE sockets held ${DUR} s; fanout (capacity) $FAN sockets in $ROOMS rooms over 2 nodes, $RATE msg/s for ${FAN_DUR} s; fanout (latency) $LAT sockets in $LAT_ROOMS rooms over 2 nodes, $LAT_RATE msg/s for ${DUR} s; churn $CHURN_OBS observers on 2 nodes + $CHURN_RATE connects/s while $LAT_RATE msg/s are published for ${DUR} s; polling $POLL sessions opened over HTTP long-polling (handshake, POST 40, GET), held ${DUR} s with a long-poll pending, then all upgraded to WebSocket at once; inbound $INB sockets each emitting $INB_RATE events/s with an ack for ${DUR} s, stored in a Redis Stream (XADD) before the ack; rolling-restart $ROLL official socket.io-client clients on 2 nodes behind nginx (deploy/nginx.conf), a broadcast every 50 ms, each node sent SIGTERM and started again in turn (wsgate with --drain-timeout 2000)$( ((BIG > 0)) && echo "; wsgate-cluster: $BIG sockets on $(( (BIG + 15999) / 16000 )) gateway processes, all in one room, 1 msg/s for 5 s")."
  echo
  cat "$WORK/callgrind.md"
} >"$WORK/header.md"
[[ -f loadtest/analysis.md && $SMOKE == 0 ]] && cp loadtest/analysis.md "$WORK/footer.md" || : >"$WORK/footer.md"
mkdir -p "$(dirname "$OUT")"
"$BIN/loadgen" report --results "$RESULTS" --header "$WORK/header.md" --footer "$WORK/footer.md" --out "$OUT"
if ((SMOKE == 0)); then
  mkdir -p docs/benchmarks && cp "$RESULTS" docs/benchmarks/results.jsonl
fi
echo "wrote $OUT"

# The smoke run fails if anything was refused, lost or left unmeasured.
if ((SMOKE)); then
  python3 - "$RESULTS" <<'PY'
import json, sys
bad = []
for line in open(sys.argv[1]):
    r = json.loads(line)
    name = f"{r['scenario']}/{r['system']}"
    if r["connected"] != r["connections"] or r["failed"]:
        bad.append(f"{name}: connected {r['connected']}/{r['connections']} failed {r['failed']}")
    if r["scenario"] in ("fanout", "churn") and (r.get("lost", 1) != 0 or r.get("delivered", 0) == 0):
        bad.append(f"{name}: delivered {r.get('delivered')} lost {r.get('lost')}")
    if r["scenario"] in ("idle-hold", "polling") and not r.get("rss_per_connection_kib"):
        bad.append(f"{name}: no RSS measured")
    if r["scenario"] == "inbound" and (not r.get("acked") or r.get("refused")):
        bad.append(f"{name}: acked {r.get('acked')} refused {r.get('refused')}")
    # Node's streams adapter may lose or repeat a few (a reconnect before its SET): wsgate only.
    if r["scenario"] == "jitter" and r["system"] == "wsgate" and (r.get("delivered_pct") != 100 or r.get("duplicates") or r.get("out_of_order")):
        bad.append(f"{name}: delivered {r.get('delivered_pct')} % duplicates {r.get('duplicates')} out of order {r.get('out_of_order')}")
    if r["scenario"] == "rolling-restart" and r["system"] == "wsgate" and r.get("lost_total", 0) != 0:
        bad.append(f"{name}: {r.get('lost_total')} broadcasts lost across recoveries")
    if r["scenario"] == "rolling-restart" and r.get("lost_after_reconnect") != 0:
        bad.append(f"{name}: {r.get('lost_after_reconnect')} broadcasts lost after a reconnect")
    if r["scenario"] == "polling" and (r.get("upgraded") != r["connected"] or r.get("upgrade_failed")):
        bad.append(f"{name}: upgraded {r.get('upgraded')}/{r['connected']} failed {r.get('upgrade_failed')}")
runs = sum(1 for _ in open(sys.argv[1]))
failed_runs = len({b.split(":")[0] for b in bad})
for b in bad: print("  " + b)
print(f"smoke: {runs - failed_runs} passed, {failed_runs} failed")
sys.exit(1 if bad else 0)
PY
fi
