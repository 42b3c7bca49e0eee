/**
 * Cheap web `Request` and `Response` objects for the worker's hot path.
 *
 * Node's `Request` and `Response` (undici) cost tens of microseconds each to build, more than the
 * rest of a small request put together, and a `Request` with an abort signal costs twice that. The
 * worker therefore hands the app a request that builds nothing until the app reads more than its
 * method, URL and headers, and replaces the global `Response` with a class that only records its
 * body and init; the worker writes such a response straight to the socket. Whenever the app uses
 * anything else, the real object is built on first use and serves from then on, so behaviour is the
 * platform's own. `instanceof Request` and `instanceof Response` hold for both kinds, and the global
 * `Request` and `fetch` accept the lazy request. @hono/node-server takes the same approach.
 */
import type { IncomingMessage, ServerResponse } from 'node:http';
import { Readable } from 'node:stream';

const NativeRequest = globalThis.Request;
const NativeResponse = globalThis.Response;
const nativeFetch = globalThis.fetch;

/** Body-reading methods, the same on Request and Response. */
const BODY_METHODS = ['arrayBuffer', 'blob', 'bytes', 'clone', 'formData', 'json', 'text'];

/**
 * Makes `getters` and the body methods of a light object's prototype answer from the real object,
 * built on first use by `real`.
 */
function forwardToReal<T extends object>(proto: object, real: (light: T) => object, getters: string[]): void {
  for (const name of getters) {
    Object.defineProperty(proto, name, {
      get(this: T) {
        return (real(this) as Record<string, unknown>)[name];
      },
    });
  }
  for (const name of BODY_METHODS) {
    Object.defineProperty(proto, name, {
      value(this: T) {
        const target = real(this) as Record<string, () => unknown>;
        return target[name]!.call(target);
      },
    });
  }
}

// ─── Request ─────────────────────────────────────────────────────────────────────────────────

const incoming = Symbol('molt.incoming');
const outgoing = Symbol('molt.outgoing');
const urlKey = Symbol('molt.url');
const headersKey = Symbol('molt.headers');
const realRequest = Symbol('molt.realRequest');

/** What answers a request: its response, or the socket of an upgrade request. Its close before the end aborts the request's signal. */
interface Answer {
  readonly closed: boolean;
  readonly writableFinished: boolean;
  once(event: 'close', listener: () => void): unknown;
}

interface LazyRequest extends Request {
  [incoming]: IncomingMessage;
  [outgoing]: Answer;
  [urlKey]: string;
  [headersKey]?: Headers;
  [realRequest]?: Request;
}

function headersOf(req: IncomingMessage): Headers {
  const headers = new Headers();
  const raw = req.rawHeaders;
  for (let i = 0; i < raw.length; i += 2) {
    const name = raw[i]!;
    if (name.charCodeAt(0) === 58 /* ':' pseudo-header */) continue;
    headers.append(name, raw[i + 1]!);
  }
  return headers;
}

/** The real `Request` behind a lazy one, built on first need; its body streams from the socket. */
function materializeRequest(lazy: LazyRequest): Request {
  let request = lazy[realRequest];
  if (request) return request;
  const req = lazy[incoming];
  const method = req.method ?? 'GET';
  const abort = new AbortController();
  // The signal aborts when the client goes away before the response is complete.
  const res = lazy[outgoing];
  const onClose = () => {
    if (!res.writableFinished) abort.abort();
  };
  if (res.closed) onClose();
  else res.once('close', onClose);
  const init: RequestInit & { duplex?: 'half' } = { method, headers: lazy.headers, signal: abort.signal };
  if (method !== 'GET' && method !== 'HEAD') {
    init.body = Readable.toWeb(req) as ReadableStream<Uint8Array>;
    init.duplex = 'half';
  }
  request = new NativeRequest(lazy[urlKey], init);
  lazy[realRequest] = request;
  return request;
}

