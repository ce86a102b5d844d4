// The official socket.io-client against examples/echo: events, acks and binary payloads
// round-trip on `/` and `/custom`, exactly as with a Node socket.io server.
import { test } from "node:test";
import assert from "node:assert/strict";
import { startEcho, connectClient, connected, nextEvent } from "./helpers.mjs";

for (const nsp of ["/", "/custom"]) {
  test(`echo on ${nsp}: auth payload, events, acks and binary`, async (t) => {
    const echo = await startEcho(t);
    const socket = connectClient(echo.url, { nsp, auth: { token: "abc", n: 1 } });
    t.after(() => socket.disconnect());
    const authEvent = nextEvent(socket, "auth");
    await connected(socket);
    assert.deepEqual((await authEvent)[0], { token: "abc", n: 1 });

    const plain = nextEvent(socket, "message-back");
    socket.emit("message", 1, "2", { 3: "4", 5: [6, null] });
    assert.deepEqual(await plain, [1, "2", { 3: "4", 5: [6, null] }]);

    const binary = nextEvent(socket, "message-back");
    socket.emit("message", Buffer.from([1, 2, 3]), { nested: [Uint8Array.from([4, 5])], text: "€" });
    const [buf, obj] = await binary;
    assert.deepEqual([...buf], [1, 2, 3]);
    assert.deepEqual([...obj.nested[0]], [4, 5]);
    assert.equal(obj.text, "€");

    const acked = await socket.timeout(2000).emitWithAck("message-with-ack", 1, "2", { 3: [true] });
    assert.deepEqual(acked, 1, "an ack with several arguments resolves with the first");
    const binAck = await new Promise((resolve) =>
      socket.emit("message-with-ack", Buffer.from("héllo"), "x", (...args) => resolve(args)),
    );
    assert.equal(Buffer.from(binAck[0]).toString(), "héllo");
    assert.equal(binAck[1], "x");

    // An event nothing handles is answered, so emitWithAck never hangs.
    assert.deepEqual(await socket.timeout(2000).emitWithAck("nobody-listens"), { ok: false, error: "unhandled" });
  });
}

test("echo: without auth the payload is {}; unknown namespaces are refused", async (t) => {
  const echo = await startEcho(t);
  const socket = connectClient(echo.url);
  t.after(() => socket.disconnect());
  const authEvent = nextEvent(socket, "auth");
  await connected(socket);
  assert.deepEqual((await authEvent)[0], {});

  const other = connectClient(echo.url, { nsp: "/nope" });
  t.after(() => other.disconnect());
  await assert.rejects(connected(other), { message: "Invalid namespace" });
});

test("echo: many concurrent clients each get only their own echoes", async (t) => {
  const echo = await startEcho(t);
  const sockets = await Promise.all(
    Array.from({ length: 50 }, () => connected(connectClient(echo.url))),
  );
  t.after(() => sockets.forEach((s) => s.disconnect()));
  const results = await Promise.all(
    sockets.map((s, i) => s.timeout(5000).emitWithAck("message-with-ack", i)),
  );
  assert.deepEqual(results, sockets.map((_, i) => i));
});
