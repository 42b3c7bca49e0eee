/**
 * WebSockets the web way inside a worker: `upgradeWebSocket(request)` of `@molt/app` returns a
 * standard `WebSocket` and a `101` response, as Deno's does; an upgrade request goes through the
 * app's `fetch` like any other, and when `fetch` answers with that response the handshake is
 * completed (by `ws`) and the socket opens. Any other answer is written as plain HTTP and the
 * socket closes without opening.
 */
import { type IncomingMessage, STATUS_CODES } from 'node:http';
import type { Duplex } from 'node:stream';
import { WebSocketServer, type WebSocket as WsSocket, type RawData } from 'ws';
import type { UpgradeWebSocketOptions, WebSocketUpgrade } from '@molt/app';
import { type AppSlot, flatHeaders } from './serve-fetch.js';
import { waitAtMost } from '../wait.js';
import { lazyRequest, plainResponse, switchingProtocols } from './web-objects.js';

/** What a close that never got a close frame reports (RFC 6455 §7.1.5). */
const ABNORMAL = 1006;
const GOING_AWAY = 1001;
const DEFAULT_IDLE_SECONDS = 120;

/** `CloseEvent` is global only from Node 23. */
const CloseEventClass: typeof CloseEvent =
  globalThis.CloseEvent ??
  class CloseEvent extends Event {
    readonly code: number;
    readonly reason: string;
    readonly wasClean: boolean;
    constructor(type: string, init: CloseEventInit = {}) {
      super(type, init);
      this.code = init.code ?? 0;
      this.reason = init.reason ?? '';
      this.wasClean = init.wasClean ?? false;
    }
  };

type Handler = ((this: WebSocket, ev: Event) => unknown) | null;

/**
 * The server side of a WebSocket, with the standard interface (readyState, send, close, binaryType,
 * the four events and their `on…` attributes). It is CONNECTING until the handshake is written.
 */
export class ServerWebSocket extends EventTarget {
  static readonly CONNECTING = 0;
  static readonly OPEN = 1;
  static readonly CLOSING = 2;
  static readonly CLOSED = 3;
  readonly CONNECTING = 0;
  readonly OPEN = 1;
  readonly CLOSING = 2;
  readonly CLOSED = 3;
  readyState: 0 | 1 | 2 | 3 = 0;
  binaryType: BinaryType = 'blob';
  protocol = '';
  readonly extensions = '';
  private ws?: WsSocket;
  /** A close asked for before the socket opened: done as soon as it does. */
  private closeAsked?: { code?: number; reason?: string };
  /** Sends wait here while a Blob before them is read, so that frames keep their order. */
  private queue: Promise<void> = Promise.resolve();
  private readonly handlers = new Map<string, { fn: Handler; listener: EventListener }>();

  constructor(readonly url: string) {
    super();
  }

  get bufferedAmount(): number {
    return this.ws?.bufferedAmount ?? 0;
  }

  // The `on…` event handler attributes, defined below the class for its four events.
  declare onopen: Handler;
  declare onmessage: Handler;
  declare onclose: Handler;
  declare onerror: Handler;

  send(data: string | ArrayBufferLike | Blob | ArrayBufferView): void {
    if (this.readyState === 0) throw new DOMException('the WebSocket is not open yet: send from its open event', 'InvalidStateError');
    if (this.readyState !== 1) return;
    const ws = this.ws!;
    if (data instanceof Blob) {
      this.queue = this.queue.then(async () => {
        const bytes = Buffer.from(await data.arrayBuffer());
        if (ws.readyState === ws.OPEN) ws.send(bytes, { binary: true });
      });
      return;
    }
    const frame = typeof data === 'string' ? data : ArrayBuffer.isView(data) ? Buffer.from(data.buffer, data.byteOffset, data.byteLength) : Buffer.from(data as ArrayBuffer);
    const binary = typeof data !== 'string';
    this.queue = this.queue.then(() => {
      if (ws.readyState === ws.OPEN) ws.send(frame, { binary });
    });
  }

