// Rolling restart, as a deploy does it: two gateway nodes behind a real nginx, N official
// socket.io-client clients (default reconnection) spread over both, a broadcast to all of them
// every 50 ms; then each node in turn gets SIGTERM, exits, and starts again on its port.
// Measures, for wsgate or the Node reference restarted the same way: clients reconnected, time
// until every client is connected again after each restart, and broadcasts lost by a client
// after its last reconnect (must be 0). Prints one JSON result line, like loadgen.
//
// With `--adapter streams` both systems run the Redis Streams adapter with connection state
// recovery and the broadcasts are stream entries: then every broadcast published while a client
// existed must reach it, across its reconnects too (`lost_total`, must be 0 for wsgate).
//
//   node rolling-restart.mjs --system wsgate|node --wsgate-bin PATH --redis-url URL --secret S \
//     --clients 2000 [--adapter classic|streams] [--variant TEXT] [--out results.jsonl]
import { spawn, execFileSync } from "node:child_process";
import { appendFileSync, mkdtempSync, mkdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { Agent } from "node:http";
import { tmpdir } from "node:os";
import path from "node:path";
import { parseArgs } from "node:util";
import { freePort, portOpen, seedSessions, sleep, until } from "./bench-util.mjs";
import { createClient } from "redis";
import { Emitter } from "@socket.io/redis-emitter";
import { io } from "socket.io-client";

const { values: opts } = parseArgs({
  options: {
    system: { type: "string" },
    "wsgate-bin": { type: "string" },
    "redis-url": { type: "string" },
    secret: { type: "string", default: "loadtest-secret" },
    clients: { type: "string", default: "2000" },
    variant: { type: "string", default: "" },
    adapter: { type: "string", default: "classic" },
    out: { type: "string" },
  },
});
const here = path.dirname(new URL(import.meta.url).pathname);
const repo = path.resolve(here, "../..");
const N = Number(opts.clients);
const STREAMS = opts.adapter === "streams";




const children = [];
function startNode(port) {
  const args =
    opts.system === "wsgate"
      ? [opts["wsgate-bin"], ["--listen", `127.0.0.1:${port}`, "--redis-url", opts["redis-url"], "--session-secret", opts.secret, "--drain-timeout", "2000",
          // Every client comes through nginx, from one address: lift the per-address limits.
          "--max-handshakes-per-second-per-ip", "0", "--max-pending-sessions-per-ip", "0", "--max-connections-per-user", "0",
          ...(STREAMS ? ["--adapter", "streams"] : [])]]
      : [process.execPath, [path.join(here, "server.mjs"), "--port", String(port), "--redis-url", opts["redis-url"], "--secret", opts.secret,
          ...(STREAMS ? ["--adapter", "streams"] : [])]];
  const child = spawn(args[0], args[1], { stdio: "ignore" });
  children.push(child);
  return child;
}

// nginx from deploy/nginx.conf, in its own process group.
async function startNginx(ports) {
  const dir = mkdtempSync(path.join(tmpdir(), "wsgate-rolling-"));
  const port = await freePort();
  const site = readFileSync(path.join(repo, "deploy/nginx.conf"), "utf8")
    .replace("127.0.0.1:3001", `127.0.0.1:${ports[0]}`)
    .replace("127.0.0.1:3002", `127.0.0.1:${ports[1]}`)
    .replace(/listen 80;/, `listen 127.0.0.1:${port};`);
  writeFileSync(path.join(dir, "site.conf"), site);
  for (const sub of ["body", "proxy", "fastcgi", "uwsgi", "scgi"]) mkdirSync(path.join(dir, sub));
  writeFileSync(
    path.join(dir, "nginx.conf"),
    `daemon off; worker_processes 1; pid ${dir}/nginx.pid; error_log ${dir}/error.log warn;
events { worker_connections 16384; }
http { access_log off; client_body_temp_path ${dir}/body; proxy_temp_path ${dir}/proxy;
  fastcgi_temp_path ${dir}/fastcgi; uwsgi_temp_path ${dir}/uwsgi; scgi_temp_path ${dir}/scgi;
  include ${dir}/site.conf; }\n`,
  );
  let bin = "nginx";
  try {
    execFileSync(bin, ["-v"], { stdio: "ignore" });
  } catch {
    bin = "/usr/sbin/nginx";
  }
  const child = spawn(bin, ["-p", dir, "-e", `${dir}/error.log`, "-c", `${dir}/nginx.conf`], { stdio: "ignore", detached: true });
  await until("nginx", () => portOpen(port));
  return {
    url: `http://127.0.0.1:${port}`,
    stop: () => {
      try {
        process.kill(-child.pid, "SIGKILL");
      } catch {}
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

const redis = createClient({ url: opts["redis-url"] });
await redis.connect();
const run = Math.random().toString(36).slice(2, 8);
const cookies = await seedSessions(redis, N, `rr${run}`, opts.secret);

const ports = [await freePort(), await freePort()];
const nodes = ports.map(startNode);
for (const port of ports) await until(`node on ${port}`, () => portOpen(port));
const nginx = await startNginx(ports);

// Clients from many source addresses, so nginx's address hash spreads them over both nodes.
const clients = [];
for (let i = 0; i < N; i++) {
  const state = { intervals: [], seqs: new Set(), connectedAt: null, firstConnectedAt: null, disconnects: 0, recovered: 0 };
  const socket = io(nginx.url, {
    transports: ["websocket"],
    agent: new Agent({ localAddress: `127.0.${1 + (i % 250)}.${1 + Math.floor(i / 250)}` }),
    extraHeaders: { cookie: cookies[i], origin: nginx.url },
  });
  socket.on("connect", () => {
    state.connectedAt = Date.now();
    state.firstConnectedAt ??= state.connectedAt;
    if (socket.recovered) state.recovered++;
  });
  socket.on("disconnect", () => {
    state.intervals.push([state.connectedAt, Date.now()]);
    state.connectedAt = null;
    state.disconnects++;
  });
  socket.on("tick", ({ seq }) => state.seqs.add(seq));
  clients.push({ socket, state });
  if (i % 100 === 99) await sleep(20);
}
const allConnected = () => clients.every((c) => c.socket.connected);
await until("every client connected", async () => allConnected(), 120000);

const emitterClient = createClient({ url: opts["redis-url"] });
await emitterClient.connect();
const emitter = new Emitter(emitterClient);
const published = [];
let seq = 0;
const publisher = setInterval(() => {
  published.push([seq, Date.now()]);
  if (STREAMS) {
    // What @socket.io/redis-streams-emitter appends.
    const data = JSON.stringify({
      packet: { type: 2, data: ["tick", { seq: seq++ }], nsp: "/" },
      opts: { rooms: ["user:observers"], flags: {}, except: [] },
    });
    emitterClient.xAdd("socket.io", "*", { uid: "emitter", nsp: "/", type: "3", data }, {
      TRIM: { strategy: "MAXLEN", strategyModifier: "~", threshold: 10000 },
    });
  } else {
    emitter.to("user:observers").emit("tick", { seq: seq++ });
  }
}, 50);

await sleep(1000);
const recoveries = [];
for (let i = 0; i < 2; i++) {
  const started = Date.now();
  const exited = new Promise((r) => nodes[i].once("exit", r));
  nodes[i].kill("SIGTERM");
  await exited;
  nodes[i] = startNode(ports[i]);
  await until("the node back", () => portOpen(ports[i]));
  await until("every client connected again", async () => allConnected(), 120000);
  recoveries.push((Date.now() - started) / 1000);
  await sleep(1000);
}
await sleep(1000);
clearInterval(publisher);
await sleep(1000);

// After its last reconnect, a client must get every broadcast (50 ms of margin for one in flight).
let lost = 0;
let lostTotal = 0;
let reconnected = 0;
let recovered = 0;
for (const { state } of clients) {
  if (state.disconnects > 0) reconnected++;
  recovered += state.recovered;
  const since = (state.connectedAt ?? Infinity) + 50;
  for (const [s, at] of published) if (at > since && !state.seqs.has(s)) lost++;
  // Every broadcast after the client first connected (recovery replays what a reconnect missed).
  const first = (state.firstConnectedAt ?? Infinity) + 50;
  for (const [s, at] of published) if (at > first && !state.seqs.has(s)) lostTotal++;
}
const result = {
  scenario: "rolling-restart",
  variant: opts.variant,
  system: opts.system,
  nodes: 2,
  connections: N,
  connected: clients.filter((c) => c.socket.connected).length,
  failed: {},
  reconnected,
  disconnected_per_client: clients.reduce((a, c) => a + c.state.disconnects, 0) / N,
  published: published.length,
  lost_after_reconnect: lost,
  ...(STREAMS ? { lost_total: lostTotal, recovered_reconnects: recovered } : {}),
  recovery_first_s: recoveries[0],
  recovery_second_s: recoveries[1],
};
const line = JSON.stringify(result);
console.log(line);
if (opts.out) appendFileSync(opts.out, line + "\n");

for (const { socket } of clients) socket.disconnect();
await emitterClient.destroy();
await redis.destroy();
nginx.stop();
for (const child of children) child.kill("SIGKILL");
process.exit(0);
