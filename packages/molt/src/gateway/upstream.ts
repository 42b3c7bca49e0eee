/**
 * Keep-alive HTTP/1.1 connections from the gateway to one worker.
 *
 * The gateway writes each request head as one string and parses responses with Node's own llhttp
 * parser (the one `node:http` uses), without the `ClientRequest`/`Agent` stream machinery around
 * it: that machinery, not the parsing, is most of what a Node proxy spends per request. Bodies
 * stream both ways with backpressure; nothing is buffered whole.
 */
import { createRequire } from 'node:module';
import { connect, type Socket } from 'node:net';
import type { WorkerAddress } from './target.js';

interface LlhttpParser {
  initialize(type: number, resource: object): void;
  finish(): number | Error | undefined;
  consume(handle: unknown): void;
  unconsume(): void;
  free(): void;
  [callback: number]: unknown;
}
interface LlhttpParserClass {
  new (): LlhttpParser;
  RESPONSE: number;
  kOnHeaders: number;
  kOnHeadersComplete: number;
  kOnBody: number;
  kOnMessageComplete: number;
  kOnExecute: number;
}

// `_http_common` is the module through which node:http itself reaches llhttp.
const { HTTPParser } = createRequire(import.meta.url)('_http_common') as { HTTPParser: LlhttpParserClass };
const kOnHeaders = HTTPParser.kOnHeaders;
const kOnHeadersComplete = HTTPParser.kOnHeadersComplete;
const kOnBody = HTTPParser.kOnBody;
const kOnMessageComplete = HTTPParser.kOnMessageComplete;
const kOnExecute = HTTPParser.kOnExecute;

/** The libuv handle under a socket: the parser reads from it directly, and backpressure stops it. */
interface StreamHandle {
  readStart(): number;
  readStop(): number;
}
const handleOf = (socket: Socket) => (socket as unknown as { _handle: StreamHandle | null })._handle;

/** What the gateway does with one response. */
export interface Exchange {
  /** Whether the request was HEAD: its response has no body whatever its headers say. */
  readonly head: boolean;
  /** Status line and headers (flat name/value list, as received). */
  onHead(status: number, statusMessage: string, headers: string[]): void;
  /** A body chunk, in order; the connection pauses while `pause()` holds. */
  onBody(chunk: Buffer): void;
  /** The response is complete. */
  onComplete(): void;
  /** The connection failed or closed before the response was complete. */
  onError(err: NodeJS.ErrnoException): void;
}

/** An upstream connection error before the response began, so the request may be resent. */
export function isRetryable(err: NodeJS.ErrnoException): boolean {
  return err.code === 'ECONNRESET' || err.code === 'EPIPE' || err.code === 'MOLT_UPSTREAM_CLOSED';
}

function closedError(): NodeJS.ErrnoException {
  const err: NodeJS.ErrnoException = new Error('the worker closed the connection before it answered');
  err.code = 'MOLT_UPSTREAM_CLOSED';
  return err;
}

/** One connection, serving one exchange at a time. */
export class UpstreamConnection {
  readonly socket: Socket;
  /** True once it has served a request: a failure on it may be a keep-alive race, not the worker. */
  reused = false;
  /** When it last went idle (ms, monotonic). */
  idleSince = 0;
  private readonly parser: LlhttpParser;
  private exchange: Exchange | null = null;
  private responded = false;
  private keepAlive = false;
  private headers: string[] = [];
  private closed = false;
  private consumed = false;

