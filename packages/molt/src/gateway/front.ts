/**
 * The data plane's listening side: one HTTP/1.1 server for the gateway and the API on molt's port.
 *
 * Requests for apps are served on the front's own connections, parsed by Node's llhttp parser (the
 * one `node:http` uses) straight from the socket, and answered by writing the response head as one
 * string: none of `node:http`'s per-request stream objects (`IncomingMessage`, `ServerResponse`)
 * is made for them, and they are most of what a Node proxy spends per request. Everything else (the
 * API, molt's pages on an app's host, HTTP/1.0, `Expect`, a request without `Host`) goes to a
 * `node:http` server in this process over an in-memory connection, so that it gets Node's full
 * request handling; its answers come back on the client's socket in order.
 *
 * One exchange at a time per connection: a pipelined request waits (its body buffered, reading
 * stopped) until the response before it is complete. Requests whose headers take longer than
 * `headersTimeoutMs`, or whose whole request takes longer than `requestTimeoutMs`, get 408 and
 * the connection closes, as `node:http` does (slowloris).
 */
import { EventEmitter } from 'node:events';
import { createServer as createHttpServer, type IncomingMessage, type OutgoingHttpHeaders, ServerResponse, type Server as HttpServer, STATUS_CODES } from 'node:http';
import { createRequire } from 'node:module';
import { createServer as createNetServer, type Server as NetServer, type Socket } from 'node:net';
import { Duplex } from 'node:stream';
import { createServer as createTlsServer, type TLSSocket } from 'node:tls';
import { answerClientError, type Gateway, type GatewayRequest, type GatewayResponse, type ParsedRoute } from './gateway.js';
import { tlsServerOptions, type TlsFiles } from './tls.js';

interface LlhttpRequestParser {
  initialize(type: number, resource: object, maxHeaderSize: number, lenient: number): void;
  execute(data: Buffer): number | Error;
  finish(): number | Error | undefined;
  consume(handle: unknown): void;
  unconsume(): void;
  getCurrentBuffer(): Buffer;
  free(): void;
  [callback: number]: unknown;
}
type ParseError = Error & { code?: string; reason?: string; bytesParsed?: number };

const common = createRequire(import.meta.url)('_http_common') as {
  HTTPParser: { new (): LlhttpRequestParser; REQUEST: number; kOnMessageBegin: number; kOnHeaders: number; kOnHeadersComplete: number; kOnBody: number; kOnMessageComplete: number; kOnExecute: number };
  methods: string[];
};
const { HTTPParser, methods } = common;

interface StreamHandle {
  readStart(): number;
  readStop(): number;
  _consumed?: boolean;
}
const handleOf = (socket: Socket) => (socket as unknown as { _handle: (StreamHandle & { isStreamBase?: boolean }) | null })._handle;

export interface FrontOptions {
  gateway: Gateway;
  /** What every request the gateway does not serve goes to (the API). */
  api(req: IncomingMessage, res: ServerResponse): void;
  tls?: TlsFiles;
  maxHeaderSize: number;
  keepAliveTimeoutMs: number;
  headersTimeoutMs: number;
  requestTimeoutMs: number;
}

/** `Date` for responses that carry none, made once a second. */
let dateValue = '';
let dateAt = 0;
function httpDate(): string {
  const now = Date.now();
  if (now - dateAt >= 1000) {
    dateAt = now - (now % 1000);
    dateValue = new Date(dateAt).toUTCString();
  }
  return dateValue;
}

/** A request the front serves itself: the parts of `IncomingMessage` the gateway reads. */
class FrontRequest extends EventEmitter implements GatewayRequest {
  readonly httpVersion = '1.1';
  complete = false;
  private buffered: Buffer[] = [];
  private flowing = false;
  private paused = false;
  private discarded = false;
  private cachedHeaders?: Record<string, string>;

  constructor(
    readonly method: string,
    readonly url: string,
    readonly rawHeaders: string[],
    readonly socket: Socket,
    private readonly conn: FrontConnection,
  ) {
    super();
  }

  /** Header values by lower-case name (first wins; as much as the gateway reads of them). */
  get headers(): Record<string, string> {
    if (this.cachedHeaders) return this.cachedHeaders;
    const headers: Record<string, string> = {};
    for (let i = 0; i < this.rawHeaders.length; i += 2) headers[this.rawHeaders[i]!.toLowerCase()] ??= this.rawHeaders[i + 1]!;
    return (this.cachedHeaders = headers);
  }

