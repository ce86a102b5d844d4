// A real Express app (express-session + connect-redis + passport) logs users in; the official
// socket.io-client connects to wsgate with the cookie a browser would send.
import { test } from "node:test";
import assert from "node:assert/strict";
import signature from "cookie-signature";
import {
  startRedis,
  startWsgate,
  startExpressApp,
  login,
  connectClient,
  connected,
  nextEvent,
  freePort,
} from "./helpers.mjs";

async function setup(t, extraArgs = []) {
  const redis = await startRedis(t);
  const app = await startExpressApp(t, { redisUrl: redis.url, secret: ["new-secret", "old-secret"] });
  const gw = await startWsgate(t, [
    "--redis-url", redis.url,
    "--session-secret", "new-secret",
    "--session-secret", "old-secret",
    ...extraArgs,
  ]);
  return { redis, app, gw };
}

test("a user logged in through passport connects with the Express session cookie", async (t) => {
  const { app, gw } = await setup(t);
  const cookie = await login(app.url);
  assert.match(cookie, /^connect\.sid=s%3A/);
  const me = await (await fetch(`${app.url}/me`, { headers: { cookie } })).json();
  assert.deepEqual(me.user, { id: 42 }, "Express itself accepts the cookie");

  const socket = connectClient(gw.url, { cookie });
  t.after(() => socket.disconnect());
  await connected(socket);
  assert.equal(socket.id.length, 20);
});

test("passport user 0 is a user", async (t) => {
  const { app, gw } = await setup(t);
  const cookie = await login(app.url, "zero");
  const socket = connectClient(gw.url, { cookie });
  t.after(() => socket.disconnect());
  await connected(socket);
});

test("anonymous and tampered cookies get connect_error 'Authentication error' and no retry", async (t) => {
  const { app, gw } = await setup(t);
  const cookie = await login(app.url);
  const [name, value] = cookie.split("=");
  const sig = value.slice(value.lastIndexOf(".") + 1);
  const tampered = `${name}=${value.slice(0, value.lastIndexOf(".") + 1)}${sig.startsWith("A") ? "B" : "A"}${sig.slice(1)}`;

  for (const [label, opts] of [
    ["no cookie", {}],
    ["tampered signature", { cookie: tampered }],
    ["unsigned session id", { cookie: `connect.sid=${decodeURIComponent(value).slice(2).split(".")[0]}` }],
  ]) {
    const socket = connectClient(gw.url, { ...opts, reconnection: true });
    t.after(() => socket.disconnect());
    const err = await connected(socket).then(
      () => assert.fail(`${label}: should not connect`),
      (e) => e,
    );
    assert.equal(err.message, "Authentication error", label);
    assert.equal(socket.active, false, `${label}: the client stops retrying`);
  }
});

test("after logout the old cookie no longer connects", async (t) => {
  const { app, gw } = await setup(t);
  const cookie = await login(app.url);
  const res = await fetch(`${app.url}/logout`, { method: "POST", headers: { cookie } });
  assert.equal(res.status, 200);
  const socket = connectClient(gw.url, { cookie });
  t.after(() => socket.disconnect());
  await assert.rejects(connected(socket), { message: "Authentication error" });
});

test("a cookie signed with an older secret still connects (rotation)", async (t) => {
  const { redis, gw } = await setup(t);
  // The app before rotation signed with old-secret only.
  const oldApp = await startExpressApp(t, { redisUrl: redis.url, secret: "old-secret" });
  const cookie = await login(oldApp.url);
  const socket = connectClient(gw.url, { cookie });
  t.after(() => socket.disconnect());
  await connected(socket);
});

test("Redis down: connect_error 'Session store unavailable'", async (t) => {
  const gw = await startWsgate(t, [
    "--redis-url", `redis://127.0.0.1:${await freePort()}`,
    "--session-secret", "new-secret",
    "--session-lookup-timeout", "500",
  ]);
  // Signed by the same module express-session uses, so only the store can decide.
  const cookie = `connect.sid=${encodeURIComponent("s:" + signature.sign("some-session", "new-secret"))}`;
  const socket = connectClient(gw.url, { cookie });
  t.after(() => socket.disconnect());
  await assert.rejects(connected(socket), { message: "Session store unavailable" });
});

test("a page on another origin is refused before the upgrade", async (t) => {
  const { app, gw } = await setup(t, ["--allowed-origin", "https://app.example"]);
  const cookie = await login(app.url);
  const evil = connectClient(gw.url, { cookie, extraHeaders: { origin: "https://evil.example" } });
  t.after(() => evil.disconnect());
  const err = await connected(evil).then(() => assert.fail("must not connect"), (e) => e);
  assert.equal(err.message, "websocket error");
  assert.match(String(err.description?.message ?? err.description), /403/);

  const good = connectClient(gw.url, { cookie, extraHeaders: { origin: "https://app.example" } });
  t.after(() => good.disconnect());
  await connected(good);
});

test("logging out in the Express app disconnects the sockets opened with that session", async (t) => {
  const { app, gw } = await setup(t, ["--revalidate-interval", "500"]);
  const cookie = await login(app.url);
  const other = await login(app.url, "bob");
  const socket = await connected(connectClient(gw.url, { cookie }));
  const bystander = await connected(connectClient(gw.url, { cookie: other }));
  t.after(() => [socket, bystander].forEach((s) => s.disconnect()));
  const reason = nextEvent(socket, "disconnect", 5000);
  const res = await fetch(`${app.url}/logout`, { method: "POST", headers: { cookie } });
  assert.equal(res.status, 200);
  assert.equal((await reason)[0], "io server disconnect", "the client does not reconnect by itself");
  assert.equal(bystander.connected, true, "other sessions stay connected");
});
