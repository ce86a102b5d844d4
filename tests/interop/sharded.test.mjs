// A mixed cluster on the sharded adapter (SPUBLISH/SSUBSCRIBE): two wsgate nodes with
// --adapter sharded and one Node socket.io 4.8 server with @socket.io/redis-adapter's
// createShardedAdapter on node-redis, in the dynamic and static subscription modes, on one
// Redis 7 and on a real Redis Cluster (three masters; the Express app's connect-redis sessions
// live on it too, and the gateways run with --redis-cluster). Node must see gateway sockets as
// its own, and the other way round.
import { describe, it, before, after } from "node:test";
import assert from "node:assert/strict";
import { createServer } from "node:http";
import { once } from "node:events";
import { Server } from "socket.io";
import { createShardedAdapter } from "@socket.io/redis-adapter";
import { createClient, createCluster } from "redis";
import { io as ioClient } from "socket.io-client";
import {
  startRedis,
  startRedisCluster,
  startExpressApp,
  startClusterNode,
  login,
  connectClient,
  connected,
  nextEvent,
  waitFor,
  gatewayBroadcastsReachEveryone,
} from "./helpers.mjs";

const setups = [];
for (const topology of ["one Redis", "Redis Cluster"]) {
  for (const mode of ["dynamic", "static"]) setups.push({ topology, mode });
}