  override on(event: string | symbol, listener: (...args: any[]) => void): this {
    super.on(event, listener);
    if (event === 'data' && !this.flowing) {
      this.flowing = true;
      // Chunks that came before anyone listened (a token looked up first) go out now.
      queueMicrotask(() => this.flush());
    }
    return this;
  }

  setEncoding(_encoding: BufferEncoding): this {
    return this;
  }

  pause(): this {
    this.paused = true;
    this.conn.holdInput(this);
    return this;
  }

  resume(): this {
    this.paused = false;
    this.flush();
    return this;
  }

  /** A body chunk from the parser. */
  push(chunk: Buffer): void {
    if (this.discarded) return;
    if (this.flowing && !this.paused && this.buffered.length === 0) this.emit('data', chunk);
    else {
      this.buffered.push(chunk);
      this.conn.holdInput(this);
    }
  }

  /** The request is received whole. */
  finish(): void {
    this.complete = true;
    if (this.discarded) return;
    if (this.flowing && !this.paused && this.buffered.length === 0) this.emit('end');
  }

  /** Its response is complete: the rest of its body, if any, is read and dropped. */
  discard(): void {
    this.discarded = true;
    this.buffered = [];
    this.conn.releaseInput(this);
  }

  private flush(): void {
    while (this.buffered.length > 0 && !this.paused && !this.discarded) this.emit('data', this.buffered.shift()!);
    if (this.paused || this.discarded) return;
    this.conn.releaseInput(this);
    if (this.complete) this.emit('end');
  }
}

/** A response the front writes itself: the parts of `ServerResponse` the gateway uses. */
class FrontResponse extends EventEmitter implements GatewayResponse {
  headersSent = false;
  destroyed = false;
  private head = '';
  private chunked = false;
  private bodiless: boolean;
  private extra: [string, string][] = [];
  private ended = false;
  /** Whether the connection closes after this response. */
  private closing = false;

  constructor(
    private readonly socket: Socket,
    private readonly conn: FrontConnection,
    isHead: boolean,
    private readonly close: () => boolean,
  ) {
    super();
    this.bodiless = isHead;
  }

  setHeader(name: string, value: string): this {
    this.extra.push([name, value]);
    return this;
  }

  writeHead(status: number, reason?: string | OutgoingHttpHeaders | string[], headers?: OutgoingHttpHeaders | string[]): this {
    if (typeof reason !== 'string') {
      headers = reason;
      reason = undefined;
    }
    let head = `HTTP/1.1 ${status} ${reason ?? STATUS_CODES[status] ?? 'unknown'}\r\n`;
    let length = false;
    let date = false;
    const add = (name: string, value: unknown) => {
      if (value === undefined) return;
      if (name.length === 14 && name.toLowerCase() === 'content-length') length = true;
      else if (name.length === 4 && name.toLowerCase() === 'date') date = true;
      else if (name.length === 10 && name.toLowerCase() === 'connection') {
        // The handler closes the connection after this answer (a body it cannot frame, say).
        if (String(value).toLowerCase() === 'close') this.closing = true;
        return;
      }
      if (Array.isArray(value)) for (const v of value) head += `${name}: ${v}\r\n`;
      else head += `${name}: ${value}\r\n`;
    };
    if (Array.isArray(headers)) for (let i = 0; i < headers.length; i += 2) add(headers[i]!, headers[i + 1]);
    else if (headers) for (const name in headers) add(name, headers[name]);
    for (const [name, value] of this.extra) add(name, value);
    if (!date) head += `date: ${httpDate()}\r\n`;
    if (status < 200 || status === 204 || status === 304) this.bodiless = true;
    else if (!length && !this.bodiless) {
      this.chunked = true;
      head += 'transfer-encoding: chunked\r\n';
    }
    if (this.closing || this.close()) {
      this.closing = true;
      head += 'connection: close\r\n';
    }
    this.head = `${head}\r\n`;
    this.headersSent = true;
    return this;
  }

