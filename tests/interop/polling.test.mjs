// The official socket.io-client as almost every page configures it: default options (HTTP
// long-polling first, then the upgrade to WebSocket), and polling alone for clients that cannot
// use WebSockets. Logged in through the real Express app; broadcasts from the real emitter.
import { test } from "node:test";
import assert from "node:assert/strict";
import { Emitter } from "@socket.io/redis-emitter";
import IORedis from "ioredis";
import { io } from "socket.io-client";
import { startRedis, startWsgate, startExpressApp, startEcho, login, connected, nextEvent } from "./helpers.mjs";

/** The official client with its default transports (no `transports` option). */
function defaultClient(url, { cookie, ...opts } = {}) {
  return io(url, {
    forceNew: true,
    reconnection: false,
    extraHeaders: cookie ? { cookie } : {},
    ...opts,
  });
}

function upgraded(socket, timeoutMs = 5000) {
  const engine = socket.io.engine;
  if (engine.transport.name === "websocket") return Promise.resolve("websocket");
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error("no upgrade within timeout")), timeoutMs);
    engine.once("upgrade", (transport) => {
      clearTimeout(timer);
      resolve(transport.name);
    });
    engine.once("upgradeError", (err) => {
      clearTimeout(timer);
      reject(err);
    });
  });
}

async function setup(t) {
  const redis = await startRedis(t);
  const app = await startExpressApp(t, { redisUrl: redis.url, secret: "new-secret" });
  const gw = await startWsgate(t, ["--redis-url", redis.url, "--session-secret", "new-secret"]);
  const emitterRedis = new IORedis(redis.port, "127.0.0.1");
  t.after(() => emitterRedis.disconnect());
  return { redis, app, gw, emitter: new Emitter(emitterRedis) };
}

for (const [mode, opts] of [
  ["default options (polling, then WebSocket)", {}],
  ["polling only", { transports: ["polling"] }],
]) {
  test(`official client, ${mode}: logged-in connect, emit with ack, emitter broadcast with binary`, async (t) => {
    const { app, gw, emitter } = await setup(t);
    const cookie = await login(app.url, "alice");
    const socket = defaultClient(gw.url, { cookie, ...opts });
    t.after(() => socket.disconnect());
    // Watch the first transport before anything can upgrade it.
    const firstTransport = socket.io.engine.transport.name;
    await connected(socket);
    assert.equal(firstTransport, "polling", "the official client starts with polling");
    if (opts.transports) {
      // Stays on polling: the open packet offered no upgrade it may take.
      await new Promise((r) => setTimeout(r, 300));
      assert.equal(socket.io.engine.transport.name, "polling");
    } else {
      assert.equal(await upgraded(socket), "websocket");
    }

    // A client event reaches the inbound stream, and its ack says where.
    const ack = await socket.timeout(3000).emitWithAck("hello", 1);
    assert.equal(ack.ok, true);
    assert.match(ack.id, /^\d+-\d+$/);

    // The emitter reaches the user's room, binary included.
    const got = nextEvent(socket, "notice");
    emitter.to("user:42").emit("notice", "text", Buffer.from([1, 2, 3]));
    const [text, bytes] = await got;
    assert.equal(text, "text");
    assert.deepEqual([...bytes], [1, 2, 3]);
  });
}

test("official client, default options: an anonymous page gets 'Authentication error' and stops", async (t) => {
  const { gw } = await setup(t);
  const socket = defaultClient(gw.url, { reconnection: true });
  t.after(() => socket.disconnect());
  const err = await connected(socket).then(
    () => assert.fail("anonymous must not connect"),
    (e) => e,
  );
  assert.equal(err.message, "Authentication error");
  assert.equal(socket.active, false, "a CONNECT_ERROR stops the client's retries");
});

for (const [mode, opts] of [
  ["default options", {}],
  ["polling only", { transports: ["polling"] }],
]) {
  test(`official client, ${mode}: binary both ways and acks against examples/echo`, async (t) => {
    const echo = await startEcho(t);
    const socket = defaultClient(echo.url, opts);
    t.after(() => socket.disconnect());
    await connected(socket);
    const payload = Buffer.from([0, 1, 2, 253, 254, 255]);
    const back = nextEvent(socket, "message-back");
    socket.emit("message", "x", payload, { nested: payload });
    const [x, data, nested] = await back;
    assert.equal(x, "x");
    assert.deepEqual([...data], [...payload]);
    assert.deepEqual([...nested.nested], [...payload]);
    const acked = await socket.timeout(3000).emitWithAck("message-with-ack", payload, "€");
    assert.deepEqual([...acked], [...payload]);
    // Many packets in both directions while the transport may be switching.
    const count = 200;
    const seen = [];
    socket.on("message-back", (n) => seen.push(n));
    for (let i = 0; i < count; i++) socket.emit("message", i);
    const deadline = Date.now() + 5000;
    while (seen.length < count && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
    assert.deepEqual(seen, [...Array(count).keys()], "every packet once, in order");
  });
}
