// Types of wsgate client-js: the subset of socket.io-client v4 it implements, same names.

export interface SocketOptions {
  /** The Socket.IO endpoint path. Default "/socket.io/". */
  path?: string;
  /** CONNECT payload, or a function that calls back with it. */
  auth?: Record<string, unknown> | ((cb: (auth: Record<string, unknown>) => void) => void);
  /** Extra query parameters of the handshake. */
  query?: Record<string, string>;
  /** Accepted for compatibility: WebSocket handshakes carry the page's cookies anyway. */
  withCredentials?: boolean;
  /** Reconnect after a lost connection. Default true. */
  reconnection?: boolean;
  /** Give up after this many attempts. Default Infinity. */
  reconnectionAttempts?: number;
  /** First delay between attempts, in ms, doubled each time. Default 1000. */
  reconnectionDelay?: number;
  /** Longest delay between attempts, in ms. Default 5000. */
  reconnectionDelayMax?: number;
  /** Jitter, 0 to 1. Default 0.5. */
  randomizationFactor?: number;
  /** Connect timeout in ms. Default 20000. */
  timeout?: number;
  /** Connect at once. Default true. */
  autoConnect?: boolean;
  /** A WebSocket constructor, where the global one is missing (Node < 22). */
  WebSocket?: typeof WebSocket;
}

export type DisconnectReason =
  | "io server disconnect"
  | "io client disconnect"
  | "transport close"
  | "ping timeout"
  | "parse error";

export interface ConnectError extends Error {
  /** The `data` of the server's CONNECT_ERROR, if any. */
  data?: unknown;
}

export declare class Socket {
  readonly nsp: string;
  readonly id: string | undefined;
  /** Whether the last connect recovered the previous socket (its id, rooms and missed events). */
  readonly recovered: boolean;
  readonly connected: boolean;
  readonly disconnected: boolean;
  /** False once the client will not reconnect by itself. */
  readonly active: boolean;
  on(event: "connect", listener: () => void): this;
  on(event: "disconnect", listener: (reason: DisconnectReason) => void): this;
  on(event: "connect_error", listener: (err: ConnectError) => void): this;
  on(event: string, listener: (...args: any[]) => void): this;
  once(event: string, listener: (...args: any[]) => void): this;
  off(event?: string, listener?: (...args: any[]) => void): this;
  emit(event: string, ...args: any[]): this;
  emitWithAck(event: string, ...args: any[]): Promise<any>;
  timeout(ms: number): this;
  send(...args: any[]): this;
  connect(): this;
  open(): this;
  disconnect(): this;
  close(): this;
}

export declare function io(uri?: string, opts?: SocketOptions): Socket;
export declare function io(opts: SocketOptions): Socket;
export default io;