  write(chunk: Buffer | string): boolean {
    if (this.ended || this.destroyed) return false;
    const socket = this.socket;
    const head = this.head;
    const empty = chunk.length === 0;
    if (!head && (this.bodiless || empty)) return true;
    socket.cork();
    if (head) {
      this.head = '';
      socket.write(head, 'latin1');
    }
    let ok = true;
    if (!this.bodiless && !empty) {
      if (this.chunked) {
        socket.write(`${Buffer.byteLength(chunk).toString(16)}\r\n`, 'latin1');
        socket.write(chunk);
        ok = socket.write('\r\n', 'latin1');
      } else ok = socket.write(chunk);
    }
    socket.uncork();
    if (!ok) socket.once('drain', () => this.emit('drain'));
    return ok;
  }

  end(chunk?: Buffer | string): this {
    if (this.ended || this.destroyed) return this;
    if (!this.headersSent) this.writeHead(200);
    const socket = this.socket;
    socket.cork();
    // Writes the head if it is still pending, and the last chunk if there is one.
    this.write(chunk ?? '');
    if (this.chunked) socket.write('0\r\n\r\n', 'latin1');
    socket.uncork();
    this.ended = true;
    this.conn.exchangeDone(this.closing || this.close());
    this.emit('close');
    return this;
  }

  destroy(): void {
    if (this.destroyed) return;
    this.destroyed = true;
    this.socket.destroy();
    if (!this.ended) this.emit('close');
  }

  /** The connection closed under it. */
  aborted(): void {
    if (this.ended || this.destroyed) return;
    this.destroyed = true;
    this.emit('close');
  }
}

/** How a parsed request is served. */
type Pending =
  | { kind: 'gateway'; req: FrontRequest; route: ParsedRoute; keepAlive: boolean }
  | { kind: 'node'; head: string; body: Buffer[]; complete: boolean; chunked: boolean; keepAlive: boolean }
  | { kind: 'upgrade'; req: FrontRequest; head?: Buffer };

/** The in-memory connection to the `node:http` server, as that server sees a socket. */
class NodeSide extends Duplex {
  remoteAddress?: string;
  remotePort?: number;
  localAddress?: string;
  localPort?: number;
  encrypted?: boolean;
  /** node:http ended its side: what it wrote goes out before the client's connection closes. */
  private ended = false;

  constructor(
    private readonly client: Socket,
    private readonly onRead: () => void,
    private readonly onEnd: () => void,
  ) {
    super({ allowHalfOpen: true });
    this.remoteAddress = client.remoteAddress;
    this.remotePort = client.remotePort;
    this.localAddress = client.localAddress;
    this.localPort = client.localPort;
    this.encrypted = (client as TLSSocket).encrypted;
  }

  setTimeout(): this {
    return this;
  }

  setNoDelay(): this {
    return this;
  }

  setKeepAlive(): this {
    return this;
  }

  override _read(): void {
    this.onRead();
  }

  override _write(chunk: Buffer, _encoding: BufferEncoding, callback: (err?: Error | null) => void): void {
    if (this.client.destroyed) return callback();
    if (this.client.write(chunk)) callback();
    else this.client.once('drain', () => callback());
  }

  override _final(callback: () => void): void {
    this.ended = true;
    this.onEnd();
    callback();
  }

  /** node:http cut the exchange (a stream the API ended with an error): so is the client's connection. */
  override _destroy(err: Error | null, callback: (err?: Error | null) => void): void {
    if (!this.ended) this.client.destroy();
    callback(err);
  }
}

/** Marks the responses of the in-memory connections, to know when each is complete. */
const kExchangeDone = Symbol('molt.exchangeDone');

class FrontConnection {
  private readonly parser: LlhttpRequestParser;
  private readonly queue: Pending[] = [];
  /** The request whose bytes the parser is reading: its body chunks go to it. */
  private receiving?: FrontRequest | Extract<Pending, { kind: 'node' }>;
  private headerLines: string[] = [];
  private urlPart = '';
  private response?: FrontResponse;
  private nodeSide?: NodeSide;
  private holders = new Set<object>();
  private consumed = false;
  private closed = false;
  private ending = false;
  /** When the message being received began (ms), and whether its headers are in. */
  messageStart = 0;
  headersDone = false;

