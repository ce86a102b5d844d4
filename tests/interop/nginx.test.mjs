// Two gateways behind a real nginx, configured from deploy/nginx.conf: a client connected through
// nginx receives a broadcast emitted on the other node; official clients with default options
// (polling, then WebSocket) from many addresses spread over both gateways and stay on theirs.
import { test } from "node:test";
import assert from "node:assert/strict";
import http from "node:http";
import { io } from "socket.io-client";
import {
  startRedis,
  startExpressApp,
  startClusterNode,
  login,
  connectClient,
  connected,
  nextEvent,
  waitFor,
  startNginx,
} from "./helpers.mjs";

const connections = async (node) => Number(/^wsgate_connections (\d+)$/m.exec(await node.metrics())?.[1]);

test("a client connected through nginx receives a broadcast emitted on the other node", async (t) => {
  const redis = await startRedis(t);
  const app = await startExpressApp(t, { redisUrl: redis.url, secret: "new-secret" });
  const args = ["--redis-url", redis.url, "--session-secret", "new-secret"];
  const nodes = [await startClusterNode(t, args), await startClusterNode(t, args)];
  const nginx = await startNginx(t, nodes.map((n) => n.port));
  await waitFor("both nodes subscribed", async () => Object.values(await redis.client.pubSubNumSub("socket.io-request#/#"))[0] === 2);

  const cookie = await login(app.url, "alice");
  // A browser on the proxied origin: Origin and Host (passed through by nginx) match.
  const socket = await connected(connectClient(nginx.url, { cookie, extraHeaders: { origin: nginx.url } }));
  t.after(() => socket.disconnect());

  const counts = await Promise.all(nodes.map(connections));
  assert.deepEqual([...counts].sort(), [0, 1], "the socket lives on exactly one node");
  const other = nodes[counts[0] === 1 ? 1 : 0];

  const got = nextEvent(socket, "via-other-node");
  other.broadcast({ rooms: ["user:42"], event: "via-other-node", args: ["hello"] });
  assert.deepEqual(await got, ["hello"]);

  // An origin nginx does not serve is still refused by the gateway behind it.
  const evil = connectClient(nginx.url, { cookie, extraHeaders: { origin: "https://evil.example" } });
  t.after(() => evil.disconnect());
  await assert.rejects(connected(evil), { message: "websocket error" });
});

/** The official client with default options, its requests leaving from `localAddress`. */
function clientFrom(url, localAddress, cookie, opts = {}) {
  const agent = new http.Agent({ keepAlive: true, localAddress });
  return io(url, {
    forceNew: true,
    reconnection: false,
    agent,
    extraHeaders: { cookie, origin: url },
    ...opts,
  });
}

async function cluster(t, edit) {
  const redis = await startRedis(t);
  const app = await startExpressApp(t, { redisUrl: redis.url, secret: "new-secret" });
  const args = ["--redis-url", redis.url, "--session-secret", "new-secret"];
  const nodes = [await startClusterNode(t, args), await startClusterNode(t, args)];
  const nginx = await startNginx(t, nodes.map((n) => n.port), edit);
  await waitFor("both nodes subscribed", async () => Object.values(await redis.client.pubSubNumSub("socket.io-request#/#"))[0] === 2);
  return { app, nodes, nginx, cookie: await login(app.url, "alice") };
}

test("default-option clients from many addresses: sticky by address, upgraded, broadcasts from either node", async (t) => {
  const { nodes, nginx, cookie } = await cluster(t);
  // nginx hashes the client address: clients on 127.0.N.1 spread over the two gateways.
  const sockets = [];
  for (let i = 1; i <= 12; i++) {
    const socket = clientFrom(nginx.url, `127.0.${i}.1`, cookie);
    t.after(() => socket.disconnect());
    sockets.push(socket);
  }
  await Promise.all(sockets.map((s) => connected(s)));
  await waitFor("every client upgraded to WebSocket", () => sockets.every((s) => s.io.engine.transport.name === "websocket"));
  const counts = await Promise.all(nodes.map(connections));
  assert.equal(counts[0] + counts[1], sockets.length, `each client holds one session: ${counts}`);
  assert.ok(counts[0] > 0 && counts[1] > 0, `both gateways serve clients: ${counts}`);

  for (const [i, node] of nodes.entries()) {
    const got = Promise.all(sockets.map((s) => nextEvent(s, `from-node-${i}`)));
    node.broadcast({ rooms: ["user:42"], event: `from-node-${i}`, args: [i] });
    assert.deepEqual(await got, sockets.map(() => [i]), `every client got node ${i}'s broadcast`);
  }
});

test("without stickiness polling breaks, and the gateway's log names the likely cause", async (t) => {
  // The same set-up, but nginx balances each request on its own.
  const { nodes, nginx, cookie } = await cluster(t, (site) => site.replace("hash $remote_addr consistent;", ""));
  const socket = clientFrom(nginx.url, "127.0.1.1", cookie, { transports: ["polling"] });
  t.after(() => socket.disconnect());
  // Whichever request reaches the other node first fails: the GET (poll) or the POST.
  await assert.rejects(connected(socket), { message: /^xhr (poll|post) error$/ });
  await waitFor("a refusal logged", () => nodes.some((n) => /unknown session id.*sticky/.test(n.child.logs())));
});