for (const { topology, mode } of setups) {
  describe(`sharded adapter (${mode}, ${topology}): 2 gateways + Node socket.io`, () => {
    const cleanups = [];
    const ctx = { after: (fn) => cleanups.push(fn) };
    after(async () => {
      for (const fn of cleanups.reverse()) await fn();
    });

    let app, g1, g2, nodeIo, alice, bob, nodeClient, aliceCookie, shardNumSub;

    before(async () => {
      let pub, args;
      if (topology === "one Redis") {
        const redis = await startRedis(ctx);
        app = await startExpressApp(ctx, { redisUrl: redis.url, secret: "new-secret" });
        args = ["--redis-url", redis.url];
        pub = createClient({ url: redis.url });
        shardNumSub = async (channel) => Object.values(await redis.client.pubSubShardNumSub(channel))[0];
      } else {
        const cluster = await startRedisCluster(ctx);
        // connect-redis on a node-redis cluster client: the sessions live on the cluster.
        app = await startExpressApp(ctx, { redisClient: cluster.client, secret: "new-secret" });
        args = ["--redis-cluster", "--redis-url", cluster.urls];
        pub = createCluster({ rootNodes: cluster.rootNodes });
        // A shard channel's subscribers are on the master owning its slot: ask every master.
        shardNumSub = async (channel) => {
          let total = 0;
          for (const master of cluster.client.masters) {
            const node = await cluster.client.nodeClient(master);
            total += Object.values(await node.pubSubShardNumSub(channel))[0];
          }
          return total;
        };
      }
      args.push("--session-secret", "new-secret", "--adapter", "sharded", "--subscription-mode", mode);
      g1 = await startClusterNode(ctx, args);
      g2 = await startClusterNode(ctx, args);

      const sub = pub.duplicate();
      pub.on("error", () => {});
      sub.on("error", () => {});
      await Promise.all([pub.connect(), sub.connect()]);
      const httpServer = createServer();
      nodeIo = new Server(httpServer, { adapter: createShardedAdapter(pub, sub, { subscriptionMode: mode }) });
      nodeIo.on("connection", (socket) => {
        socket.data = { user: "node-user" };
        socket.join("node-room");
      });
      httpServer.listen(0, "127.0.0.1");
      await once(httpServer, "listening");
      ctx.after(async () => {
        // The Node client is gone by now (registered later, so run earlier): wait until the
        // server has let go of its rooms, whose SUNSUBSCRIBEs run one at a time then. Closing
        // the adapter would send several at once, and node-redis's cluster client rejects all
        // but one of concurrent last-unsubscribes from a node ("The client is closed").
        await waitFor("the Node server's sockets gone", async () => nodeIo.of("/").sockets.size === 0);
        await new Promise((resolve) => setTimeout(resolve, 100));
        await Promise.all([sub.destroy(), pub.destroy()]);
        nodeIo.engine.close();
        await new Promise((resolve) => httpServer.close(resolve));
      });

      // Node counts servers by the base channel's subscribers: each node exactly once.
      await waitFor("3 servers on the base channel", async () => (await shardNumSub("socket.io#/#")) === 3);

      aliceCookie = await login(app.url, "alice"); // user 42
      const bobCookie = await login(app.url, "bob"); // user 7
      alice = await connected(connectClient(g1.url, { cookie: aliceCookie }));
      bob = await connected(connectClient(g2.url, { cookie: bobCookie }));
      nodeClient = await connected(
        ioClient(`http://127.0.0.1:${httpServer.address().port}`, { transports: ["websocket"], forceNew: true }),
      );
      ctx.after(() => [alice, bob, nodeClient].forEach((s) => s.disconnect()));
      if (mode === "dynamic") {
        await waitFor("room channels subscribed", async () => {
          const counts = [await shardNumSub("socket.io#/#user:42#"), await shardNumSub("socket.io#/#node-room#")];
          return counts.every((n) => n === 1);
        });
      }
    });

    it("broadcasts flow both ways between Node and gateways, binary included", async () => {
      let got = Promise.all([nextEvent(alice, "from-node"), nextEvent(bob, "from-node")]);
      nodeIo.emit("from-node", Buffer.from("héllo"), { n: 1.5, big: 2 ** 40, neg: -300 });
      for (const [buf, obj] of await got) {
        assert.equal(Buffer.from(buf).toString(), "héllo");
        assert.deepEqual(obj, { n: 1.5, big: 2 ** 40, neg: -300 });
      }
      // One room: its own channel in dynamic mode.
      got = nextEvent(alice, "to-42");
      const notBob = new Promise((resolve, reject) => {
        bob.once("to-42", () => reject(new Error("bob is not user 42")));
        setTimeout(resolve, 300);
      });
      nodeIo.to("user:42").emit("to-42", Buffer.from([7]));
      assert.deepEqual([...(await got)[0]], [7]);
      await notBob;
      // A socket id: the base channel.
      got = nextEvent(bob, "to-socket-id");
      nodeIo.to(bob.id).emit("to-socket-id", 1);
      assert.deepEqual(await got, [1]);

      // Gateway → Node and the other gateway.
      await gatewayBroadcastsReachEveryone({ g1, g2, nodeClient, clients: [bob, alice] });
    });

    it("fetchSockets lists gateway sockets without their cookies; socketsJoin reaches them", async () => {
      const sockets = await nodeIo.fetchSockets();
      const byId = Object.fromEntries(sockets.map((s) => [s.id, s]));
      assert.ok(byId[alice.id] && byId[bob.id] && byId[nodeClient.id], "all three sockets are listed");
      assert.deepEqual(byId[alice.id].data, { user: 42 });
      assert.ok(byId[alice.id].rooms.has("user:42"));
      assert.equal(byId[alice.id].handshake.headers.cookie, undefined, "cookies never leave the gateway");
      assert.deepEqual((await nodeIo.in("user:7").fetchSockets()).map((s) => s.id), [bob.id]);

      nodeIo.in("user:42").socketsJoin("team");
      await waitFor("alice in team", async () => (await nodeIo.in("team").fetchSockets()).length === 1);
      // The gateway subscribes the new room's channel once alice joined it (as a Node node
      // would): a broadcast published before that reaches only the base channel's listeners.
      if (mode === "dynamic") {
        await waitFor("team channel subscribed", async () => (await shardNumSub("socket.io#/#team#")) === 1);
      }
      const got = nextEvent(alice, "team-news");
      nodeIo.to("team").emit("team-news", "x");
      assert.deepEqual(await got, ["x"]);
      nodeIo.in("user:42").socketsLeave("team");
      await waitFor("team empty", async () => (await nodeIo.in("team").fetchSockets()).length === 0);
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
      assert.equal(responses.length, 2, "each gateway answers");
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
  });
}
