// A chat end to end: the official client emits to wsgate, wsgate appends to the inbound stream,
// a backend reads it with a consumer group and answers through the emitter, and every member of
// the room gets it, on both gateways. Once with the Node backend (examples/chat-backend.mjs,
// redis + @socket.io/redis-emitter), once with the Rust one (examples/chat_backend.rs).
import { test } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import path from "node:path";
import { startRedis, startWsgate, startExpressApp, login, connectClient, connected, nextEvent, waitFor, REPO_ROOT } from "./helpers.mjs";
import { runChatBackend } from "./examples/chat-backend.mjs";

const backends = {
  "Node backend": async (t, url) => {
    const stop = new AbortController();
    // Redis may be stopped first at teardown: the backend's last read then fails, harmlessly.
    const running = runChatBackend({ url, signal: stop.signal }).catch(() => {});
    t.after(async () => {
      stop.abort();
      await Promise.race([running, new Promise((r) => setTimeout(r, 3000))]);
    });
  },
  "Rust backend": async (t, url) => {
    const bin = process.env.WSGATE_CHAT_BACKEND_BIN ?? path.join(REPO_ROOT, "target/debug/examples/chat_backend");
    const child = spawn(bin, ["--redis-url", url], { stdio: "ignore" });
    t.after(() => child.kill("SIGKILL"));
  },
};

for (const [name, start] of Object.entries(backends)) {
  test(`a chat through the inbound stream and the ${name}, across two gateways`, async (t) => {
    const redis = await startRedis(t);
    const app = await startExpressApp(t, { redisUrl: redis.url, secret: "new-secret" });
    const args = ["--redis-url", redis.url, "--session-secret", "new-secret", "--allow-join", "chat:*"];
    const gateways = [await startWsgate(t, args), await startWsgate(t, args)];
    await start(t, redis.url);
    const sockets = [];
    for (const [gateway, user] of [[gateways[0], "alice"], [gateways[1], "bob"]]) {
      const socket = connectClient(gateway.url, { cookie: await login(app.url, user) });
      t.after(() => socket.disconnect());
      await connected(socket);
      assert.deepEqual(await socket.timeout(3000).emitWithAck("join", "chat:lobby"), { ok: true });
      sockets.push(socket);
    }
    const [alice, bob] = sockets;
    assert.deepEqual(await alice.timeout(3000).emitWithAck("join", "admin"), { ok: false, error: "forbidden" });
    // The backend creates its consumer group at the end of the stream when it starts.
    await waitFor("the backend's consumer group", async () =>
      (await redis.client.xInfoGroups("wsgate:inbound")).some((g) => g.name === "chat"),
    );
    const heard = nextEvent(bob, "chat", 10000);
    const stored = await alice.timeout(3000).emitWithAck("chat", { room: "chat:lobby", text: "hello" });
    assert.equal(stored.ok, true);
    const [message] = await heard;
    assert.deepEqual(message, { user: 42, room: "chat:lobby", text: "hello" });
  });
}
