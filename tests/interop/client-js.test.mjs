// client-js (wsgate's tiny browser client) against wsgate and against a Node socket.io 4.8
// server: the same behaviour tests pass on both, so it is a Socket.IO client, not a wsgate one.
// In Node 20 there is no global WebSocket: the `ws` package stands in, sending the cookie a
// browser would send.
import { test } from "node:test";
import assert from "node:assert/strict";
import { createServer } from "node:http";
import { once } from "node:events";
import { WebSocket as WsWebSocket } from "ws";
import { Server } from "socket.io";
import session from "express-session";
import { RedisStore } from "connect-redis";
import { createClient } from "redis";
import { io } from "../../client-js/dist/wsgate-client.esm.js";
import { startRedis, startWsgate, startExpressApp, startEcho, login, freePort, echoHandlers } from "./helpers.mjs";

/** A WebSocket constructor that sends `cookie` with the handshake, as a browser would. */
function withCookie(cookie) {
  return class extends WsWebSocket {
    constructor(url, protocols) {
      super(url, protocols, cookie ? { headers: { cookie } } : {});
    }
  };
}

function connect(url, opts = {}) {
  const { cookie, ...rest } = opts;
  return io(url, { reconnection: false, WebSocket: withCookie(cookie), ...rest });
}

function next(socket, event, timeoutMs = 5000) {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`no ${event} within ${timeoutMs} ms`)), timeoutMs);
    socket.once(event, (...args) => {
      clearTimeout(timer);
      resolve(args);
    });
  });
}

/** A Node socket.io 4.8 server with the handlers of examples/echo. */
async function startNodeEcho(t, port) {
  port ??= await freePort();
  const httpServer = createServer();
  const server = new Server(httpServer, { transports: ["websocket"] });
  echoHandlers(server);
  httpServer.listen(port, "127.0.0.1");
  await once(httpServer, "listening");
  const close = () => new Promise((r) => server.close(() => r()));
  t.after(close);
  return { url: `http://127.0.0.1:${port}`, port, close };
}

const servers = {
  "wsgate (examples/echo)": async (t) => (await startEcho(t)).url,
  "Node socket.io 4.8": async (t) => (await startNodeEcho(t)).url,
};

for (const [name, start] of Object.entries(servers)) {
  test(`client-js against ${name}: namespaces, auth, events, acks, binary both ways`, async (t) => {
    const url = await start(t);
    const socket = connect(url, { auth: { token: "abc" } });
    t.after(() => socket.disconnect());
    const [auth] = await next(socket, "auth");
    assert.deepEqual(auth, { token: "abc" }, "the CONNECT payload arrives");
    assert.equal(socket.connected, true);
    assert.equal(socket.id.length, 20);

    const custom = connect(url + "/custom", { auth: (cb) => cb({ via: "function" }) });
    t.after(() => custom.disconnect());
    assert.deepEqual((await next(custom, "auth"))[0], { via: "function" });

    // Plain and binary events, both ways; ArrayBuffer, typed array and nested binary.
    const back = next(socket, "message-back");
    socket.emit("message", 1, "two", { three: [true] }, new Uint8Array([1, 2, 3]), { nested: new Uint8Array([4]).buffer });
    const [one, two, three, bytes, nested] = await back;
    assert.deepEqual([one, two, three], [1, "two", { three: [true] }]);
    assert.ok(bytes instanceof ArrayBuffer, "binary arrives as ArrayBuffer, as in browsers");
    assert.deepEqual([...new Uint8Array(bytes)], [1, 2, 3]);
    assert.deepEqual([...new Uint8Array(nested.nested)], [4]);

    // Acks: callback, emitWithAck, and timeout(ms) with an error when nobody answers.
    const acked = await new Promise((resolve) => socket.emit("message-with-ack", "x", resolve));
    assert.equal(acked, "x");
    const binaryAck = await socket.emitWithAck("message-with-ack", new Uint8Array([9, 8]));
    assert.deepEqual([...new Uint8Array(binaryAck)], [9, 8]);
    assert.equal(await socket.timeout(2000).emitWithAck("message-with-ack", 7), 7);
    // Both servers handle "message" without acking it.
    await assert.rejects(socket.timeout(200).emitWithAck("message", "no ack"), { message: "operation has timed out" });

    // Emits made while disconnected are sent once connected.
    const late = connect(url, { autoConnect: false });
    t.after(() => late.disconnect());
    const lateBack = next(late, "message-back");
    late.emit("message", "buffered");
    late.connect();
    assert.deepEqual(await lateBack, ["buffered"]);

    // A client disconnect is final and says so.
    const gone = next(socket, "disconnect");
    socket.disconnect();
    assert.deepEqual(await gone, ["io client disconnect"]);
    assert.equal(socket.active, false);
  });
}