  constructor(
    readonly socket: Socket,
    private readonly front: Front,
  ) {
    const parser = (this.parser = new HTTPParser());
    parser.initialize(HTTPParser.REQUEST, {}, front.opts.maxHeaderSize, 0);
    parser[HTTPParser.kOnMessageBegin] = () => {
      this.messageStart = Date.now();
      this.headersDone = false;
    };
    parser[HTTPParser.kOnHeaders] = (headers: string[], url: string) => {
      for (const h of headers) this.headerLines.push(h);
      this.urlPart += url;
    };
    parser[HTTPParser.kOnHeadersComplete] = (major: number, minor: number, headers: string[] | undefined, method: number, url: string | undefined, _s: unknown, _m: unknown, upgrade: boolean, keepAlive: boolean) => {
      this.headersDone = true;
      this.onRequest(major, minor, headers ?? this.headerLines, methods[method]!, url ?? this.urlPart, upgrade, keepAlive);
      this.headerLines = [];
      this.urlPart = '';
      return 0;
    };
    parser[HTTPParser.kOnBody] = (chunk: Buffer) => {
      const r = this.receiving;
      if (r instanceof FrontRequest) r.push(chunk);
      else if (r) this.toNode(r, chunk);
    };
    parser[HTTPParser.kOnMessageComplete] = () => {
      const r = this.receiving;
      this.receiving = undefined;
      this.messageStart = 0;
      if (r instanceof FrontRequest) r.finish();
      else if (r) this.toNode(r, null);
    };
    parser[HTTPParser.kOnExecute] = (result: number | ParseError) => this.afterExecute(result);

    const handle = handleOf(socket);
    // As node:http does: the parser reads the socket's handle itself, with no stream in between.
    if (handle?.isStreamBase && !handle._consumed) {
      handle._consumed = true;
      parser.consume(handle);
      this.consumed = true;
    } else socket.on('data', (data: Buffer) => this.afterExecute(this.parser.execute(data), data));
    socket.on('end', () => {
      const result = this.parser.finish();
      if (result instanceof Error) return this.fail(result as ParseError);
      this.ending = true;
      if (this.queue.length === 0) socket.end();
    });
    socket.on('error', () => socket.destroy());
    socket.on('close', () => this.onClose());
    socket.setTimeout(front.opts.keepAliveTimeoutMs, () => {
      if (this.idle()) socket.destroy();
    });
  }

  /** No exchange under way and no request begun: it may be closed without cutting anything. */
  idle(): boolean {
    return this.queue.length === 0 && this.messageStart === 0;
  }

  private onRequest(major: number, minor: number, raw: string[], method: string, url: string, upgrade: boolean, keepAlive: boolean): void {
    const front = this.front;
    let pending: Pending | undefined;
    if (upgrade) pending = { kind: 'upgrade', req: new FrontRequest(method, url, raw, this.socket, this) };
    else if (major === 1 && minor === 1 && !front.retiring) {
      // HTTP/1.1 without Host, or with Expect, gets node:http's own answer (400, 100/417).
      let host = false;
      let expect = false;
      for (let i = 0; i < raw.length; i += 2) {
        const n = raw[i]!;
        if (n.length === 4 && n.toLowerCase() === 'host') host = true;
        else if (n.length === 6 && n.toLowerCase() === 'expect') expect = true;
      }
      const route = host && !expect ? front.opts.gateway.routeOf(url, raw) : undefined;
      if (route && !(route instanceof Error) && !(route.host && route.path.startsWith('/.molt/'))) {
        const req = new FrontRequest(method, url, raw, this.socket, this);
        pending = { kind: 'gateway', req, route, keepAlive };
        this.receiving = req;
      }
    }
    if (!pending) {
      let head = `${method} ${url} HTTP/${major}.${minor}\r\n`;
      let chunked = false;
      for (let i = 0; i < raw.length; i += 2) {
        head += `${raw[i]}: ${raw[i + 1]}\r\n`;
        if (raw[i]!.length === 17 && raw[i]!.toLowerCase() === 'transfer-encoding') chunked = true;
      }
      const node: Pending = { kind: 'node', head: `${head}\r\n`, body: [], complete: false, chunked, keepAlive };
      pending = node;
      this.receiving = node;
    }
    this.queue.push(pending);
    if (this.queue.length === 1) this.start();
    else this.holdInput(this.queue);
  }

