// A mixed cluster on the Redis Streams adapter: two wsgate nodes with --adapter streams and one
// Node socket.io 4.8 server with @socket.io/redis-streams-adapter 0.3 (node-redis) and
// connection state recovery, on one Redis. Broadcasts and requests go both ways, and a client
// recovers Node → wsgate and wsgate → Node (same socket id, missed events replayed, `recovered`
// true); a user logged out while away is refused.
import { describe, it, before, after } from "node:test";
import assert from "node:assert/strict";
import { createServer } from "node:http";
import { once } from "node:events";
import { Server } from "socket.io";
import { createAdapter } from "@socket.io/redis-streams-adapter";
import { createClient } from "redis";
import { io as ioClient } from "socket.io-client";
import { WebSocket as WsWebSocket } from "ws";
import { io as clientJs } from "../../client-js/dist/wsgate-client.esm.js";
import {
  startRedis,
  startExpressApp,
  startClusterNode,
  login,
  connectClient,
  connected,
  nextEvent,
  waitFor,
} from "./helpers.mjs";

describe("streams adapter: 2 gateways + Node socket.io with connection state recovery", () => {
  const cleanups = [];
  const ctx = { after: (fn) => cleanups.push(fn) };
  after(async () => {
    for (const fn of cleanups.reverse()) await fn();
  });

  let redis, app, g1, g2, nodeIo, nodeUrl, alice, bob, nodeClient, aliceCookie;

  before(async () => {
    redis = await startRedis(ctx);
    app = await startExpressApp(ctx, { redisUrl: redis.url, secret: "new-secret" });
    const args = ["--redis-url", redis.url, "--session-secret", "new-secret", "--adapter", "streams"];
    g1 = await startClusterNode(ctx, args);
    g2 = await startClusterNode(ctx, args);

    const client = createClient({ url: redis.url });
    client.on("error", () => {});
    await client.connect();
    const httpServer = createServer();
    nodeIo = new Server(httpServer, {
      adapter: createAdapter(client),
      // Authentication runs on recovery too (Node's default skips it).
      connectionStateRecovery: { maxDisconnectionDuration: 120000, skipMiddlewares: false },
    });
    // The Node app's own authentication: the user rides in socket.data, as wsgate keeps it.
    nodeIo.use((socket, next) => {
      socket.data = { user: socket.handshake.auth.user ?? "node-user" };
      next();
    });
    nodeIo.on("connection", (socket) => {
      if (!socket.recovered) socket.join(socket.data.user === 42 ? "user:42" : "node-room");
    });
    httpServer.listen(0, "127.0.0.1");
    await once(httpServer, "listening");
    nodeUrl = `http://127.0.0.1:${httpServer.address().port}`;
    ctx.after(async () => {
      nodeIo.close();
      await new Promise((resolve) => setTimeout(resolve, 100));
      await Promise.resolve(client.destroy()).catch(() => {});
    });

    // Node counts servers by the public channel's subscribers: each node exactly once.
    await waitFor(
      "3 servers on the public channel",
      async () => Object.values(await redis.client.pubSubNumSub("socket.io#/#"))[0] === 3,
    );
    aliceCookie = await login(app.url, "alice"); // user 42
    const bobCookie = await login(app.url, "bob"); // user 7
    alice = await connected(connectClient(g1.url, { cookie: aliceCookie }));
    bob = await connected(connectClient(g2.url, { cookie: bobCookie }));
    nodeClient = await connected(ioClient(nodeUrl, { transports: ["websocket"], forceNew: true }));
    ctx.after(() => [alice, bob, nodeClient].forEach((s) => s.disconnect()));
  });

  it("broadcasts flow both ways between Node and gateways, binary included, with offsets", async () => {
    const got = Promise.all([nextEvent(alice, "from-node"), nextEvent(bob, "from-node")]);
    nodeIo.emit("from-node", Buffer.from("héllo"), { n: 1.5 });
    for (const [buf, obj, offset] of await got) {
      assert.equal(Buffer.from(buf).toString(), "héllo");
      assert.deepEqual(obj, { n: 1.5 });
      assert.match(offset, /^[0-9]+-[0-9]+$/, "the stream entry id rides as the last argument");
    }
    // Gateway → Node and the other gateway; the Node client gets the offset appended too.
    const fromGateway = Promise.all([nodeClient, bob, alice].map((c) => nextEvent(c, "from-gateway")));
    g1.broadcast({ event: "from-gateway", args: [1, "two", { $binary: "AQID" }] });
    for (const [one, two, bin, offset] of await fromGateway) {
      assert.deepEqual([one, two, [...bin]], [1, "two", [1, 2, 3]]);
      assert.match(offset, /^[0-9]+-[0-9]+$/);
    }
    const toRoom = nextEvent(nodeClient, "room-from-gateway");
    g2.broadcast({ rooms: ["node-room"], event: "room-from-gateway", args: [true] });
    assert.equal((await toRoom)[0], true);
  });

  it("Node's requests are answered by the gateways: fetchSockets, serverSideEmitWithAck, acks", async () => {
    const sockets = await nodeIo.fetchSockets();
    const byId = Object.fromEntries(sockets.map((s) => [s.id, s]));
    assert.ok(byId[alice.id] && byId[bob.id] && byId[nodeClient.id], "all three sockets are listed");
    assert.deepEqual(byId[alice.id].data, { user: 42 });
    assert.equal(byId[alice.id].handshake.headers.cookie, undefined, "cookies never leave the gateway");
    const responses = await nodeIo.serverSideEmitWithAck("anyone-there", 1);
    assert.equal(responses.length, 2, "each gateway answers");
    alice.on("question", (n, cb) => cb({ from: "alice", answer: n * 2 }));
    bob.on("question", (n, cb) => cb({ from: "bob", answer: n * 3 }));
    nodeClient.on("question", (n, cb) => cb({ from: "node", answer: n }));
    const answers = await nodeIo.timeout(3000).emitWithAck("question", 7);
    assert.deepEqual(answers.map((a) => a.from).sort(), ["alice", "bob", "node"]);
    // Room operations from Node are stream entries the gateways apply.
    nodeIo.in("user:42").socketsJoin("team");
    await waitFor("alice in team", async () => (await nodeIo.in("team").fetchSockets()).length === 1);
  });

  /** A client that connected to `from`, got an event (its offset), lost its connection, and
   * missed two events; returns what it needs to come back. */
  async function dropAfterAnEvent(first, room, closeIt) {
    const offsetEvent = nextEvent(first, "before");
    nodeIo.to(room).emit("before", 0);
    await offsetEvent;
    const { _pid: pid, _lastOffset: offset, id } = first;
    assert.ok(pid && offset, "the client holds a pid and an offset");
    await closeIt(first);
    // Missed meanwhile.
    nodeIo.to(room).emit("missed", 1);
    nodeIo.to(room).emit("missed", 2);
    return { pid, offset, id };
  }

  /** The official client, reconnecting with the pid and offset it holds. */
  function comeBack(url, { pid, offset }, opts) {
    const socket = ioClient(url, { transports: ["websocket"], forceNew: true, autoConnect: false, reconnection: false, ...opts });
    socket._pid = pid;
    socket._lastOffset = offset;
    const missed = [];
    socket.on("missed", (n) => missed.push(n));
    socket.connect();
    return { socket, missed };
  }

  it("a client recovers from a Node node onto a gateway", async () => {
    const first = await connected(
      ioClient(nodeUrl, { transports: ["websocket"], forceNew: true, reconnection: false, auth: { user: 42 } }),
    );
    const held = await dropAfterAnEvent(first, "user:42", async (s) => {
      const gone = nextEvent(s, "disconnect");
      nodeIo.sockets.sockets.get(s.id).conn.close(); // the transport closes: recoverable
      await gone;
    });
    await waitFor("Node persisted the session", async () => (await redis.client.exists(`sio:session:${held.pid}`)) === 1);
    const { socket, missed } = comeBack(g1.url, held, { extraHeaders: { cookie: aliceCookie } });
    await connected(socket);
    assert.equal(socket.recovered, true);
    assert.equal(socket.id, held.id);
    assert.deepEqual(missed, [1, 2], "missed events replayed before the connect, in order");
    socket.disconnect();
  });

  it("a client recovers from a gateway onto a Node node", async () => {
    const first = await connected(connectClient(g2.url, { cookie: aliceCookie }));
    const held = await dropAfterAnEvent(first, "user:42", async (s) => {
      const gone = nextEvent(s, "disconnect");
      s.io.engine.close(); // the connection drops
      await gone;
    });
    await waitFor("the gateway wrote the record for the window", async () => {
      const ttl = await redis.client.pTTL(`sio:session:${held.pid}`);
      return ttl > 0 && ttl <= 120000;
    });
    const { socket, missed } = comeBack(nodeUrl, held, { auth: { user: 42 } });
    await connected(socket);
    assert.equal(socket.recovered, true);
    assert.equal(socket.id, held.id);
    assert.deepEqual(missed, [1, 2]);
    assert.ok(nodeIo.sockets.sockets.get(socket.id).rooms.has("user:42"), "its rooms came along");
    socket.disconnect();
  });

  it("a user who logged out while away is refused, not recovered", async () => {
    const cookie = await login(app.url, "alice");
    const first = await connected(connectClient(g1.url, { cookie }));
    const held = await dropAfterAnEvent(first, "user:42", async (s) => {
      const gone = nextEvent(s, "disconnect");
      s.io.engine.close();
      await gone;
    });
    const out = await fetch(`${app.url}/logout`, { method: "POST", headers: { cookie } });
    assert.ok(out.ok);
    const { socket, missed } = comeBack(g1.url, held, { extraHeaders: { cookie } });
    const [err] = await nextEvent(socket, "connect_error");
    assert.equal(err.message, "Authentication error");
    assert.deepEqual(missed, []);
    socket.close();
  });

  for (const target of ["gateway", "Node"]) {
    it(`client-js recovers by itself after its connection drops (${target})`, async () => {
      const url = target === "gateway" ? g2.url : nodeUrl;
      const cookie = aliceCookie;
      const WebSocket = class extends WsWebSocket {
        constructor(u, protocols) {
          super(u, protocols, { headers: { cookie } });
        }
      };
      const socket = clientJs(url, { WebSocket, reconnectionDelay: 300, reconnectionDelayMax: 300, auth: { user: 42 } });
      await connected(socket);
      const firstId = socket.id;
      assert.equal(socket.recovered, false);
      const got = nextEvent(socket, "before");
      nodeIo.to("user:42").emit("before", 0);
      await got;
      // The gateway writes the record while the socket lives (Node only at the close); then the
      // connection drops (no close from the page).
      if (target === "gateway") {
        await waitFor("the socket's record", async () => (await redis.client.exists(`sio:session:${socket._pid}`)) === 1);
      }
      const missed = [];
      socket.on("missed", (n) => missed.push(n));
      const gone = nextEvent(socket, "disconnect");
      socket._ws.close();
      await gone;
      nodeIo.to("user:42").emit("missed", 1);
      nodeIo.to("user:42").emit("missed", 2);
      await nextEvent(socket, "connect", 5000);
      assert.equal(socket.recovered, true);
      assert.equal(socket.id, firstId);
      await waitFor("both missed events", async () => missed.length >= 2);
      assert.deepEqual(missed, [1, 2]);
      socket.disconnect();
    });
  }
});
