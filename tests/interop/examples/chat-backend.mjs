// A backend for wsgate's client events, in Node: read the inbound stream with a consumer group,
// answer through @socket.io/redis-emitter. A chat: every `chat` event {room, text} reaches every
// member of that room, on every node, as `chat` {user, room, text}.
//
//   REDIS_URL=redis://127.0.0.1:6379 node chat-backend.mjs
import { createClient } from "redis";
import { Emitter } from "@socket.io/redis-emitter";

export async function runChatBackend({ url, stream = "wsgate:inbound", group = "chat", consumer = "node-1", signal }) {
  const redis = createClient({ url });
  // node-redis reconnects by itself; an unhandled "error" event would end the process.
  redis.on("error", (err) => console.error("chat backend: redis:", err.message));
  await redis.connect();
  const publisher = redis.duplicate();
  publisher.on("error", (err) => console.error("chat backend: redis:", err.message));
  await publisher.connect();
  const emitter = new Emitter(publisher);
  try {
    await redis.xGroupCreate(stream, group, "$", { MKSTREAM: true });
  } catch (err) {
    if (!String(err.message).includes("BUSYGROUP")) throw err;
  }
  // Stopping closes the connections, which ends a blocking read at once.
  signal?.addEventListener("abort", () => {
    redis.destroy();
    publisher.destroy();
  });
  while (!signal?.aborted) {
    const reply = await redis
      .xReadGroup(group, consumer, { key: stream, id: ">" }, { COUNT: 100, BLOCK: 1000 })
      .catch((err) => {
        if (signal?.aborted) return null;
        throw err;
      });
    for (const { messages } of reply ?? []) {
      for (const { id, message } of messages) {
        // Fields: nsp, socket, user (JSON), session, event, args (JSON), bin0…, node, ts.
        if (message.event === "chat") {
          const [chat] = JSON.parse(message.args);
          if (typeof chat?.room === "string" && typeof chat?.text === "string") {
            emitter.of(message.nsp).to(chat.room).emit("chat", { user: JSON.parse(message.user), room: chat.room, text: chat.text });
          }
        }
        await redis.xAck(stream, group, id);
      }
    }
  }
}

if (import.meta.url === `file://${process.argv[1]}`) {
  await runChatBackend({ url: process.env.REDIS_URL ?? "redis://127.0.0.1:6379" });
}