const requestPrototype: object = {
  [Symbol.for('nodejs.util.inspect.custom')](this: LazyRequest) {
    return { method: this.method, url: this.url, headers: this.headers };
  },
};
Object.defineProperties(requestPrototype, {
  method: {
    get(this: LazyRequest) {
      return this[incoming].method ?? 'GET';
    },
  },
  url: {
    get(this: LazyRequest) {
      return this[urlKey];
    },
  },
  headers: {
    get(this: LazyRequest) {
      return (this[headersKey] ??= headersOf(this[incoming]));
    },
  },
});
forwardToReal(requestPrototype, materializeRequest, ['body', 'bodyUsed', 'cache', 'credentials', 'destination', 'duplex', 'integrity', 'keepalive', 'mode', 'redirect', 'referrer', 'referrerPolicy', 'signal']);
Object.setPrototypeOf(requestPrototype, NativeRequest.prototype);

/**
 * A `Request` for a Node request that builds the real one only when the app needs more than
 * method, URL and headers. Throws on a Host header that makes no valid URL.
 */
export function lazyRequest(req: IncomingMessage, res: Answer): Request {
  const lazy = Object.create(requestPrototype) as LazyRequest;
  lazy[incoming] = req;
  lazy[outgoing] = res;
  // A path is appended, not resolved: `//x` resolved against a base would name host x.
  const path = req.url ?? '/';
  lazy[urlKey] = (path.startsWith('/') ? new URL(`http://${hostOf(req)}${path}`) : new URL(path, `http://${hostOf(req)}`)).href;
  return lazy;
}

/** The Host header, read from the raw list (building `req.headers` costs more than this). */
function hostOf(req: IncomingMessage): string {
  const raw = req.rawHeaders;
  for (let i = 0; i < raw.length; i += 2) {
    const name = raw[i]!;
    if (name.length === 4 && name.toLowerCase() === 'host') return raw[i + 1]!;
  }
  return 'localhost';
}

/** The real object behind a lazy request, or the value itself. */
function unwrapRequest<T>(input: T): T | Request {
  return input !== null && typeof input === 'object' && incoming in input ? materializeRequest(input as unknown as LazyRequest) : input;
}

/** The global `Request`: the platform's own, accepting a lazy request as its input. */
class MoltRequest extends NativeRequest {
  constructor(input: RequestInfo | URL, init?: RequestInit) {
    super(unwrapRequest(input) as RequestInfo | URL, init);
  }
  static [Symbol.hasInstance](value: unknown): boolean {
    return value !== null && typeof value === 'object' && NativeRequest.prototype.isPrototypeOf(value);
  }
}

// ─── Response ────────────────────────────────────────────────────────────────────────────────

const bodyKey = Symbol('molt.body');
const initKey = Symbol('molt.init');
const realResponse = Symbol('molt.realResponse');
const NULL_BODY_STATUS = new Set([101, 103, 204, 205, 304]);

type SimpleBody = string | Uint8Array | null | undefined;
type SimpleHeaders = Record<string, string> | [string, string][] | Headers | undefined;
interface SimpleInit {
  status?: number;
  statusText?: string;
  headers?: SimpleHeaders;
}

interface LightResponse extends Response {
  [bodyKey]: SimpleBody;
  [initKey]: SimpleInit | undefined;
  [realResponse]?: Response;
}

function isSimple(body: unknown, init: unknown): boolean {
  if (!(body == null || typeof body === 'string' || body instanceof Uint8Array)) return false;
  if (init === undefined) return true;
  if (init === null || typeof init !== 'object' || Object.getPrototypeOf(init) !== Object.prototype) return false;
  const { status, headers } = init as SimpleInit;
  if (status !== undefined && !(Number.isInteger(status) && status >= 200 && status <= 599)) return false;
  if (body != null && status !== undefined && NULL_BODY_STATUS.has(status)) return false;
  for (const key of Object.keys(init)) if (key !== 'status' && key !== 'statusText' && key !== 'headers') return false;
  if ((init as SimpleInit).statusText !== undefined && typeof (init as SimpleInit).statusText !== 'string') return false;
  return headers === undefined || headers instanceof Headers || Array.isArray(headers) || Object.getPrototypeOf(headers) === Object.prototype;
}

function materializeResponse(light: LightResponse): Response {
  return (light[realResponse] ??= new NativeResponse(light[bodyKey] as BodyInit | null | undefined, light[initKey]));
}

/**
 * The global `Response` inside a worker. A response built from a string, bytes or nothing, with a
 * plain init, only records them until someone reads it; anything else is the platform's own
 * `Response` from the start.
 */
