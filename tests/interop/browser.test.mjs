// Real Chromium (Debian's, driven by playwright-core) against real servers: the demo, client-js
// on a page of a real Express + passport app behind nginx in front of two gateways, and the
// official socket.io-client bundle with default options on the same page. Screenshots of each
// page go to target/browser-screenshots/ (CI artifacts, not committed).
import { test } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { mkdirSync, mkdtempSync, copyFileSync, writeFileSync, rmSync, existsSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { createRequire } from "node:module";
import { chromium } from "playwright-core";
import {
  WSGATE_BIN,
  REPO_ROOT,
  freePort,
  waitFor,
  startRedis,
  startExpressApp,
  startClusterNode,
  startEcho,
  startNginx,
  echoHandlers,
} from "./helpers.mjs";

const CHROMIUM = process.env.CHROMIUM_BIN ?? "/usr/bin/chromium";
const SHOTS = path.join(REPO_ROOT, "target/browser-screenshots");

async function browserPage(t) {
  if (!existsSync(CHROMIUM)) throw new Error(`no Chromium at ${CHROMIUM}: apt-get install -y chromium (.ci/run installs it)`);
  const browser = await chromium.launch({
    executablePath: CHROMIUM,
    // As root Chromium needs --no-sandbox; the others keep it off this machine's closed network.
    args: ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update", "--disable-sync", "--no-first-run"],
  });
  t.after(() => browser.close());
  const context = await browser.newContext();
  const page = await context.newPage();
  // Page errors show in the test output.
  page.on("pageerror", (e) => console.error(`page error: ${e.message}`));
  return { browser, context, page };
}

async function shot(page, name) {
  mkdirSync(SHOTS, { recursive: true });
  await page.screenshot({ path: path.join(SHOTS, `${name}.png`), fullPage: true });
}

test("the demo: anonymous explained, log in, connected, live messages, log out closes the socket", async (t) => {
  const port = await freePort();
  // Its own process group: the demo's redis-server child goes with it.
  const demo = spawn(WSGATE_BIN, ["demo", "--listen", `127.0.0.1:${port}`], { stdio: ["ignore", "pipe", "pipe"], detached: true });
  let output = "";
  demo.stdout.on("data", (d) => (output += d));
  demo.stderr.on("data", (d) => (output += d));
  t.after(() => {
    try {
      process.kill(-demo.pid, "SIGTERM");
    } catch {
      // already gone
    }
  });
  const url = `http://127.0.0.1:${port}`;
  await waitFor("the demo", async () => (await fetch(`${url}/healthz`)).ok).catch((e) => {
    throw new Error(`${e.message}\n${output}`);
  });
  assert.match(output, /open http:\/\/127\.0\.0\.1:\d+ in a browser/);
  assert.doesNotMatch(output, /secret/i, "the demo never prints its secret");

  const { context, page } = await browserPage(t);
  await page.goto(url);
  await page.waitForSelector("#explain", { state: "visible" });
  assert.match(await page.textContent("#state"), /refused: Authentication error/);
  await shot(page, "demo-anonymous");

  await page.fill("#name", "alice");
  await page.click("#login-button");
  await page.waitForSelector("#state.connected");
  await page.waitForSelector("#messages li");
  assert.equal(await page.textContent("#user"), '"alice"');
  assert.match(await page.textContent("#rooms"), /user:alice/);
  assert.match(await page.textContent("#messages li"), /message #\d+, published by node/);
  // The chat goes through the inbound stream and the in-process backend, and comes back.
  await page.fill("#chat-text", "hello from the browser");
  await page.click("#chat-send");
  await page.waitForSelector("#chat li");
  assert.equal(await page.textContent("#chat li"), "alice: hello from the browser");
  assert.match(await page.textContent("#chat-ack"), /^stored as \d+-\d+$/);
  await shot(page, "demo-connected");

  // Logging out elsewhere (another tab: same cookies) closes this page's socket at once.
  const logout = await context.request.post(`${url}/logout`, { maxRedirects: 0 });
  assert.equal(logout.status(), 303);
  await page.waitForFunction(() => document.querySelector("#state").textContent.includes("io server disconnect"));
  await shot(page, "demo-logged-out");
});

/** The page of the Express app: loads a Socket.IO client and exposes helpers to the test. */
const APP_PAGE = `<!doctype html><html><head><meta charset="utf-8"><title>app</title></head>
<body><h1>app page</h1><pre id="log"></pre>
<script>
  window.log = (line) => { document.getElementById("log").textContent += line + "\\n"; };
  window.loginAs = (username) => fetch("/login", { method: "POST", body: new URLSearchParams({ username, password: "pw" }) }).then((r) => r.ok);
  window.loadScript = (src) => new Promise((resolve, reject) => {
    const s = document.createElement("script"); s.src = src; s.onload = resolve; s.onerror = reject; document.head.append(s);
  });
  window.next = (socket, event, ms = 8000) => new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error("no " + event)), ms);
    socket.once(event, (...args) => { clearTimeout(timer); resolve(args); });
  });
</script></body></html>`;

async function appBehindNginx(t, extra = []) {
  const redis = await startRedis(t);
  const staticDir = mkdtempSync(path.join(tmpdir(), "wsgate-page-"));
  t.after(() => rmSync(staticDir, { recursive: true, force: true }));
  writeFileSync(path.join(staticDir, "page.html"), APP_PAGE);
  const require = createRequire(import.meta.url);
  copyFileSync(
    path.join(path.dirname(require.resolve("socket.io-client/package.json")), "dist/socket.io.min.js"),
    path.join(staticDir, "official-socket.io.min.js"),
  );
  const app = await startExpressApp(t, { redisUrl: redis.url, secret: "new-secret", staticDir });
  const args = ["--redis-url", redis.url, "--session-secret", "new-secret", ...extra];
  const ports = [await freePort(), await freePort()];
  const nodes = [await startClusterNode(t, args, ports[0]), await startClusterNode(t, args, ports[1])];
  const appPort = new URL(app.url).port;
  // The app and wsgate on one origin, as deploy/nginx.conf suggests: the session cookie reaches both.
  const nginx = await startNginx(t, ports, (site) =>
    site.replace(
      "# location / {",
      `location / { proxy_pass http://127.0.0.1:${appPort}; proxy_set_header Host $http_host; }\n    # location / {`,
    ),
  );
  const channel = extra.includes("streams") ? "socket.io#/#" : "socket.io-request#/#";
  await waitFor("both nodes subscribed", async () => Object.values(await redis.client.pubSubNumSub(channel))[0] === 2);
  return { redis, app, nodes, ports, nginx, args };
}

test("client-js on an Express page behind nginx: refused anonymous, cookie login, acks, binary, reconnect", async (t) => {
  const { nodes, ports, nginx, args } = await appBehindNginx(t);
  const { page } = await browserPage(t);
  await page.goto(`${nginx.url}/page.html`);
  await page.evaluate(() => loadScript("/socket.io/socket.io.js"));

  const refused = await page.evaluate(async () => {
    const socket = io({ reconnectionDelay: 100 });
    const [err] = await next(socket, "connect_error");
    await new Promise((r) => setTimeout(r, 300));
    log("anonymous: " + err.message);
    return { message: err.message, active: socket.active };
  });
  assert.deepEqual(refused, { message: "Authentication error", active: false });

  assert.equal(await page.evaluate(() => loginAs("alice")), true);
  const connected = await page.evaluate(async () => {
    window.socket = io({ reconnectionDelay: 200, reconnectionDelayMax: 1000 });
    await next(socket, "connect");
    socket.on("disconnect", (reason) => log("disconnect: " + reason));
    socket.on("connect", () => log("reconnected"));
    const ack = await socket.timeout(3000).emitWithAck("hello", new Uint8Array([1, 2]));
    log("connected as " + socket.id + ", ack " + JSON.stringify(ack));
    return { id: socket.id, ack };
  });
  assert.equal(connected.id.length, 20);
  assert.equal(connected.ack.ok, true, "a client event with binary was stored in the inbound stream");
  assert.match(connected.ack.id, /^\d+-\d+$/, "the ack carries the stream entry id");

  // Binary from a gateway node to the page, through Redis.
  // Listen first (in the page), then publish, then collect.
  await page.evaluate(() => {
    window.bytes = next(socket, "bytes").then(([text, bytes]) => [text, [...new Uint8Array(bytes)]]);
  });
  nodes[0].broadcast({ rooms: ["user:42"], event: "bytes", args: ["b", { $binary: "AQID" }] });
  assert.deepEqual(await page.evaluate(() => window.bytes), ["b", [1, 2, 3]]);

  // Restart the gateway holding the socket: client-js reconnects by itself.
  const sessions = () => Promise.all(nodes.map(async (n) => Number(/^wsgate_connections (\d+)$/m.exec(await n.metrics())?.[1])));
  // The anonymous attempt's session may still be closing: wait for the page's one session.
  await waitFor("one session left", async () => (await sessions()).reduce((a, b) => a + b) === 1);
  const holder = (await sessions())[0] === 1 ? 0 : 1;
  await page.evaluate(() => {
    window.lost = next(socket, "disconnect", 10000);
  });
  nodes[holder].child.kill("SIGKILL");
  assert.deepEqual(await page.evaluate(() => window.lost), ["transport close"]);
  await startClusterNode(t, args, ports[holder]);
  await page.waitForFunction(() => socket.connected, null, { timeout: 15000 });
  await shot(page, "client-js-behind-nginx");
});

test("client-js in Chromium recovers its socket when its gateway is killed (streams adapter)", async (t) => {
  const { redis, nodes, ports, nginx } = await appBehindNginx(t, ["--adapter", "streams"]);
  const { page } = await browserPage(t);
  await page.goto(`${nginx.url}/page.html`);
  await page.evaluate(() => loadScript("/socket.io/socket.io.js"));
  assert.equal(await page.evaluate(() => loginAs("alice")), true);
  const first = await page.evaluate(async () => {
    window.socket = io({ reconnectionDelay: 200, reconnectionDelayMax: 500 });
    window.got = [];
    socket.on("tick", (n) => got.push(n));
    await next(socket, "connect");
    return { id: socket.id, recovered: socket.recovered };
  });
  assert.equal(first.recovered, false);
  const sessions = () => Promise.all(nodes.map(async (n) => Number(/^wsgate_connections (\d+)$/m.exec(await n.metrics())?.[1])));
  await waitFor("the page's session", async () => (await sessions()).reduce((a, b) => a + b) === 1);
  const holder = (await sessions())[0] === 1 ? 0 : 1;
  // An event gives the page its offset; the gateway keeps the socket's record while it lives.
  nodes[1 - holder].broadcast({ rooms: ["user:42"], event: "tick", args: [1] });
  await page.waitForFunction(() => got.length === 1, null, { timeout: 5000 });
  await waitFor("the socket's record", async () => (await redis.client.keys("sio:session:*")).length === 1);

  // The gateway holding it dies (nothing written at the end); events are published meanwhile.
  await page.evaluate(() => {
    window.lost = next(socket, "disconnect", 10000);
  });
  nodes[holder].child.kill("SIGKILL");
  assert.deepEqual(await page.evaluate(() => window.lost), ["transport close"]);
  nodes[1 - holder].broadcast({ rooms: ["user:42"], event: "tick", args: [2] });
  nodes[1 - holder].broadcast({ rooms: ["user:42"], event: "tick", args: [3] });
  // nginx sends the reconnect to the surviving gateway, which restores the socket.
  await page.waitForFunction(() => socket.connected, null, { timeout: 15000 });
  const back = await page.evaluate(async () => {
    await new Promise((r) => setTimeout(r, 200));
    return { id: socket.id, recovered: socket.recovered, got };
  });
  assert.deepEqual(back, { id: first.id, recovered: true, got: [1, 2, 3] });
  await shot(page, "client-js-recovered");
});

/** An HTTP server (not yet listening) serving client-js at /client.js and a blank page. */
async function clientJsPageServer() {
  const { createServer } = await import("node:http");
  const { readFileSync } = await import("node:fs");
  const script = readFileSync(path.join(REPO_ROOT, "client-js/dist/wsgate-client.js"));
  return createServer((req, res) => {
    if (req.url === "/client.js") {
      res.writeHead(200, { "content-type": "application/javascript" });
      return res.end(script);
    }
    res.writeHead(200, { "content-type": "text/html" });
    res.end("<!doctype html><title>node</title>");
  });
}

/** A Node socket.io 4.8 server with examples/echo's handlers, serving client-js and a page. */
async function startNodeEchoWithPage(t) {
  const { Server } = await import("socket.io");
  const httpServer = await clientJsPageServer();
  const server = new Server(httpServer, { transports: ["websocket"] });
  echoHandlers(server);
  httpServer.listen(0, "127.0.0.1");
  await new Promise((r) => httpServer.once("listening", r));
  // The browser is closed after this hook (hooks run in the order they were added): its
  // keep-alive connections are cut here, or close() waited for them and the file timed out
  // (seen twice this session, never on a rerun).
  t.after(
    () =>
      new Promise((r) => {
        server.close(() => r());
        httpServer.closeAllConnections();
      }),
  );
  return `http://127.0.0.1:${httpServer.address().port}`;
}

test("client-js in Chromium recovers its socket from Node socket.io with the streams adapter", async (t) => {
  const { Server } = await import("socket.io");
  const { createAdapter } = await import("@socket.io/redis-streams-adapter");
  // Hooks run in the order they are added: the server and its Redis clients go before Redis.
  const closing = [];
  t.after(async () => {
    for (const fn of closing.reverse()) await fn();
  });
  const redis = await startRedis(t);
  const httpServer = await clientJsPageServer();
  const client = redis.client.duplicate();
  client.on("error", () => {});
  await client.connect();
  const server = new Server(httpServer, {
    transports: ["websocket"],
    // Short blocking reads: the adapter disconnects its reader only once a read returns, and
    // rejects unhandled if its client is gone by then.
    adapter: createAdapter(client, { blockTimeInMs: 200 }),
    connectionStateRecovery: { maxDisconnectionDuration: 60000 },
  });
  server.on("connection", (socket) => socket.join("page"));
  httpServer.listen(0, "127.0.0.1");
  await new Promise((r) => httpServer.once("listening", r));
  closing.push(async () => {
    await new Promise((r) => {
      server.close(() => r());
      httpServer.closeAllConnections();
    });
    await waitFor("the adapter's reader gone", async () => (await redis.client.clientList()).length <= 2, 5000).catch(() => {});
    await Promise.resolve(client.destroy()).catch(() => {});
  });
  const url = `http://127.0.0.1:${httpServer.address().port}`;
  const { page } = await browserPage(t);
  await page.goto(url + "/");
  await page.addScriptTag({ url: "/client.js" });
  const firstId = await page.evaluate(async () => {
    window.socket = io({ reconnectionDelay: 200, reconnectionDelayMax: 500 });
    window.got = [];
    socket.on("tick", (n) => got.push(n));
    await new Promise((r) => socket.once("connect", r));
    return socket.id;
  });
  server.to("page").emit("tick", 1);
  await page.waitForFunction(() => got.length === 1, null, { timeout: 5000 });
  // The server drops the connection (recoverable); two events are missed.
  await page.evaluate(() => {
    window.lost = new Promise((r) => socket.once("disconnect", r));
  });
  server.sockets.sockets.get(firstId).conn.close();
  await page.evaluate(() => window.lost);
  server.to("page").emit("tick", 2);
  server.to("page").emit("tick", 3);
  await page.waitForFunction(() => socket.connected && got.length === 3, null, { timeout: 15000 });
  const back = await page.evaluate(() => ({ id: socket.id, recovered: socket.recovered, got }));
  assert.deepEqual(back, { id: firstId, recovered: true, got: [1, 2, 3] });
});

const browserServers = {
  "wsgate (examples/echo)": async (t) => ({ url: (await startEcho(t)).url, page: "/healthz", script: "/socket.io/socket.io.js" }),
  "Node socket.io 4.8": async (t) => ({ url: await startNodeEchoWithPage(t), page: "/", script: "/client.js" }),
};

for (const [name, start] of Object.entries(browserServers)) {
  test(`client-js in Chromium against ${name}: auth, namespaces, events, acks, timeouts, binary and Blob both ways`, async (t) => {
    const server = await start(t);
    const { page } = await browserPage(t);
    // A real origin first: Chromium refuses WebSockets to 127.0.0.1 from about:blank.
    await page.goto(server.url + server.page);
    await page.addScriptTag({ url: server.script });
    const result = await page.evaluate(async () => {
      const next = (socket, event) => new Promise((r) => socket.once(event, (...args) => r(args)));
      const bytes = (x) => [x instanceof ArrayBuffer, [...new Uint8Array(x)]];
      const socket = io({ auth: { token: "t" } });
      const [auth] = await next(socket, "auth");
      const custom = io("/custom", { auth: (cb) => cb({ via: "function" }) });
      const [customAuth] = await next(custom, "auth");
      const back = next(socket, "message-back");
      socket.emit("message", 1, { two: [true] }, new Uint8Array([1, 2]).buffer, new Uint16Array([258]), new Blob([new Uint8Array([7, 7])]));
      const [one, two, a, b, c] = await back;
      const acked = await socket.emitWithAck("message-with-ack", new Uint8Array([5]));
      let timedOut = null;
      await socket.timeout(200).emitWithAck("message", "nobody acks").catch((e) => (timedOut = e.message));
      const reason = new Promise((r) => socket.once("disconnect", r));
      socket.disconnect();
      custom.disconnect();
      return { auth, customAuth, one, two, binary: [a, b, c, acked].map(bytes), timedOut, reason: await reason, active: socket.active };
    });
    assert.deepEqual(result, {
      auth: { token: "t" },
      customAuth: { via: "function" },
      one: 1,
      two: { two: [true] },
      binary: [
        [true, [1, 2]],
        [true, [2, 1]],
        [true, [7, 7]],
        [true, [5]],
      ],
      timedOut: "operation has timed out",
      reason: "io client disconnect",
      active: false,
    });
  });
}

test("the official socket.io-client, default options, on the app page behind nginx: polling, upgrade, broadcasts", async (t) => {
  const { nodes, nginx } = await appBehindNginx(t);
  const { page } = await browserPage(t);
  const requests = [];
  page.on("request", (r) => requests.push(r.url()));
  await page.goto(`${nginx.url}/page.html`);
  await page.evaluate(() => loadScript("/official-socket.io.min.js"));
  assert.equal(await page.evaluate(() => loginAs("alice")), true);
  const transport = await page.evaluate(async () => {
    window.socket = io();
    await next(socket, "connect");
    const engine = socket.io.engine;
    if (engine.transport.name !== "websocket") await new Promise((r) => engine.once("upgrade", r));
    log("official client upgraded to " + engine.transport.name);
    return engine.transport.name;
  });
  assert.equal(transport, "websocket");
  assert.ok(requests.some((u) => u.includes("transport=polling")), "it started with polling");
  await page.evaluate(() => {
    window.notice = next(socket, "notice");
  });
  nodes[0].broadcast({ rooms: ["user:42"], event: "notice", args: ["from a gateway"] });
  assert.deepEqual(await page.evaluate(() => window.notice), ["from a gateway"]);
  await shot(page, "official-client-behind-nginx");
});
