// Shared helpers for the interop tests: real redis-server, real wsgate processes, a real Express
// app with express-session + connect-redis + passport.
import assert from "node:assert/strict";
import { spawn, execFileSync } from "node:child_process";
import { mkdtempSync, readFileSync, writeFileSync, mkdirSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { createServer } from "node:net";
import { once } from "node:events";
import { fileURLToPath } from "node:url";
import path from "node:path";
import express from "express";
import session from "express-session";
import { RedisStore } from "connect-redis";
import { createClient, createCluster } from "redis";
import passport from "passport";
import { Strategy as LocalStrategy } from "passport-local";
import { io } from "socket.io-client";

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../..");
export const WSGATE_BIN = process.env.WSGATE_BIN ?? path.join(root, "target/debug/wsgate");
export const ECHO_BIN = process.env.WSGATE_ECHO_BIN ?? path.join(root, "target/debug/examples/echo");
export const CLUSTER_NODE_BIN =
  process.env.WSGATE_CLUSTER_NODE_BIN ?? path.join(root, "target/debug/examples/cluster_node");
export const REPO_ROOT = root;

export async function freePort() {
  const srv = createServer();
  srv.listen(0, "127.0.0.1");
  await once(srv, "listening");
  const { port } = srv.address();
  srv.close();
  await once(srv, "close");
  return port;
}

export async function waitFor(what, check, timeoutMs = 10000) {
  const until = Date.now() + timeoutMs;
  for (;;) {
    try {
      if (await check()) return;
    } catch {
      // not yet
    }
    if (Date.now() > until) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

/** Spawns a process and kills it when the test ends. */
export function spawnManaged(t, cmd, args, env = {}, stdin = "ignore") {
  const child = spawn(cmd, args, { stdio: [stdin, "ignore", "pipe"], env: { ...process.env, ...env } });
  let stderr = "";
  child.stderr.on("data", (d) => (stderr += d));
  t.after(() => child.kill("SIGKILL"));
  child.logs = () => stderr;
  return child;
}

export async function startRedis(t, port) {
  port ??= await freePort();
  const child = spawnManaged(t, "redis-server", ["--port", String(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]);
  const client = createClient({ url: `redis://127.0.0.1:${port}` });
  client.on("error", () => {});
  await waitFor("redis-server", async () => {
    if (!client.isOpen) await client.connect();
    return (await client.ping()) === "PONG";
  });
  t.after(() => client.destroy());
  return { port, url: `redis://127.0.0.1:${port}`, client, child };
}

/**
 * A free port whose cluster bus port (port + 10000) is free too, from 10000–15999: below the
 * ephemeral range the other listeners get theirs from.
 */
async function freeClusterPort() {
  for (;;) {
    const port = 10000 + Math.floor(Math.random() * 6000);
    const free = (p) =>
      new Promise((resolve) => {
        const server = createServer();
        server.once("error", () => resolve(false));
        server.listen(p, "127.0.0.1", () => server.close(() => resolve(true)));
      });
    if ((await free(port)) && (await free(port + 10000))) return port;
  }
}

/**
 * A Redis Cluster of `masters` redis-server processes (no replicas), created with
 * `redis-cli --cluster create`; `client` is a node-redis cluster client. Everything is killed
 * and removed when the test ends.
 */
export async function startRedisCluster(t, masters = 3) {
  const dir = mkdtempSync(path.join(tmpdir(), "wsgate-cluster-"));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const ports = [];
  while (ports.length < masters) {
    const port = await freeClusterPort();
    if (!ports.includes(port)) ports.push(port);
  }
  for (const port of ports) {
    spawnManaged(t, "redis-server", [
      "--port", String(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
      "--cluster-enabled", "yes", "--cluster-node-timeout", "1000",
      "--cluster-config-file", `nodes-${port}.conf`, "--dir", dir,
    ]);
  }
  for (const port of ports) {
    await waitFor(`redis-server ${port}`, async () => {
      const c = createClient({ url: `redis://127.0.0.1:${port}` });
      c.on("error", () => {});
      try {
        await c.connect();
        return (await c.ping()) === "PONG";
      } finally {
        c.destroy();
      }
    });
  }
  execFileSync("redis-cli", ["--cluster", "create", ...ports.map((p) => `127.0.0.1:${p}`), "--cluster-yes"], { stdio: "ignore" });
  for (const port of ports) {
    await waitFor(`cluster state ok on ${port}`, async () => {
      const c = createClient({ url: `redis://127.0.0.1:${port}` });
      c.on("error", () => {});
      try {
        await c.connect();
        return (await c.sendCommand(["CLUSTER", "INFO"])).includes("cluster_state:ok");
      } finally {
        c.destroy();
      }
    });
  }
  const rootNodes = ports.map((p) => ({ url: `redis://127.0.0.1:${p}` }));
  const client = createCluster({ rootNodes });
  client.on("error", () => {});
  await client.connect();
  t.after(() => client.destroy());
  return { ports, rootNodes, urls: rootNodes.map((n) => n.url).join(","), client };
}

/** Starts the wsgate binary with `args` (and `env`) and waits until it answers /healthz. */
export async function startWsgate(t, args, env = {}) {
  const port = await freePort();
  const child = spawnManaged(t, WSGATE_BIN, ["--listen", `127.0.0.1:${port}`, ...args], env);
  const url = `http://127.0.0.1:${port}`;
  await waitFor(`wsgate on ${port}`, async () => (await fetch(`${url}/healthz`)).ok).catch((e) => {
    throw new Error(`${e.message}\n${child.logs()}`);
  });
  return { port, url, child };
}

/** A gateway node (examples/cluster_node) that broadcasts the JSON lines written to it. */
export async function startClusterNode(t, args, port) {
  port ??= await freePort();
  const child = spawnManaged(t, CLUSTER_NODE_BIN, ["--listen", `127.0.0.1:${port}`, ...args], {}, "pipe");
  const url = `http://127.0.0.1:${port}`;
  await waitFor(`cluster node on ${port}`, async () => (await fetch(`${url}/healthz`)).ok).catch((e) => {
    throw new Error(`${e.message}\n${child.logs()}`);
  });
  const broadcast = (line) => child.stdin.write(JSON.stringify(line) + "\n");
  const metrics = async () => (await fetch(`${url}/metrics`)).text();
  return { port, url, child, broadcast, metrics };
}

/** How many nodes subscribe to the request channel of `nsp` (what Node counts as servers). */
export async function serverCount(redisClient, nsp = "/") {
  const counts = await redisClient.pubSubNumSub(`socket.io-request#${nsp}#`);
  return Object.values(counts)[0];
}

export async function startEcho(t) {
  const port = await freePort();
  const child = spawnManaged(t, ECHO_BIN, ["--listen", `127.0.0.1:${port}`]);
  const url = `http://127.0.0.1:${port}`;
  await waitFor(`echo on ${port}`, async () => (await fetch(`${url}/healthz`)).ok);
  return { port, url, child };
}

const USER_IDS = { alice: 42, zero: 0, bob: 7 };

/**
 * The Express app whose sessions wsgate must honour: express-session + passport, with
 * connect-redis on `redisUrl`, or with `store` (another express-session store) when given.
 */
export async function startExpressApp(t, { redisUrl, secret, staticDir, store, redisClient }) {
  let client;
  if (redisClient) {
    // A client the caller owns (a node-redis cluster client, say).
    store = new RedisStore({ client: redisClient });
  } else if (!store) {
    client = createClient({ url: redisUrl });
    await client.connect();
    store = new RedisStore({ client });
  }
  const app = express();
  app.use(express.urlencoded({ extended: false }));
  app.use(
    session({
      store,
      secret,
      resave: false,
      saveUninitialized: false,
      cookie: { maxAge: 3600000 },
    }),
  );
  passport.use(
    new LocalStrategy((username, password, done) =>
      password === "pw" ? done(null, { id: USER_IDS[username] ?? 42, name: username }) : done(null, false),
    ),
  );
  passport.serializeUser((user, done) => done(null, user.id));
  passport.deserializeUser((id, done) => done(null, { id }));
  app.use(passport.initialize());
  app.use(passport.session());
  app.post("/login", passport.authenticate("local"), (req, res) => res.json({ user: req.user }));
  app.post("/logout", (req, res, next) => req.logout((err) => (err ? next(err) : res.json({ ok: true }))));
  app.get("/me", (req, res) => res.json({ user: req.user ?? null }));
  if (staticDir) app.use(express.static(staticDir));
  const server = app.listen(0, "127.0.0.1");
  await once(server, "listening");
  t.after(async () => {
    server.close();
    await client?.destroy();
  });
  return { url: `http://127.0.0.1:${server.address().port}`, client };
}

/** Logs in through the Express app; returns the `connect.sid=…` cookie pair it set. */
export async function login(appUrl, username = "alice") {
  const res = await fetch(`${appUrl}/login`, {
    method: "POST",
    headers: { "content-type": "application/x-www-form-urlencoded" },
    body: new URLSearchParams({ username, password: "pw" }),
  });
  if (!res.ok) throw new Error(`login failed: ${res.status}`);
  const setCookie = res.headers.getSetCookie().find((c) => c.startsWith("connect.sid="));
  return setCookie.split(";")[0];
}

/** The official client, as a page would configure it, plus the cookie a browser would attach. */
export function connectClient(url, { cookie, nsp = "/", auth, extraHeaders = {}, ...opts } = {}) {
  return io(url + nsp, {
    transports: ["websocket"],
    withCredentials: true,
    forceNew: true,
    reconnection: false,
    extraHeaders: cookie ? { cookie, ...extraHeaders } : extraHeaders,
    auth,
    ...opts,
  });
}

/** Resolves with the socket once connected, rejects with the connect_error. */
export function connected(socket, timeoutMs = 5000) {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error("no connect within timeout")), timeoutMs);
    socket.once("connect", () => {
      clearTimeout(timer);
      resolve(socket);
    });
    socket.once("connect_error", (err) => {
      clearTimeout(timer);
      reject(err);
    });
  });
}

export function nextEvent(socket, event, timeoutMs = 5000) {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`no ${event} within timeout`)), timeoutMs);
    socket.once(event, (...args) => {
      clearTimeout(timer);
      resolve(args);
    });
  });
}