test("client-js reconnects with backoff after the server restarts, to either server", async (t) => {
  const port = await freePort();
  let node = await startNodeEcho(t, port);
  const socket = io(`http://127.0.0.1:${port}`, {
    WebSocket: withCookie(),
    reconnectionDelay: 100,
    reconnectionDelayMax: 300,
  });
  t.after(() => socket.disconnect());
  await next(socket, "connect");
  const lost = next(socket, "disconnect");
  await node.close();
  assert.deepEqual(await lost, ["transport close"]);
  assert.equal(socket.active, true, "a lost transport is retried");
  node = await startNodeEcho(t, port);
  await next(socket, "connect", 10000);
  // A server-side disconnect is final, as in socket.io-client.
  const kicked = next(socket, "disconnect");
  socket.emit("kick-me");
  assert.deepEqual(await kicked, ["io server disconnect"]);
  assert.equal(socket.active, false);
});

test("client-js with a session cookie: wsgate and Node socket.io + express-session agree", async (t) => {
  const redis = await startRedis(t);
  const app = await startExpressApp(t, { redisUrl: redis.url, secret: "new-secret" });
  const gw = await startWsgate(t, ["--redis-url", redis.url, "--session-secret", "new-secret"]);
  // The Node stack a team runs today, with the same rule: no passport user, no socket.
  const client = createClient({ url: redis.url });
  await client.connect();
  t.after(() => client.destroy());
  const httpServer = createServer();
  const nodeIo = new Server(httpServer, { transports: ["websocket"] });
  nodeIo.engine.use(session({ store: new RedisStore({ client }), secret: "new-secret", resave: false, saveUninitialized: false }));
  nodeIo.use((socket, next) =>
    socket.request.session?.passport?.user == null ? next(new Error("Authentication error")) : next(),
  );
  httpServer.listen(0, "127.0.0.1");
  await once(httpServer, "listening");
  t.after(() => new Promise((r) => nodeIo.close(() => r())));
  const nodeUrl = `http://127.0.0.1:${httpServer.address().port}`;

  const cookie = await login(app.url, "alice");
  for (const url of [gw.url, nodeUrl]) {
    const socket = connect(url, { cookie });
    t.after(() => socket.disconnect());
    await next(socket, "connect");

    const anonymous = io(url, { WebSocket: withCookie(), reconnectionDelay: 50 });
    t.after(() => anonymous.disconnect());
    const [err] = await next(anonymous, "connect_error");
    assert.equal(err.message, "Authentication error", url);
    assert.equal(anonymous.active, false, "a CONNECT_ERROR stops the retries");
    let retried = false;
    anonymous.on("connect_error", () => (retried = true));
    await new Promise((r) => setTimeout(r, 300));
    assert.equal(retried, false);
  }
});

test("client-js bundle: within its size budget and built from its sources", async () => {
  const { execFileSync } = await import("node:child_process");
  const out = execFileSync("npm", ["run", "--silent", "check"], { cwd: new URL("../../client-js/", import.meta.url) });
  assert.match(out.toString(), /matches the sources; wsgate-client\.min\.js is \d+ bytes gzipped \(budget 4096\)/);
});

test("wsgate serves client-js at /socket.io/socket.io.js with revalidation", async (t) => {
  const echo = await startEcho(t);
  for (const name of ["socket.io.js", "socket.io.min.js", "socket.io.esm.min.js"]) {
    const res = await fetch(`${echo.url}/socket.io/${name}`);
    assert.equal(res.status, 200, name);
    assert.match(res.headers.get("content-type"), /^application\/javascript/);
    const etag = res.headers.get("etag");
    assert.ok(etag, "an ETag");
    const again = await fetch(`${echo.url}/socket.io/${name}`, { headers: { "if-none-match": etag } });
    assert.equal(again.status, 304);
  }
  const script = await (await fetch(`${echo.url}/socket.io/socket.io.js`)).text();
  assert.match(script, /var io=__wsgate\.io;/, "the script build defines io");
});
