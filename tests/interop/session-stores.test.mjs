// Express apps whose sessions live in memcached (connect-memcached 3) or PostgreSQL
// (connect-pg-simple 10), not Redis: a user logs in through passport, the official client
// connects to wsgate with that cookie, anonymous visitors are refused, and logout closes the
// socket (at the next revalidation, or within a second with --pg-notify). Redis is there for
// the cluster adapter only.
import { test } from "node:test";
import assert from "node:assert/strict";
import { readFile } from "node:fs/promises";
import session from "express-session";
import connectMemcached from "connect-memcached";
import connectPgSimple from "connect-pg-simple";
import pg from "pg";
import {
  REPO_ROOT,
  freePort,
  waitFor,
  spawnManaged,
  startRedis,
  startWsgate,
  startExpressApp,
  login,
  connectClient,
  connected,
  nextEvent,
} from "./helpers.mjs";

const SECRET = "new-secret";

async function startMemcached(t) {
  const port = await freePort();
  // memcached refuses to run as root unless told which user to be.
  const asRoot = process.getuid?.() === 0 ? ["-u", "root"] : [];
  spawnManaged(t, "memcached", ["-p", String(port), "-l", "127.0.0.1", "-U", "0", "-m", "16", ...asRoot]);
  await waitFor("memcached", async () => {
    const net = await import("node:net");
    return await new Promise((resolve) => {
      const socket = net.connect(port, "127.0.0.1", () => {
        socket.end();
        resolve(true);
      });
      socket.on("error", () => resolve(false));
    });
  });
  return { port, url: `memcache://127.0.0.1:${port}` };
}

/** A database of this test's own on the machine's PostgreSQL, dropped when the test ends. */
async function startPostgresDatabase(t) {
  const adminUrl = process.env.WSGATE_TEST_PG_URL ?? "postgres://postgres@127.0.0.1:5432/postgres";
  const name = `wsgate_interop_${process.pid}_${Math.floor(Math.random() * 1e9)}`;
  const admin = new pg.Client({ connectionString: adminUrl });
  await admin.connect();
  await admin.query(`CREATE DATABASE ${name}`);
  const url = adminUrl.replace(/\/[^/]*$/, `/${name}`);
  const pool = new pg.Pool({ connectionString: url, max: 4 });
  // Dropping the database at the end terminates whatever is still connected to it: expected.
  pool.on("error", () => {});
  t.after(async () => {
    await pool.end();
    await admin.query(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`);
    await admin.end();
  });
  return { url, pool };
}

/** Logs out through the app (passport 0.7: the session is regenerated, the old one destroyed). */
async function logout(appUrl, cookie) {
  const res = await fetch(`${appUrl}/logout`, { method: "POST", headers: { cookie } });
  assert.equal(res.status, 200);
}

async function refusedWith(gatewayUrl, cookie) {
  const socket = connectClient(gatewayUrl, { cookie });
  try {
    await connected(socket);
    return "connected";
  } catch (err) {
    return err.message;
  } finally {
    socket.disconnect();
  }
}

test("connect-memcached: login connects, anonymous is refused, logout closes the socket", async (t) => {
  const redis = await startRedis(t);
  const memcached = await startMemcached(t);
  const MemcachedStore = connectMemcached(session);
  const store = new MemcachedStore({ hosts: [`127.0.0.1:${memcached.port}`], prefix: "app:" });
  t.after(() => store.client.end());
  const app = await startExpressApp(t, { store, secret: SECRET });
  const gw = await startWsgate(t, [
    "--redis-url", redis.url,
    "--session-secret", SECRET,
    "--session-store", "memcached",
    "--session-store-url", memcached.url,
    "--session-prefix", "app:",
    "--revalidate-interval", "500",
  ]);

  const alice = await login(app.url, "alice");
  const socket = connectClient(gw.url, { cookie: alice, transports: ["polling", "websocket"] });
  t.after(() => socket.disconnect());
  await connected(socket);
  const me = await (await fetch(`${app.url}/me`, { headers: { cookie: alice } })).json();
  assert.deepEqual(me.user, { id: 42 });

  // No cookie, a forged one, and a session without a user are all anonymous.
  assert.equal(await refusedWith(gw.url, undefined), "Authentication error");
  assert.equal(await refusedWith(gw.url, alice.replace(/.$/, (c) => (c === "A" ? "B" : "A"))), "Authentication error");

  const closed = nextEvent(socket, "disconnect", 3000);
  await logout(app.url, alice);
  const [reason] = await closed;
  assert.equal(reason, "io server disconnect");
  assert.equal(await refusedWith(gw.url, alice), "Authentication error");
  const metrics = await (await fetch(`${gw.url}/metrics`)).text();
  assert.match(metrics, /wsgate_revalidations_total\{reason="(session_gone|no_user)"\} 1/);
});

for (const notify of [false, true]) {
  const how = notify ? "within a second with --pg-notify" : "at the next revalidation";
  test(`connect-pg-simple: login connects, anonymous is refused, logout closes the socket ${how}`, async (t) => {
    const redis = await startRedis(t);
    const db = await startPostgresDatabase(t);
    const PgStore = connectPgSimple(session);
    // The table as connect-pg-simple's own table.sql creates it.
    await db.pool.query(await readFile(new URL(import.meta.resolve("connect-pg-simple/table.sql")), "utf8"));
    const store = new PgStore({ pool: db.pool, pruneSessionInterval: false });
    const app = await startExpressApp(t, { store, secret: SECRET });
    if (notify) await db.pool.query(await readFile(`${REPO_ROOT}/deploy/postgres/session-notify.sql`, "utf8"));
    const gw = await startWsgate(t, [
      "--redis-url", redis.url,
      "--session-secret", SECRET,
      "--session-store", "postgres",
      "--revalidate-interval", notify ? "0" : "500",
      ...(notify ? ["--pg-notify"] : []),
    ], { WSGATE_SESSION_STORE_URL: db.url });

    const alice = await login(app.url, "alice");
    const bob = await login(app.url, "bob");
    const sockets = [];
    for (const cookie of [alice, bob]) {
      const socket = connectClient(gw.url, { cookie, transports: ["polling", "websocket"] });
      t.after(() => socket.disconnect());
      await connected(socket);
      sockets.push(socket);
    }
    assert.equal(await refusedWith(gw.url, undefined), "Authentication error");

    const closed = nextEvent(sockets[0], "disconnect", notify ? 1000 : 3000);
    const started = Date.now();
    await logout(app.url, alice);
    const [reason] = await closed;
    assert.equal(reason, "io server disconnect");
    if (notify) assert.ok(Date.now() - started < 1000, "within a second");
    assert.equal(sockets[1].connected, true, "Bob stays");
    assert.equal(await refusedWith(gw.url, alice), "Authentication error");
  });
}
