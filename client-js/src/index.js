// wsgate client-js: a tiny Socket.IO v5 / Engine.IO v4 client for browsers, over WebSocket.
//
// The subset of socket.io-client v4 that pages use, with the same names and semantics: io(),
// on/once/off, emit (with an ack callback), emitWithAck, timeout(ms), connect/disconnect,
// connected/active/id, the connect / disconnect(reason) / connect_error(err) events, binary
// (ArrayBuffer, typed arrays, Blob) both ways, namespaces, and reconnection with exponential
// backoff and jitter that stops where the official client stops (a CONNECT_ERROR, or
// "io server disconnect"). It works against any Socket.IO v4 server, not only wsgate.

const PLACEHOLDER = "_placeholder";

function isBinary(value) {
  return (
    value instanceof ArrayBuffer ||
    ArrayBuffer.isView(value) ||
    (typeof Blob !== "undefined" && value instanceof Blob)
  );
}

// Replaces binary values by placeholders, collecting them (socket.io-parser's deconstruct).
function deconstruct(value, buffers) {
  if (isBinary(value)) {
    buffers.push(value);
    return { [PLACEHOLDER]: true, num: buffers.length - 1 };
  }
  if (Array.isArray(value)) return value.map((v) => deconstruct(v, buffers));
  if (value && typeof value === "object" && !(value instanceof Date)) {
    if (typeof value.toJSON === "function") return value;
    const out = {};
    for (const key in value) if (Object.prototype.hasOwnProperty.call(value, key)) out[key] = deconstruct(value[key], buffers);
    return out;
  }
  return value;
}

function reconstruct(value, buffers) {
  if (Array.isArray(value)) return value.map((v) => reconstruct(v, buffers));
  if (value && typeof value === "object") {
    if (value[PLACEHOLDER] === true) {
      if (typeof value.num === "number" && value.num >= 0 && value.num < buffers.length) return buffers[value.num];
      throw new Error("illegal attachments");
    }
    for (const key in value) value[key] = reconstruct(value[key], buffers);
  }
  return value;
}

// "2" EVENT / "3" ACK, turned into "5" / "6" when they carry binary.
function encode(type, nsp, data, id) {
  const buffers = [];
  const json = data === undefined ? "" : JSON.stringify(deconstruct(data, buffers));
  let out = "4" + (buffers.length ? `${type + 3}${buffers.length}-` : type);
  if (nsp !== "/") out += nsp + ",";
  if (id != null) out += id;
  return [out + json, buffers];
}

function decode(text) {
  const packet = { type: +text[0], nsp: "/", attachments: 0 };
  let i = 1;
  if (packet.type === 5 || packet.type === 6) {
    const dash = text.indexOf("-", i);
    packet.attachments = +text.slice(i, dash);
    i = dash + 1;
  }
  if (text[i] === "/") {
    const comma = text.indexOf(",", i);
    packet.nsp = comma < 0 ? text.slice(i) : text.slice(i, comma);
    i = comma < 0 ? text.length : comma + 1;
  }
  const idStart = i;
  while (i < text.length && text[i] >= "0" && text[i] <= "9") i++;
  if (i > idStart) packet.id = +text.slice(idStart, i);
  if (i < text.length) packet.data = JSON.parse(text.slice(i));
  return packet;
}

class Emitter {
  constructor() {
    this._handlers = {};
  }
  on(event, fn) {
    (this._handlers[event] ||= []).push(fn);
    return this;
  }
  once(event, fn) {
    const once = (...args) => {
      this.off(event, once);
      fn.apply(this, args);
    };
    once.fn = fn;
    return this.on(event, once);
  }
  off(event, fn) {
    if (!event) this._handlers = {};
    else if (!fn) delete this._handlers[event];
    else this._handlers[event] = (this._handlers[event] || []).filter((h) => h !== fn && h.fn !== fn);
    return this;
  }
  _fire(event, ...args) {
    for (const fn of (this._handlers[event] || []).slice()) fn.apply(this, args);
  }
}