  close(code?: number, reason?: string): void {
    if (code !== undefined && code !== 1000 && !(code >= 3000 && code <= 4999)) throw new DOMException(`close code ${code} is not 1000 or in 3000–4999`, 'InvalidAccessError');
    if (reason !== undefined && Buffer.byteLength(reason) > 123) throw new DOMException('a close reason is at most 123 bytes', 'SyntaxError');
    if (this.readyState >= 2) return;
    if (this.readyState === 0) {
      this.closeAsked = { code, reason };
      return;
    }
    this.readyState = 2;
    void this.queue.then(() => this.ws!.close(code, reason));
  }

  /** The handshake is written: the socket is open. */
  opened(ws: WsSocket): void {
    this.ws = ws;
    this.protocol = ws.protocol;
    this.readyState = 1;
    ws.on('message', (data: RawData, isBinary: boolean) => this.dispatchEvent(new MessageEvent('message', { data: isBinary ? this.binary(data) : data.toString() })));
    ws.on('close', (code: number, reason: Buffer) => this.closed(code, reason.toString()));
    ws.on('error', (err: Error) => this.failed(err));
    this.dispatchEvent(new Event('open'));
    if (this.closeAsked) this.close(this.closeAsked.code, this.closeAsked.reason);
  }

  /** It never opened, or the connection broke: an error, then a close without a close frame. */
  failed(err: Error): void {
    if (this.readyState === 3) return;
    const event = new Event('error');
    Object.defineProperty(event, 'error', { value: err });
    Object.defineProperty(event, 'message', { value: err.message });
    this.dispatchEvent(event);
    if (!this.ws) this.closed(ABNORMAL, '');
  }

  /** Closes it because the worker stops: a close frame with 1001, as a server going down sends. */
  goAway(reason: string): void {
    if (this.readyState === 3) return;
    if (!this.ws) return this.failed(new Error(reason));
    this.readyState = 2;
    this.ws.close(GOING_AWAY, reason);
  }

  /** Ends it at once (after goAway, when the client does not answer the close). */
  terminate(): void {
    this.ws?.terminate();
  }

  private closed(code: number, reason: string): void {
    if (this.readyState === 3) return;
    this.readyState = 3;
    this.dispatchEvent(new CloseEventClass('close', { code, reason, wasClean: code !== ABNORMAL }));
  }

  private binary(data: RawData): Blob | ArrayBuffer {
    const bytes = Array.isArray(data) ? Buffer.concat(data) : Buffer.isBuffer(data) ? data : Buffer.from(data);
    // A copy: the received Buffer may be a view into a larger one.
    const buffer = bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.byteLength) as ArrayBuffer;
    return this.binaryType === 'arraybuffer' ? buffer : new Blob([buffer]);
  }

  /** What `on<type>` reads. */
  handler(type: string): Handler {
    return this.handlers.get(type)?.fn ?? null;
  }

  /** What setting `on<type>` does: one listener in the list, replaced by the next handler set. */
  setHandler(type: string, fn: Handler): void {
    const old = this.handlers.get(type);
    if (old) this.removeEventListener(type, old.listener);
    this.handlers.delete(type);
    if (typeof fn !== 'function') return;
    const listener = (ev: Event) => fn.call(this as unknown as WebSocket, ev);
    this.handlers.set(type, { fn, listener });
    this.addEventListener(type, listener);
  }
}

for (const type of ['open', 'message', 'close', 'error']) {
  Object.defineProperty(ServerWebSocket.prototype, `on${type}`, {
    get(this: ServerWebSocket) {
      return this.handler(type);
    },
    set(this: ServerWebSocket, fn: Handler) {
      this.setHandler(type, fn);
    },
  });
}

