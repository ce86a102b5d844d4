// Logout through the real Express app (passport 0.7) closes the user's sockets on two gateways
// within a second, with no emitter call in the app: wsgate follows the session key through
// Redis keyspace notifications.
import { test } from "node:test";
import assert from "node:assert/strict";
import { startRedis, startWsgate, startExpressApp, login, connectClient, connected, nextEvent } from "./helpers.mjs";

test("a passport logout closes the session's sockets on every gateway within a second", async (t) => {
  const redis = await startRedis(t);
  const app = await startExpressApp(t, { redisUrl: redis.url, secret: "new-secret" });
  const args = ["--redis-url", redis.url, "--session-secret", "new-secret", "--configure-keyspace-events"];
  const gateways = [await startWsgate(t, args), await startWsgate(t, args)];
  const alice = await login(app.url, "alice");
  const bob = await login(app.url, "bob");
  const sockets = [];
  for (const gw of gateways) {
    for (const cookie of [alice, bob]) {
      const socket = connectClient(gw.url, { cookie });
      t.after(() => socket.disconnect());
      await connected(socket);
      sockets.push({ socket, cookie });
    }
  }
  const alices = sockets.filter((s) => s.cookie === alice).map((s) => s.socket);
  const closed = alices.map((s) => nextEvent(s, "disconnect", 1000));
  const started = Date.now();
  const res = await fetch(`${app.url}/logout`, { method: "POST", headers: { cookie: alice } });
  assert.equal(res.status, 200);
  for (const [reason] of await Promise.all(closed)) assert.equal(reason, "io server disconnect");
  assert.ok(Date.now() - started < 1000, "within a second");
  // Bob is untouched on both gateways.
  for (const { socket, cookie } of sockets) if (cookie === bob) assert.equal(socket.connected, true);
  const metrics = await (await fetch(`${gateways[0].url}/metrics`)).text();
  assert.match(metrics, /wsgate_keyspace_notifications 1/);
  // passport 0.7 saves the session without its user, then destroys it: whichever event comes
  // first closes the sockets (no_user on the rewrite, deleted on the DEL, or session_gone when
  // the re-read prompted by the rewrite finds the DEL already done: seen on a busy machine).
  assert.match(metrics, /wsgate_revocations_total\{reason="(deleted|no_user|session_gone)"\} 1/);
});