export class Socket extends Emitter {
  constructor(uri, nsp, opts) {
    super();
    this.nsp = nsp;
    this.connected = false;
    this.active = false;
    this.id = undefined;
    this._uri = uri;
    this._opts = opts;
    this._acks = {};
    this._ackId = 0;
    this._buffer = [];
    this._attempts = 0;
    this._flags = {};
    // Connection state recovery: the server's pid, the last event's offset, and events that
    // arrive before the CONNECT reply (a replay), delivered right after `connect`.
    this.recovered = false;
    this._received = [];
    if (opts.autoConnect !== false) this.connect();
  }

  get disconnected() {
    return !this.connected;
  }

  connect() {
    if (this.connected || this._ws) return this;
    this.active = true;
    clearTimeout(this._retry);
    const { WebSocket: Ws = WebSocket, timeout = 20000 } = this._opts;
    const ws = (this._ws = new Ws(this._uri));
    ws.binaryType = "arraybuffer";
    let incoming = null;
    ws.onmessage = ({ data }) => {
      try {
        if (typeof data !== "string") {
          if (!incoming) return;
          incoming.buffers.push(data);
          if (incoming.buffers.length === incoming.packet.attachments) {
            const { packet, buffers } = incoming;
            incoming = null;
            packet.data = reconstruct(packet.data, buffers);
            this._onPacket(packet);
          }
          return;
        }
        if (data[0] === "0") {
          const open = JSON.parse(data.slice(1));
          this._heartbeat = open.pingInterval + open.pingTimeout;
          this._alive();
          const auth = this._opts.auth;
          // As socket.io-client: a reconnect asks for recovery; the page's own keys win.
          const connect = (value) =>
            this._send("0", this._pid ? Object.assign({ pid: this._pid, offset: this._lastOffset }, value) : value);
          if (typeof auth === "function") auth(connect);
          else connect(auth);
        } else if (data === "2") {
          this._alive();
          ws.send("3");
        } else if (data === "1") {
          this._lost("transport close");
        } else if (data[0] === "4") {
          const packet = decode(data.slice(1));
          if (packet.attachments) incoming = { packet, buffers: [] };
          else this._onPacket(packet);
        }
      } catch (err) {
        this._lost("parse error");
      }
    };
    ws.onclose = () => this._lost("transport close");
    ws.onerror = () => {};
    this._connectTimer = setTimeout(() => {
      this._error(new Error("timeout"));
      this._lost();
    }, timeout);
    return this;
  }

  open() {
    return this.connect();
  }

  disconnect() {
    if (this.connected) this._send("1");
    this.active = false;
    this._lost("io client disconnect");
    return this;
  }

  close() {
    return this.disconnect();
  }

  send(...args) {
    return this.emit("message", ...args);
  }

  timeout(ms) {
    this._flags.timeout = ms;
    return this;
  }

  emit(event, ...args) {
    const timeout = this._flags.timeout;
    this._flags = {};
    let id;
    if (typeof args[args.length - 1] === "function") {
      let ack = args.pop();
      id = this._ackId++;
      if (timeout !== undefined) {
        const fn = ack;
        const timer = setTimeout(() => {
          delete this._acks[id];
          this._buffer = this._buffer.filter((p) => p[3] !== id);
          fn(new Error("operation has timed out"));
        }, timeout);
        ack = (...result) => {
          clearTimeout(timer);
          fn(null, ...result);
        };
      }
      this._acks[id] = ack;
    }
    const packet = ["2", [event, ...args], id];
    if (this.connected) this._send(...packet);
    else this._buffer.push([...packet, id]);
    return this;
  }

  emitWithAck(event, ...args) {
    const withError = this._flags.timeout !== undefined;
    return new Promise((resolve, reject) => {
      args.push((err, value) => (withError ? (err ? reject(err) : resolve(value)) : resolve(err)));
      this.emit(event, ...args);
    });
  }

  _send(type, data, id) {
    const [text, buffers] = encode(+type, this.nsp, data, id);
    this._ws.send(text);
    for (const buffer of buffers) this._ws.send(buffer);
  }