  constructor(
    address: WorkerAddress,
    private readonly pool: UpstreamPool,
  ) {
    this.socket = connect({ ...address, noDelay: true });
    const parser = (this.parser = new HTTPParser());
    parser.initialize(HTTPParser.RESPONSE, {});
    parser[kOnHeaders] = (headers: string[]) => {
      // More than 32 header lines arrive in several calls before the head completes.
      for (const h of headers) this.headers.push(h);
    };
    parser[kOnHeadersComplete] = (_major: number, _minor: number, headers: string[] | undefined, _m: unknown, _u: unknown, status: number, statusMessage: string, _upgrade: boolean, keepAlive: boolean): number => {
      const all = headers ?? this.headers;
      this.headers = [];
      // An interim response (100 Continue): the final one follows on the same connection.
      if (status < 200) return 0;
      this.responded = true;
      this.keepAlive = keepAlive;
      this.exchange?.onHead(status, statusMessage, all);
      return this.exchange?.head ? 1 : 0;
    };
    parser[kOnBody] = (chunk: Buffer) => this.exchange?.onBody(chunk);
    parser[kOnMessageComplete] = () => {
      if (!this.responded) return; // the end of an interim response
      const exchange = this.exchange;
      this.exchange = null;
      this.responded = false;
      if (this.keepAlive && !this.closed) this.pool.release(this);
      else this.destroy();
      exchange?.onComplete();
    };
    parser[kOnExecute] = (result: number | Error) => {
      if (result instanceof Error) this.fail(result);
    };
    // As node:http does: the parser reads the socket's handle itself, with no stream in between.
    this.socket.once('connect', () => {
      const handle = handleOf(this.socket);
      if (handle && !this.closed) {
        parser.consume(handle);
        this.consumed = true;
      }
    });
    this.socket.on('end', () => {
      // A response delimited by the end of the connection completes here.
      const result = this.exchange ? parser.finish() : undefined;
      if (result instanceof Error) this.fail(result);
      this.fail(closedError());
    });
    this.socket.on('error', (err) => this.fail(err));
    this.socket.on('close', () => {
      this.fail(closedError());
      if (this.consumed) parser.unconsume();
      parser.free();
    });
  }

  /** Sends a request head (and later its body through `write`/`end`) and waits for the answer. */
  send(head: string, exchange: Exchange): void {
    this.exchange = exchange;
    this.socket.write(head, 'latin1');
  }

  write(chunk: Buffer): boolean {
    return this.socket.write(chunk);
  }

  /** Stops reading the worker's answer while the client is slow. */
  pause(): void {
    handleOf(this.socket)?.readStop();
  }

  resume(): void {
    if (!this.closed) handleOf(this.socket)?.readStart();
  }

  /** Closes the connection; an exchange in progress gets `onError`. */
  destroy(err?: Error): void {
    if (err) this.fail(err);
    else this.close();
  }

  private fail(err: NodeJS.ErrnoException): void {
    const exchange = this.exchange;
    this.exchange = null;
    this.close();
    exchange?.onError(err);
  }

  private close(): void {
    if (this.closed) return;
    this.closed = true;
    this.pool.forget(this);
    this.socket.destroy();
  }
}

/** Idle connections close well before the worker's 65 s keep-alive timeout (nodejs/node#47130). */
const IDLE_MS = 30_000;

/** The keep-alive connections to one worker; the most recently used idle one serves next. */
export class UpstreamPool {
  private readonly idle: UpstreamConnection[] = [];
  private readonly all = new Set<UpstreamConnection>();
  private readonly sweeper: NodeJS.Timeout;

  constructor(private readonly address: WorkerAddress) {
    this.sweeper = setInterval(() => this.sweep(), IDLE_MS / 3).unref();
  }

  /** An idle connection, or a new one (which connects while the request head is queued). */
  acquire(): UpstreamConnection {
    const idle = this.idle.pop();
    if (idle) return idle;
    const conn = new UpstreamConnection(this.address, this);
    this.all.add(conn);
    return conn;
  }

  release(conn: UpstreamConnection): void {
    conn.reused = true;
    conn.idleSince = performance.now();
    this.idle.push(conn);
  }

  forget(conn: UpstreamConnection): void {
    this.all.delete(conn);
    const i = this.idle.indexOf(conn);
    if (i >= 0) this.idle.splice(i, 1);
  }

  /** Closes every connection, idle or busy. */
  destroy(): void {
    clearInterval(this.sweeper);
    for (const conn of [...this.all]) conn.destroy();
  }

  private sweep(): void {
    const cutoff = performance.now() - IDLE_MS;
    // The idle list is in release order: the oldest are first.
    while (this.idle.length > 0 && this.idle[0]!.idleSince < cutoff) this.idle[0]!.destroy();
  }
}