/** An upgrade request on its way through `fetch`. */
interface Pending {
  req: IncomingMessage;
  socket: Duplex;
  head: Buffer;
  /** Set by upgradeWebSocket: the socket to open, the protocol to answer with. */
  upgrade?: { socket: ServerWebSocket; protocol?: string; idleSeconds: number };
  /** Headers the app put on its 101 answer (cookies), written with the handshake. */
  extraHeaders?: string[];
}

/**
 * Serves the upgrade requests of one worker: each goes through `slot.app.fetch`, and the open
 * sockets are known so that a stopping worker can close them.
 */
export class WebSockets {
  private readonly pending = new WeakMap<Request, Pending>();
  private readonly byReq = new WeakMap<IncomingMessage, Pending>();
  private readonly open = new Set<ServerWebSocket>();
  private readonly server = new WebSocketServer({
    noServer: true,
    clientTracking: false,
    handleProtocols: (_offered, req) => this.byReq.get(req)?.upgrade?.protocol ?? false,
  });

  constructor(
    private readonly slot: AppSlot,
    private readonly onError: (err: unknown) => void,
  ) {
    this.server.on('headers', (headers: string[], req: IncomingMessage) => {
      const extra = this.byReq.get(req)?.extraHeaders;
      if (extra) headers.push(...extra);
    });
  }

  /** How many sockets are open now. */
  get count(): number {
    return this.open.size;
  }

  /** What `upgradeWebSocket` of `@molt/app` does in this worker. */
  upgradeWebSocket = (request: Request, options: UpgradeWebSocketOptions): WebSocketUpgrade => {
    const pending = this.pending.get(request);
    if (request?.headers?.get('upgrade')?.toLowerCase() !== 'websocket') throw new TypeError("upgradeWebSocket: the request has no 'Upgrade: websocket' header; answer it as plain HTTP");
    if (!pending) throw new TypeError('upgradeWebSocket: pass the Request that fetch was called with (a copy of it cannot be upgraded)');
    if (pending.upgrade) throw new TypeError('upgradeWebSocket: this request was upgraded already');
    const idleSeconds = options.idleTimeout ?? DEFAULT_IDLE_SECONDS;
    if (!(Number.isFinite(idleSeconds) && idleSeconds >= 0)) throw new TypeError(`upgradeWebSocket: idleTimeout must be a number of seconds ≥ 0, not ${String(options.idleTimeout)}`);
    const socket = new ServerWebSocket(request.url.replace(/^http/, 'ws'));
    pending.upgrade = { socket, protocol: options.protocol, idleSeconds };
    return { socket: socket as unknown as WebSocket, response: switchingProtocols() };
  };

  /** An upgrade request: through `fetch`; the socket opens when it answers with the upgrade's response. */
  handle(req: IncomingMessage, socket: Duplex, head: Buffer): void {
    let request: Request;
    try {
      request = lazyRequest(req, socket);
    } catch (err) {
      socket.end(rawResponse(400, 'Bad Request', [], JSON.stringify({ error: { code: 'MOLT_ERR_BAD_REQUEST', message: String(err) } })));
      return;
    }
    const pending: Pending = { req, socket, head };
    this.pending.set(request, pending);
    this.byReq.set(req, pending);
    socket.on('error', () => {});
    Promise.resolve()
      .then(() => this.slot.app.fetch(request))
      .then(async (response) => {
        if (!(response instanceof Response)) throw new TypeError(`fetch() returned ${typeof response}, not a Response`);
        const up = pending.upgrade;
        if (response.status === 101 && !up) throw new TypeError('fetch() answered 101 without upgradeWebSocket(request)');
        if (response.status === 101 && up) return this.complete(pending, up, response);
        up?.socket.failed(new Error(`the app answered the upgrade with HTTP ${response.status}, not the upgrade's response`));
        socket.end(await writtenResponse(response));
      })
      .catch((err) => {
        this.onError(err);
        pending.upgrade?.socket.failed(err instanceof Error ? err : new Error(String(err)));
        socket.end(rawResponse(500, 'Internal Server Error', ['content-type', 'application/json'], JSON.stringify({ error: { code: 'MOLT_ERR_APP', message: 'the app threw while handling this request; see `molt app logs`' } })));
      });
  }

