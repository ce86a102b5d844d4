// The Node stack a team runs today, with wsgate's rules, so every loadgen scenario can run
// against both: socket.io 4 + @socket.io/redis-adapter, express-session + connect-redis on the
// engine, anonymous sockets refused with "Authentication error", user and session rooms,
// the same Origin policy (same-origin or no Origin), and engine.io's default transports
// (polling, then the upgrade to WebSocket), as wsgate serves them.
//
//   node server.mjs --port 3100 --redis-url redis://127.0.0.1:6379 --secret loadtest-secret
import { createServer } from "node:http";
import { parseArgs } from "node:util";
import { Server } from "socket.io";
import { createAdapter, createShardedAdapter } from "@socket.io/redis-adapter";
import { createAdapter as createStreamsAdapter } from "@socket.io/redis-streams-adapter";
import session from "express-session";
import { RedisStore } from "connect-redis";
import { createClient, createCluster } from "redis";

const { values } = parseArgs({
  options: {
    port: { type: "string", default: "3100" },
    host: { type: "string", default: "127.0.0.1" },
    "redis-url": { type: "string", default: "redis://127.0.0.1:6379" },
    secret: { type: "string", multiple: true, default: ["loadtest-secret"] },
    // Where express-session keeps sessions: redis (connect-redis at --redis-url), memcached
    // (connect-memcached) or postgres (connect-pg-simple's "session" table).
    "session-store": { type: "string", default: "redis" },
    "session-store-url": { type: "string" },
    "session-prefix": { type: "string", default: "sess:" },
    // createAdapter (classic), createShardedAdapter (sharded) or the Redis Streams adapter with
    // connection state recovery (streams, middlewares run on recovery too), on one Redis or, with
    // --redis-cluster, on a node-redis cluster client (--redis-url: seed nodes, comma-separated).
    adapter: { type: "string", default: "classic" },
    "redis-cluster": { type: "boolean", default: false },
  },
});

const redisClient = () =>
  values["redis-cluster"]
    ? createCluster({ rootNodes: values["redis-url"].split(",").map((url) => ({ url })) })
    : createClient({ url: values["redis-url"] });
const sessionClient = redisClient();
const pubClient = redisClient();
const subClient = pubClient.duplicate();
for (const c of [sessionClient, pubClient, subClient]) c.on("error", (e) => console.error("redis:", e.message));
await Promise.all([sessionClient.connect(), pubClient.connect(), subClient.connect()]);

const httpServer = createServer();
const io = new Server(httpServer, {
  adapter:
    values.adapter === "sharded"
      ? createShardedAdapter(pubClient, subClient)
      : values.adapter === "streams"
        ? createStreamsAdapter(pubClient)
        : createAdapter(pubClient, subClient),
  ...(values.adapter === "streams"
    ? { connectionStateRecovery: { maxDisconnectionDuration: 120000, skipMiddlewares: false } }
    : {}),
  allowRequest: (req, callback) => {
    const origin = req.headers.origin;
    if (!origin) return callback(null, true);
    try {
      callback(null, new URL(origin).host === req.headers.host);
    } catch {
      callback(null, false);
    }
  },
});

async function sessionStore() {
  switch (values["session-store"]) {
    case "memcached": {
      const { default: connectMemcached } = await import("connect-memcached");
      const MemcachedStore = connectMemcached(session);
      const host = values["session-store-url"].replace(/^memcache:\/\//, "");
      return new MemcachedStore({ hosts: [host], prefix: values["session-prefix"] });
    }
    case "postgres": {
      const { default: connectPgSimple } = await import("connect-pg-simple");
      const { default: pg } = await import("pg");
      const PgStore = connectPgSimple(session);
      return new PgStore({ pool: new pg.Pool({ connectionString: values["session-store-url"] }), pruneSessionInterval: false });
    }
    default:
      return new RedisStore({ client: sessionClient, prefix: values["session-prefix"] });
  }
}

io.engine.use(
  session({
    store: await sessionStore(),
    secret: values.secret,
    resave: false,
    saveUninitialized: false,
  }),
);

io.use((socket, next) => {
  const user = socket.request.session?.passport?.user;
  if (user === undefined || user === null || user === false || user === "") {
    return next(new Error("Authentication error"));
  }
  socket.data.user = user;
  next();
});

io.on("connection", (socket) => {
  const user = socket.data.user;
  socket.join(`user:${typeof user === "string" ? user : JSON.stringify(user)}`);
  socket.join(`session:${socket.request.sessionID}`);
  // What a Node app does with a client event that backends must get: store it in a stream, then
  // ack with the entry id (the same work wsgate does for every event).
  socket.onAny(async (event, ...args) => {
    const ack = typeof args[args.length - 1] === "function" ? args.pop() : null;
    try {
      const id = await sessionClient.xAdd(
        "wsgate:inbound",
        "*",
        {
          nsp: socket.nsp.name,
          socket: socket.id,
          user: JSON.stringify(user),
          session: socket.request.sessionID,
          event,
          args: JSON.stringify(args),
          node: `node:${values.port}`,
          ts: String(Date.now()),
        },
        { TRIM: { strategy: "MAXLEN", strategyModifier: "~", threshold: 100000 } },
      );
      ack?.({ ok: true, id });
    } catch {
      ack?.({ ok: false, error: "store_unavailable" });
    }
  });
});

httpServer.listen(Number(values.port), values.host, () => {
  console.log(`node reference listening on ${values.host}:${values.port}`);
});
for (const sig of ["SIGTERM", "SIGINT"]) process.on(sig, () => io.close(() => process.exit(0)));
