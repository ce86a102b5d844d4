// A mixed cluster on one Redis: two wsgate nodes and one Node socket.io server with
// @socket.io/redis-adapter, plus the official @socket.io/redis-emitter. Node must see gateway
// sockets as its own, and the other way round.
import { describe, it, before, after } from "node:test";
import assert from "node:assert/strict";
import { createServer } from "node:http";
import { once } from "node:events";
import { Server } from "socket.io";
import { createAdapter } from "@socket.io/redis-adapter";
import { Emitter } from "@socket.io/redis-emitter";
import { Redis as IORedis } from "ioredis";
import { io as ioClient } from "socket.io-client";
import {
  startRedis,
  startExpressApp,
  startClusterNode,
  login,
  connectClient,
  connected,
  nextEvent,
  waitFor,
  gatewayBroadcastsReachEveryone,
} from "./helpers.mjs";

describe("mixed cluster: 2 gateways + Node socket.io + emitter", () => {
  const cleanups = [];
  const ctx = { after: (fn) => cleanups.push(fn) };
  after(async () => {
    for (const fn of cleanups.reverse()) await fn();
  });

  let redis, app, g1, g2, nodeIo, emitter, alice, bob, nodeClient, aliceCookie, bobCookie;

  const gatewayArgs = (url) => ["--redis-url", url, "--session-secret", "new-secret"];

  before(async () => {
    redis = await startRedis(ctx);
    app = await startExpressApp(ctx, { redisUrl: redis.url, secret: "new-secret" });
    g1 = await startClusterNode(ctx, gatewayArgs(redis.url));
    g2 = await startClusterNode(ctx, gatewayArgs(redis.url));

    // The Node socket.io node, exactly as a team runs it today.
    const pub = new IORedis(redis.port, "127.0.0.1");
    const sub = pub.duplicate();
    const httpServer = createServer();
    nodeIo = new Server(httpServer, { adapter: createAdapter(pub, sub) });
    nodeIo.on("connection", (socket) => {
      socket.data = { user: "node-user" };
      socket.join("node-room");
    });
    httpServer.listen(0, "127.0.0.1");
    await once(httpServer, "listening");
    ctx.after(async () => {
      nodeIo.close();
      pub.disconnect();
      sub.disconnect();
    });
    const emitterRedis = new IORedis(redis.port, "127.0.0.1");
    ctx.after(() => emitterRedis.disconnect());
    emitter = new Emitter(emitterRedis);

    await waitFor("3 servers on the request channel", async () => {
      const counts = await redis.client.pubSubNumSub("socket.io-request#/#");
      return Object.values(counts)[0] === 3;
    });

    aliceCookie = await login(app.url, "alice"); // user 42
    bobCookie = await login(app.url, "bob"); // user 7
    alice = await connected(connectClient(g1.url, { cookie: aliceCookie }));
    bob = await connected(connectClient(g2.url, { cookie: bobCookie }));
    nodeClient = await connected(
      ioClient(`http://127.0.0.1:${httpServer.address().port}`, { transports: ["websocket"], forceNew: true }),
    );
    ctx.after(() => [alice, bob, nodeClient].forEach((s) => s.disconnect()));
  });

  it("the emitter's emit and to/except reach gateway sockets", async () => {
    let got = Promise.all([nextEvent(alice, "hello"), nextEvent(bob, "hello"), nextEvent(nodeClient, "hello")]);
    emitter.emit("hello", "world", 1, { a: true }, Buffer.from([1, 2, 3]));
    for (const [w, n, o, b] of await got) {
      assert.deepEqual([w, n, o], ["world", 1, { a: true }]);
      assert.deepEqual([...b], [1, 2, 3]);
    }

    got = nextEvent(alice, "for-42");
    const notBob = new Promise((resolve, reject) => {
      bob.once("for-42", () => reject(new Error("bob is not user 42")));
      setTimeout(resolve, 300);
    });
    emitter.to("user:42").emit("for-42", "x");
    assert.deepEqual(await got, ["x"]);
    await notBob;

    got = nextEvent(bob, "except-42");
    const notAlice = new Promise((resolve, reject) => {
      alice.once("except-42", () => reject(new Error("alice was excepted")));
      setTimeout(resolve, 300);
    });
    emitter.except("user:42").emit("except-42");
    await got;
    await notAlice;
  });

  it("the emitter's socketsJoin / socketsLeave / serverSideEmit apply on gateways", async () => {
    emitter.in("user:42").socketsJoin("team");
    await waitFor("alice in team", async () => (await nodeIo.in("team").fetchSockets()).length === 1);
    const [remote] = await nodeIo.in("team").fetchSockets();
    assert.equal(remote.id, alice.id);

    emitter.in("user:42").socketsLeave("team");
    await waitFor("team empty", async () => (await nodeIo.in("team").fetchSockets()).length === 0);

    const nodeGot = new Promise((resolve) => nodeIo.once("srv-ev", (...args) => resolve(args)));
    const before = await g1.metrics();
    emitter.serverSideEmit("srv-ev", 1, "2");
    assert.deepEqual(await nodeGot, [1, "2"]);
    await waitFor("gateway counted the server-side emit", async () => {
      const m = await g1.metrics();
      const count = (text) => Number(/wsgate_adapter_messages_total\{reason="server_side_emit"\} (\d+)/.exec(text)?.[1] ?? 0);
      return count(m) === count(before) + 1;
    });
  });

  it("broadcasts flow both ways between Node and gateways, binary included", async () => {
    // Node → gateways.
    let got = Promise.all([nextEvent(alice, "from-node"), nextEvent(bob, "from-node")]);
    nodeIo.emit("from-node", Buffer.from("héllo"), { n: 1.5, big: 2 ** 40, neg: -300, date: new Date(0) });
    for (const [buf, obj] of await got) {
      assert.equal(Buffer.from(buf).toString(), "héllo");
      assert.deepEqual(obj, { n: 1.5, big: 2 ** 40, neg: -300, date: "1970-01-01T00:00:00.000Z" });
    }
    got = nextEvent(bob, "to-socket-id");
    nodeIo.to(bob.id).emit("to-socket-id", 1);
    assert.deepEqual(await got, [1]);

    // Gateway → Node and the other gateway.
    await gatewayBroadcastsReachEveryone({ g1, g2, nodeClient, clients: [bob, alice] });
  });

  it("fetchSockets lists gateway sockets with rooms and data; allRooms includes gateway rooms", async () => {
    const sockets = await nodeIo.fetchSockets();
    const byId = Object.fromEntries(sockets.map((s) => [s.id, s]));
    assert.ok(byId[alice.id] && byId[bob.id] && byId[nodeClient.id], "all three sockets are listed");
    assert.deepEqual(byId[alice.id].data, { user: 42 });
    assert.deepEqual(byId[bob.id].data, { user: 7 });
    assert.ok(byId[alice.id].rooms.has("user:42"));
    assert.ok(byId[alice.id].rooms.has(alice.id));
    assert.ok([...byId[alice.id].rooms].some((r) => r.startsWith("session:")));
    assert.equal(byId[alice.id].handshake.url, "/socket.io/?EIO=4&transport=websocket");
    assert.equal(byId[alice.id].handshake.headers.cookie, undefined, "cookies never leave the gateway");

    const only42 = await nodeIo.in("user:42").fetchSockets();
    assert.deepEqual(only42.map((s) => s.id), [alice.id]);

    const rooms = await nodeIo.of("/").adapter.allRooms();
    for (const room of ["user:42", "user:7", "node-room", alice.id, bob.id]) {
      assert.ok(rooms.has(room), `allRooms has ${room}`);
    }
  });

  it("timeout().emitWithAck from Node collects acks from gateway clients", async () => {
    alice.on("question", (n, cb) => cb({ from: "alice", answer: n * 2 }));
    bob.on("question", (n, cb) => cb({ from: "bob", answer: n * 3, bin: Buffer.from([9]) }));
    nodeClient.on("question", (n, cb) => cb({ from: "node", answer: n }));
    const answers = await nodeIo.timeout(3000).emitWithAck("question", 7);
    const byFrom = Object.fromEntries(answers.map((a) => [a.from, a]));
    assert.equal(answers.length, 3);
    assert.equal(byFrom.alice.answer, 14);
    assert.equal(byFrom.bob.answer, 21);
    assert.deepEqual([...byFrom.bob.bin], [9]);
    assert.equal(byFrom.node.answer, 7);
  });

  it("serverSideEmitWithAck gets an answer from every gateway instead of timing out", async () => {
    const responses = await nodeIo.serverSideEmitWithAck("anyone-there", 1);
    assert.deepEqual(responses, [[], []], "each gateway answers with an empty result");
  });

  it("in(room).disconnectSockets() from Node kicks gateway sockets", async () => {
    const victim = await connected(connectClient(g2.url, { cookie: aliceCookie }));
    const reason = nextEvent(victim, "disconnect");
    const aliceReason = nextEvent(alice, "disconnect");
    nodeIo.in("user:42").disconnectSockets(true);
    assert.deepEqual((await reason)[0], "io server disconnect");
    assert.deepEqual((await aliceReason)[0], "io server disconnect");
    assert.equal(bob.connected, true, "other users stay connected");
  });

  it("the emitter's disconnectSockets(true) kicks gateway sockets", async () => {
    const reason = nextEvent(bob, "disconnect");
    emitter.in("user:7").disconnectSockets(true);
    assert.deepEqual((await reason)[0], "io server disconnect");
  });
});