function nginxBinary() {
  for (const candidate of ["nginx", "/usr/sbin/nginx"]) {
    try {
      execFileSync(candidate, ["-v"], { stdio: "ignore" });
      return candidate;
    } catch {
      // try the next
    }
  }
  throw new Error("nginx is not installed (.ci/run installs it)");
}

/** A real nginx started from deploy/nginx.conf in front of `upstreamPorts`; `edit` may change
 * the site config (e.g. add the app's `location /`). */
export async function startNginx(t, upstreamPorts, edit = (site) => site) {
  const dir = mkdtempSync(path.join(tmpdir(), "wsgate-nginx-"));
  const port = await freePort();
  let site = readFileSync(path.join(REPO_ROOT, "deploy/nginx.conf"), "utf8");
  site = site
    .replace("127.0.0.1:3001", `127.0.0.1:${upstreamPorts[0]}`)
    .replace("127.0.0.1:3002", `127.0.0.1:${upstreamPorts[1]}`)
    .replace(/listen 80;/, `listen 127.0.0.1:${port};`);
  site = edit(site);
  writeFileSync(path.join(dir, "wsgate.conf"), site);
  for (const sub of ["body", "proxy", "fastcgi", "uwsgi", "scgi"]) mkdirSync(path.join(dir, sub));
  writeFileSync(
    path.join(dir, "nginx.conf"),
    `daemon off;
worker_processes 1;
pid ${dir}/nginx.pid;
error_log ${dir}/error.log warn;
events { worker_connections 256; }
http {
  access_log off;
  client_body_temp_path ${dir}/body;
  proxy_temp_path ${dir}/proxy;
  fastcgi_temp_path ${dir}/fastcgi;
  uwsgi_temp_path ${dir}/uwsgi;
  scgi_temp_path ${dir}/scgi;
  include ${dir}/wsgate.conf;
}
`,
  );
  // Its own process group: killing only the master would leave the worker behind.
  const child = spawn(nginxBinary(), ["-p", dir, "-e", `${dir}/error.log`, "-c", `${dir}/nginx.conf`], {
    stdio: "ignore",
    detached: true,
  });
  t.after(() => {
    try {
      process.kill(-child.pid, "SIGKILL");
    } catch {
      // already gone
    }
    rmSync(dir, { recursive: true, force: true });
  });
  const url = `http://127.0.0.1:${port}`;
  await waitFor("nginx", async () => (await fetch(`${url}/socket.io/?EIO=4&transport=websocket`)).status === 400);
  return { url };
}