  private afterExecute(result: number | ParseError, data?: Buffer): void {
    (this.socket as unknown as { _unrefTimer?: () => void })._unrefTimer?.();
    if (result instanceof Error) return this.fail(result);
    const last = this.queue[this.queue.length - 1];
    if (last?.kind === 'upgrade' && last.head === undefined) {
      // The parser stops at the end of an upgrade's head: what follows is the new protocol's.
      const buffer = data ?? this.parser.getCurrentBuffer();
      last.head = buffer.subarray(result);
      this.stopParsing();
      if (this.queue.length === 1) this.start();
    }
  }

  /** Serves the exchange at the head of the queue. */
  private start(): void {
    const next = this.queue[0];
    if (!next || this.closed) return;
    this.releaseInput(this.queue);
    if (next.kind === 'gateway') {
      const res = (this.response = new FrontResponse(this.socket, this, next.req.method === 'HEAD', () => !next.keepAlive || this.front.retiring || this.ending));
      this.front.opts.gateway.serve(next.req, res, next.route);
    } else if (next.kind === 'node') {
      const side = this.node();
      side.push(next.head);
      for (const chunk of next.body) this.pushNode(next, chunk);
      next.body = [];
      if (next.complete && next.chunked) side.push('0\r\n\r\n');
    } else if (next.head !== undefined) {
      const { req, head } = next;
      this.socket.setTimeout(0);
      this.socket.removeAllListeners('end');
      this.socket.removeAllListeners('close');
      this.socket.removeAllListeners('error');
      this.socket.on('error', () => this.socket.destroy());
      this.front.forget(this);
      if (!this.front.opts.gateway.handleUpgrade(req, this.socket, head)) this.socket.destroy();
    }
  }

  /** The response at the head of the queue is complete. */
  exchangeDone(close: boolean): void {
    const done = this.queue.shift();
    this.response = undefined;
    if (done?.kind === 'gateway') done.req.discard();
    if (close || this.closed) {
      this.closed = true;
      this.socket.end();
      return;
    }
    if (this.queue.length > 0) this.start();
    else if (this.ending) this.socket.end();
  }

  /** A body chunk (or, with null, the end) of a request for node:http. */
  private toNode(r: Extract<Pending, { kind: 'node' }>, chunk: Buffer | null): void {
    if (chunk === null) r.complete = true;
    if (this.queue[0] !== r) {
      if (chunk) {
        r.body.push(chunk);
        this.holdInput(r);
      }
      return;
    }
    if (chunk) this.pushNode(r, chunk);
    else if (r.chunked) this.node().push('0\r\n\r\n');
  }

  private pushNode(r: Extract<Pending, { kind: 'node' }>, chunk: Buffer): void {
    const side = this.node();
    let ok: boolean;
    if (r.chunked) {
      side.push(`${chunk.length.toString(16)}\r\n`);
      side.push(chunk);
      ok = side.push('\r\n');
    } else ok = side.push(chunk);
    // node:http reads it when it can: until then the client's socket is not read.
    if (!ok) this.holdInput(side);
  }

  private node(): NodeSide {
    if (this.nodeSide) return this.nodeSide;
    const side: NodeSide = new NodeSide(this.socket, () => this.releaseInput(side), () => {
      // node:http ended its side (a `Connection: close` answer, or an error it answered).
      this.closed = true;
      this.socket.end();
    });
    (side as unknown as Record<symbol, () => void>)[kExchangeDone] = () => this.exchangeDone(false);
    this.nodeSide = side;
    this.front.http.emit('connection', side);
    return side;
  }

  /** Stops reading the client while `holder` has something it cannot pass on yet. */
  holdInput(holder: object): void {
    if (this.holders.size === 0) this.readStop();
    this.holders.add(holder);
  }

  releaseInput(holder: object): void {
    if (!this.holders.delete(holder) || this.holders.size > 0) return;
    this.readStart();
  }

  private readStop(): void {
    if (this.consumed) handleOf(this.socket)?.readStop();
    else this.socket.pause();
  }

  private readStart(): void {
    if (this.closed) return;
    if (this.consumed) handleOf(this.socket)?.readStart();
    else this.socket.resume();
  }

