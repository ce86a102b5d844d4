// Jitter: connection state recovery under dropped connections. Two nodes on the Redis Streams
// adapter (wsgate --adapter streams, or the Node reference with @socket.io/redis-streams-adapter
// and connectionStateRecovery), N official socket.io-client clients spread over both, each
// through a TCP proxy that cuts its connection at a random moment 1–2 s after it opened and
// sends each reconnect to the other node; a
// backend appends a broadcast to every client to the stream at a steady rate. Measures, per
// system: broadcasts delivered (of those published while the client existed), duplicates,
// out-of-order deliveries, reconnects that recovered, and recovery time (disconnect → connect)
// p50/p99. Prints one JSON result line, like loadgen.
//
//   node jitter.mjs --system wsgate|node --wsgate-bin PATH --redis-url URL --secret S \
//     --clients 200 --rate 20 --duration 20 [--variant TEXT] [--out results.jsonl]
import { spawn } from "node:child_process";
import { appendFileSync } from "node:fs";
import { createServer as createNetServer, connect as tcpConnect } from "node:net";
import path from "node:path";
import { parseArgs } from "node:util";
import { freePort, portOpen, seedSessions, sleep, until } from "./bench-util.mjs";
import { createClient } from "redis";
import { io } from "socket.io-client";

const { values: opts } = parseArgs({
  options: {
    system: { type: "string" },
    "wsgate-bin": { type: "string" },
    "redis-url": { type: "string" },
    secret: { type: "string", default: "loadtest-secret" },
    clients: { type: "string", default: "200" },
    rate: { type: "string", default: "20" },
    duration: { type: "string", default: "20" },
    variant: { type: "string", default: "" },
    out: { type: "string" },
  },
});
const here = path.dirname(new URL(import.meta.url).pathname);
const N = Number(opts.clients);
const RATE = Number(opts.rate);
const DURATION = Number(opts.duration) * 1000;




const children = [];
function startNode(port) {
  const args =
    opts.system === "wsgate"
      ? [opts["wsgate-bin"], ["--listen", `127.0.0.1:${port}`, "--redis-url", opts["redis-url"], "--session-secret", opts.secret,
          "--adapter", "streams",
          // Every client comes through the proxy, from one address: lift the per-address limits.
          "--max-handshakes-per-second-per-ip", "0", "--max-pending-sessions-per-ip", "0", "--max-connections-per-user", "0"]]
      : [process.execPath, [path.join(here, "server.mjs"), "--port", String(port), "--redis-url", opts["redis-url"], "--secret", opts.secret, "--adapter", "streams"]];
  const child = spawn(args[0], args[1], { stdio: "ignore" });
  children.push(child);
  return child;
}

// A TCP proxy that cuts every connection 1–2 s after it opened, while `jitter.on`, and sends
// each new connection to the next node in turn: a client's reconnect lands on the other node,
// as behind a balancer when its address or route changed.
const jitter = { on: true, cuts: 0 };
let nextTarget = 0;
async function startProxy(targets) {
  const port = await freePort();
  const server = createNetServer((inbound) => {
    const outbound = tcpConnect(targets[nextTarget++ % targets.length], "127.0.0.1");
    inbound.pipe(outbound);
    outbound.pipe(inbound);
    const cut = () => {
      inbound.destroy();
      outbound.destroy();
    };
    inbound.on("error", cut);
    outbound.on("error", cut);
    inbound.on("close", cut);
    outbound.on("close", cut);
    const timer = setTimeout(() => {
      if (jitter.on) {
        jitter.cuts++;
        cut();
      }
    }, 1000 + Math.random() * 1000);
    inbound.on("close", () => clearTimeout(timer));
  });
  server.listen(port, "127.0.0.1");
  await new Promise((r) => server.once("listening", r));
  return { port, server };
}

const redis = createClient({ url: opts["redis-url"] });
await redis.connect();
await redis.del("socket.io");
const run = Math.random().toString(36).slice(2, 8);
const cookies = await seedSessions(redis, N, `jt${run}`, opts.secret);