/** examples/echo's handlers on a Node socket.io server, for tests that compare the two. */
export function echoHandlers(server) {
  for (const nsp of [server.of("/"), server.of("/custom")]) {
    nsp.on("connection", (socket) => {
      socket.emit("auth", socket.handshake.auth);
      socket.on("message", (...args) => socket.emit("message-back", ...args.filter((a) => typeof a !== "function")));
      socket.on("message-with-ack", (...args) => args.pop()(...args));
      socket.on("kick-me", () => socket.disconnect());
    });
  }
}

/// In a mixed cluster (Node socket.io and two gateway nodes, `g1` and `g2` being cluster-node
/// processes): a gateway's broadcast reaches the Node client and every gateway client, binary
/// included, and a room broadcast reaches the Node client in that room ("node-room").
export async function gatewayBroadcastsReachEveryone({ g1, g2, nodeClient, clients }) {
  let got = Promise.all([nodeClient, ...clients].map((c) => nextEvent(c, "from-gateway")));
  g1.broadcast({ event: "from-gateway", args: [1, "two", { $binary: "AQID" }] });
  for (const [one, two, bin] of await got) {
    assert.deepEqual([one, two, [...bin]], [1, "two", [1, 2, 3]]);
  }
  got = nextEvent(nodeClient, "room-from-gateway");
  g2.broadcast({ rooms: ["node-room"], event: "room-from-gateway", args: [true] });
  assert.deepEqual(await got, [true]);
}