  private stopParsing(): void {
    if (this.consumed) {
      this.parser.unconsume();
      this.consumed = false;
    }
    this.socket.removeAllListeners('data');
    this.readStop();
  }

  /** The request could not be parsed: answered with the JSON error unless a response is under way. */
  private fail(err: ParseError): void {
    this.stopParsing();
    // After an answer that closes the connection, what follows it is not read.
    if (this.closed) return;
    this.closed = true;
    const res = this.response;
    const node = this.queue[0]?.kind === 'node';
    this.queue.length = 0;
    if (res?.headersSent || node) {
      this.socket.destroy();
      res?.aborted();
      return;
    }
    // The worker sees its request end unfinished (the response's close cuts the upstream connection).
    res?.aborted();
    if (err.code === 'HPE_INVALID_EOF_STATE' || this.socket.destroyed) this.socket.destroy();
    else answerClientError(Object.assign(err, { reason: err.reason ?? err.message }), this.socket);
  }

  /** A request is over its time: 408, then the connection closes. */
  timedOut(): void {
    const err: NodeJS.ErrnoException = new Error('request timeout');
    err.code = 'ERR_HTTP_REQUEST_TIMEOUT';
    this.fail(err);
  }

  private onClose(): void {
    this.closed = true;
    this.front.forget(this);
    this.response?.aborted();
    this.nodeSide?.destroy();
    if (this.consumed) this.parser.unconsume();
    this.parser.free();
  }
}

/** The port's server (plain or TLS), its connections and the node:http server behind it. */
export class Front {
  readonly server: NetServer;
  /** Where requests the gateway does not serve itself are handled. */
  readonly http: HttpServer;
  /** Set while the server hands over: every answer closes its connection. */
  retiring = false;
  private readonly connections = new Set<FrontConnection>();
  private readonly sweeper: NodeJS.Timeout;

  constructor(readonly opts: FrontOptions) {
    const accept = (socket: Socket) => {
      socket.setNoDelay(true);
      this.connections.add(new FrontConnection(socket, this));
    };
    this.server = opts.tls
      ? createTlsServer({ ...tlsServerOptions(opts.tls), ALPNProtocols: ['http/1.1'], allowHalfOpen: true }).on('secureConnection', accept)
      : createNetServer({ allowHalfOpen: true }, accept);
    // A TLS handshake that fails has no HTTP connection to answer on.
    this.server.on('tlsClientError', (_err: Error, socket: Socket) => socket.destroy());
    class FrontServerResponse extends ServerResponse {
      constructor(req: IncomingMessage) {
        super(req);
        const done = (req.socket as unknown as Record<symbol, (() => void) | undefined>)[kExchangeDone];
        if (done) this.once('finish', done);
      }
    }
    this.http = createHttpServer({ maxHeaderSize: opts.maxHeaderSize, ServerResponse: FrontServerResponse }, (req, res) => {
      if (this.retiring) res.setHeader('connection', 'close');
      if (!opts.gateway.handle(req, res)) opts.api(req, res);
    });
    this.http.on('clientError', answerClientError);
    this.http.keepAliveTimeout = opts.keepAliveTimeoutMs;
    this.http.headersTimeout = opts.headersTimeoutMs;
    this.http.requestTimeout = opts.requestTimeoutMs;
    this.sweeper = setInterval(() => this.sweep(), 1000).unref();
  }

  forget(conn: FrontConnection): void {
    this.connections.delete(conn);
  }

  /** Closes the connections with nothing under way (an upgraded connection is the app's). */
  closeIdleConnections(): void {
    for (const conn of this.connections) if (conn.idle()) conn.socket.destroy();
  }

  closeAllConnections(): void {
    for (const conn of this.connections) conn.socket.destroy();
    this.http.closeAllConnections();
  }

  /** Stops accepting and closes every connection. */
  close(): Promise<void> {
    clearInterval(this.sweeper);
    const closed = new Promise<void>((r) => this.server.close(() => r()));
    this.closeAllConnections();
    return closed;
  }

  private sweep(): void {
    const now = Date.now();
    for (const conn of this.connections) {
      if (conn.messageStart === 0) continue;
      const age = now - conn.messageStart;
      if ((!conn.headersDone && age > this.opts.headersTimeoutMs) || age > this.opts.requestTimeoutMs) conn.timedOut();
    }
  }
}