class MoltResponse {
  declare [bodyKey]: SimpleBody;
  declare [initKey]: SimpleInit | undefined;
  declare [realResponse]?: Response;

  constructor(body?: BodyInit | null, init?: ResponseInit) {
    if (isSimple(body, init)) {
      this[bodyKey] = body as SimpleBody;
      this[initKey] = init as SimpleInit | undefined;
    } else if (init?.status === 101 && body == null) {
      // An upgrade's answer, or a copy a framework made of it (Hono's middleware does); isSimple takes no 101.
      this[realResponse] = switchingProtocols(init.headers);
    } else {
      this[realResponse] = new NativeResponse(body, init);
    }
  }
  static [Symbol.hasInstance](value: unknown): boolean {
    return value !== null && typeof value === 'object' && NativeResponse.prototype.isPrototypeOf(value);
  }
  [Symbol.for('nodejs.util.inspect.custom')](this: LightResponse) {
    return materializeResponse(this);
  }
}
forwardToReal(MoltResponse.prototype, materializeResponse, ['body', 'bodyUsed', 'headers', 'ok', 'redirected', 'status', 'statusText', 'type', 'url']);
Object.setPrototypeOf(MoltResponse.prototype, NativeResponse.prototype);
Object.setPrototypeOf(MoltResponse, NativeResponse); // Response.json(), .error(), .redirect()

/**
 * A `101 Switching Protocols` response, what `upgradeWebSocket` returns for `fetch` to answer with.
 * The platform's `Response` refuses 101 (only a server makes one): this is a bodiless response whose
 * status says 101; its headers are the app's to add to (they go with the handshake).
 */
export function switchingProtocols(headers?: HeadersInit): Response {
  const response = new NativeResponse(null, { headers });
  Object.defineProperties(response, { status: { value: 101 }, statusText: { value: 'Switching Protocols' }, ok: { value: false } });
  return response;
}

/** What the worker writes for a light response no one has read: status, flat headers, body. */
export interface PlainResponse {
  status: number;
  statusText: string | undefined;
  headers: string[];
  body: string | Uint8Array | null;
}

/**
 * The status, headers and body of a response built from a string or bytes, when they can be
 * written without building the real `Response`; undefined otherwise. The default content type
 * and length are the ones the platform's `Response` would give.
 */
export function plainResponse(response: Response): PlainResponse | undefined {
  const light = response as LightResponse;
  if (!(bodyKey in light) || light[realResponse]) return undefined;
  const body = light[bodyKey] ?? null;
  const init = light[initKey];
  const headers: string[] = [];
  let hasType = false;
  let hasLength = false;
  const add = (name: string, value: string) => {
    const lower = name.toLowerCase();
    if (lower === 'content-type') hasType = true;
    else if (lower === 'content-length') hasLength = true;
    headers.push(name, value);
  };
  const h = init?.headers;
  if (h instanceof Headers) {
    h.forEach((value, name) => name !== 'set-cookie' && add(name, value));
    for (const cookie of h.getSetCookie()) headers.push('set-cookie', cookie);
  } else if (Array.isArray(h)) {
    for (const pair of h) add(pair[0], String(pair[1]));
  } else if (h) {
    for (const name of Object.keys(h)) add(name, String(h[name]));
  }
  if (typeof body === 'string' && !hasType) headers.push('content-type', 'text/plain;charset=UTF-8');
  if (!hasLength) headers.push('content-length', String(body === null ? 0 : typeof body === 'string' ? Buffer.byteLength(body) : body.byteLength));
  return { status: init?.status ?? 200, statusText: init?.statusText || undefined, headers, body };
}

/**
 * Installs the worker's `Request`, `Response` and `fetch` globals. Called once, before the app
 * loads, so that the app's `new Response(...)` is the light one.
 */
export function installWebObjects(): void {
  globalThis.Request = MoltRequest as typeof Request;
  globalThis.Response = MoltResponse as unknown as typeof Response;
  globalThis.fetch = ((input: RequestInfo | URL, init?: RequestInit) => nativeFetch(unwrapRequest(input) as RequestInfo | URL, init)) as typeof fetch;
}