  /** Closes every open socket with 1001 and resolves when all are closed, or after `graceMs`. */
  async closeAll(reason: string, graceMs: number): Promise<void> {
    if (this.open.size === 0) return;
    const sockets = [...this.open];
    const closed = Promise.all(sockets.map((s) => (s.readyState === 3 ? undefined : new Promise((r) => s.addEventListener('close', r, { once: true })))));
    for (const s of sockets) s.goAway(reason);
    await waitAtMost(closed, graceMs);
    for (const s of sockets) s.terminate();
  }

  private complete(pending: Pending, up: NonNullable<Pending['upgrade']>, response: Response): void {
    const flat = flatHeaders(response.headers);
    pending.extraHeaders = [];
    for (let i = 0; i < flat.length; i += 2) if (!HANDSHAKE_HEADERS.has(flat[i]!)) pending.extraHeaders.push(`${flat[i]}: ${flat[i + 1]}`);
    this.server.handleUpgrade(pending.req, pending.socket, pending.head, (ws) => {
      this.open.add(up.socket);
      up.socket.addEventListener('close', () => this.open.delete(up.socket), { once: true });
      if (up.idleSeconds > 0) keepAlive(ws, up.idleSeconds * 1000);
      up.socket.opened(ws);
    });
    // ws answered a bad handshake (400) itself: the socket never opens.
    if (pending.socket.destroyed || !pending.socket.writable) up.socket.failed(new Error('the WebSocket handshake was refused (bad Sec-WebSocket-Key or -Version)'));
  }
}

/** Headers of the handshake itself: ws writes them. */
const HANDSHAKE_HEADERS = new Set(['connection', 'upgrade', 'sec-websocket-accept', 'sec-websocket-protocol', 'sec-websocket-extensions', 'content-length', 'content-type', 'transfer-encoding']);

/** Pings a socket that has been silent for `idleMs`; one that does not answer within as long again is cut. */
function keepAlive(ws: WsSocket, idleMs: number): void {
  let heard = true;
  const hear = () => (heard = true);
  ws.on('message', hear).on('pong', hear).on('ping', hear);
  const timer = setInterval(() => {
    if (!heard) return ws.terminate();
    heard = false;
    ws.ping();
  }, idleMs);
  timer.unref();
  ws.on('close', () => clearInterval(timer));
}

/** An HTTP/1.1 answer on a raw socket, closing it. */
function rawResponse(status: number, statusText: string, headers: string[], body: string | Uint8Array): Buffer {
  const lines = [`HTTP/1.1 ${status} ${statusText || STATUS_CODES[status] || ''}`];
  for (let i = 0; i < headers.length; i += 2) {
    const name = headers[i]!.toLowerCase();
    if (name !== 'content-length' && name !== 'connection' && name !== 'transfer-encoding') lines.push(`${headers[i]}: ${headers[i + 1]}`);
  }
  const bytes = typeof body === 'string' ? Buffer.from(body) : body;
  lines.push(`content-length: ${bytes.byteLength}`, 'connection: close', '', '');
  return Buffer.concat([Buffer.from(lines.join('\r\n')), bytes]);
}

/** An app's answer to an upgrade it did not accept, as bytes for the raw socket. */
async function writtenResponse(response: Response): Promise<Buffer> {
  const plain = plainResponse(response);
  if (plain) return rawResponse(plain.status, plain.statusText ?? '', plain.headers, plain.body ?? '');
  return rawResponse(response.status, response.statusText, flatHeaders(response.headers), new Uint8Array(await response.arrayBuffer()));
}
