// What the Node-driven benchmark scenarios (rolling-restart.mjs, jitter.mjs) share: ports,
// waiting with a deadline, and connect-redis sessions with the cookies that name them.
import { createServer } from "node:http";
import { connect as tcpConnect } from "node:net";
import signature from "cookie-signature";

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

export async function freePort() {
  const srv = createServer().listen(0, "127.0.0.1");
  await new Promise((r) => srv.once("listening", r));
  const { port } = srv.address();
  await new Promise((r) => srv.close(r));
  return port;
}

export const portOpen = (port) =>
  new Promise((resolve) => {
    const s = tcpConnect(port, "127.0.0.1", () => {
      s.destroy();
      resolve(true);
    });
    s.on("error", () => resolve(false));
  });

export async function until(what, check, ms = 60000) {
  const deadline = Date.now() + ms;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`timed out: ${what}`);
    await sleep(20);
  }
}

/** Writes `n` connect-redis sessions of user "observers" (ids `<prefix>-<i>`); returns the
 * signed `connect.sid` cookie of each. */
export async function seedSessions(redis, n, prefix, secret) {
  const record = JSON.stringify({ cookie: { originalMaxAge: 3600000, httpOnly: true, path: "/" }, passport: { user: "observers" } });
  const cookies = [];
  for (let i = 0; i < n; i += 500) {
    const batch = redis.multi();
    for (let j = i; j < Math.min(n, i + 500); j++) {
      const sid = `${prefix}-${j}`;
      batch.set(`sess:${sid}`, record, { EX: 3600 });
      cookies[j] = "connect.sid=" + encodeURIComponent("s:" + signature.sign(sid, secret));
    }
    await batch.exec();
  }
  return cookies;
}