  _onPacket(packet) {
    if (packet.nsp !== this.nsp) return;
    const type = packet.type;
    if (type === 0) {
      clearTimeout(this._connectTimer);
      const { sid, pid } = packet.data;
      this.id = sid;
      this.recovered = !!pid && this._pid === pid;
      this._pid = pid;
      this.connected = true;
      this._attempts = 0;
      this._fire("connect");
      for (const args of this._received.splice(0)) this._event(args);
      for (const [type, data, id] of this._buffer.splice(0)) this._send(type, data, id);
    } else if (type === 4) {
      // A middleware refused: the official client does not retry by itself.
      clearTimeout(this._connectTimer);
      this.active = false;
      const err = new Error(packet.data && packet.data.message);
      err.data = packet.data && packet.data.data;
      this._error(err);
      this._lost();
    } else if (type === 1) {
      this.active = false;
      this._lost("io server disconnect");
    } else if (type === 2 || type === 5) {
      const args = packet.data || [];
      if (packet.id != null) {
        let sent = false;
        args.push((...reply) => {
          if (sent) return;
          sent = true;
          this._send("3", reply, packet.id);
        });
      }
      if (this.connected) this._event(args);
      else this._received.push(args);
    } else if (type === 3 || type === 6) {
      const ack = this._acks[packet.id];
      delete this._acks[packet.id];
      if (ack) ack(...(packet.data || []));
    }
  }

  _event(args) {
    this._fire(...args);
    const last = args[args.length - 1];
    if (this._pid && typeof last === "string") this._lastOffset = last;
  }

  _error(err) {
    this._fire("connect_error", err);
  }

  _alive() {
    clearTimeout(this._pingTimer);
    this._pingTimer = setTimeout(() => this._lost("ping timeout"), this._heartbeat);
  }

  // The connection is gone (or given up): report, clean up, and retry if still active.
  _lost(reason) {
    const ws = this._ws;
    if (!ws) return;
    this._ws = null;
    ws.onmessage = ws.onclose = null;
    clearTimeout(this._pingTimer);
    clearTimeout(this._connectTimer);
    try {
      ws.close();
    } catch {}
    const wasConnected = this.connected;
    this.connected = false;
    this._received = [];
    this.id = undefined;
    if (wasConnected) this._fire("disconnect", reason);
    else if (reason && reason !== "io client disconnect" && this.active) this._error(new Error("websocket error"));
    this._reconnect();
  }

  _reconnect() {
    const o = this._opts;
    if (!this.active || o.reconnection === false) {
      this.active = false;
      return;
    }
    if (this._attempts >= (o.reconnectionAttempts ?? Infinity)) {
      this.active = false;
      return;
    }
    // socket.io-client's backoff: delay * 2^attempt, +/- jitter, capped.
    const base = (o.reconnectionDelay ?? 1000) * Math.pow(2, this._attempts++);
    const rand = Math.random();
    const deviation = Math.floor(rand * (o.randomizationFactor ?? 0.5) * base);
    const delay = Math.min(Math.floor(rand * 10) & 1 ? base + deviation : base - deviation, o.reconnectionDelayMax ?? 5000);
    this._retry = setTimeout(() => this.connect(), delay);
  }
}

export function io(uri, opts) {
  if (typeof uri === "object") {
    opts = uri;
    uri = undefined;
  }
  opts = opts || {};
  const base = typeof location !== "undefined" ? location.href : "http://localhost";
  const url = new URL(uri || "", base);
  const nsp = url.pathname === "/" || !uri ? "/" : url.pathname;
  const path = opts.path || "/socket.io/";
  const query = new URLSearchParams(opts.query || {});
  query.set("EIO", "4");
  query.set("transport", "websocket");
  const scheme = url.protocol === "https:" || url.protocol === "wss:" ? "wss://" : "ws://";
  return new Socket(scheme + url.host + path + "?" + query, nsp, opts);
}

export default io;