const ports = [await freePort(), await freePort()];
ports.map(startNode);
for (const port of ports) await until(`node on ${port}`, () => portOpen(port));
const proxies = [await startProxy(ports)];
jitter.on = false;

const clients = [];
for (let i = 0; i < N; i++) {
  const url = `http://127.0.0.1:${proxies[0].port}`;
  const state = { seqs: [], lostAt: null, recoveryMs: [], recovered: 0, reconnects: 0 };
  const socket = io(url, {
    transports: ["websocket"],
    reconnectionDelay: 100,
    reconnectionDelayMax: 500,
    extraHeaders: { cookie: cookies[i] },
  });
  socket.on("disconnect", () => (state.lostAt = Date.now()));
  socket.on("connect", () => {
    if (state.lostAt !== null) {
      state.reconnects++;
      state.recoveryMs.push(Date.now() - state.lostAt);
      if (socket.recovered) state.recovered++;
      state.lostAt = null;
    }
  });
  socket.on("tick", ({ seq }) => state.seqs.push(seq));
  clients.push({ socket, state });
  if (i % 50 === 49) await sleep(20);
}
await until("every client connected", async () => clients.every((c) => c.socket.connected), 120000);
// A first event gives every client its offset (without one a client cannot recover, in Node and
// in wsgate alike).
let seq = 0;
const publish = async () => {
  const data = JSON.stringify({
    packet: { type: 2, data: ["tick", { seq: seq++ }], nsp: "/" },
    opts: { rooms: ["user:observers"], flags: {}, except: [] },
  });
  await redis.xAdd("socket.io", "*", { uid: "emitter", nsp: "/", type: "3", data }, {
    TRIM: { strategy: "MAXLEN", strategyModifier: "~", threshold: 10000 },
  });
};
await publish();
await until("the first event everywhere", async () => clients.every((c) => c.state.seqs.length > 0), 30000);

jitter.on = true;
const started = Date.now();
while (Date.now() - started < DURATION) {
  await publish();
  await sleep(1000 / RATE);
}
jitter.on = false;
await until("every client connected again", async () => clients.every((c) => c.socket.connected), 60000);
await sleep(2000);

const published = seq;
let delivered = 0;
let duplicates = 0;
let outOfOrder = 0;
let recovered = 0;
let reconnects = 0;
const recoveryMs = [];
for (const { state } of clients) {
  const seen = new Set();
  let max = -1;
  for (const s of state.seqs) {
    if (seen.has(s)) duplicates++;
    else seen.add(s);
    if (s < max) outOfOrder++;
    max = Math.max(max, s);
  }
  delivered += seen.size;
  recovered += state.recovered;
  reconnects += state.reconnects;
  recoveryMs.push(...state.recoveryMs);
}
recoveryMs.sort((a, b) => a - b);
const pct = (p) => (recoveryMs.length ? recoveryMs[Math.min(recoveryMs.length - 1, Math.floor((p / 100) * recoveryMs.length))] : null);
const result = {
  scenario: "jitter",
  variant: opts.variant,
  system: opts.system,
  nodes: 2,
  connections: N,
  connected: clients.filter((c) => c.socket.connected).length,
  failed: {},
  published,
  cuts: jitter.cuts,
  delivered_pct: Number(((100 * delivered) / (published * N)).toFixed(3)),
  duplicates,
  out_of_order: outOfOrder,
  reconnects,
  recovered_pct: reconnects ? Number(((100 * recovered) / reconnects).toFixed(1)) : null,
  recovery_p50_ms: pct(50),
  recovery_p99_ms: pct(99),
};
const line = JSON.stringify(result);
console.log(line);
if (opts.out) appendFileSync(opts.out, line + "\n");

for (const { socket } of clients) socket.disconnect();
for (const { server } of proxies) server.close();
await redis.destroy();
for (const child of children) child.kill("SIGKILL");
process.exit(0);
