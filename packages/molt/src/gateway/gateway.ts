import { randomUUID } from 'node:crypto';
import { type IncomingHttpHeaders, type OutgoingHttpHeaders, STATUS_CODES } from 'node:http';
import { connect, type Socket } from 'node:net';
import type { Duplex } from 'node:stream';
import { checkRow, type TokenVerifier } from '../control-plane/auth.js';
import { MoltError, errorResponse } from '../errors.js';
import { fitCookie, hostName, prefixLocation, underDomain } from './app-host.js';
import type { AppRoutes, RouteTable } from './route-table.js';
import { loginPage, PAGE_CSP, safeNext, type Sessions, Sessions as SessionCookies, takeSessionCookie } from './sessions.js';
import type { Target } from './target.js';
import { isRetryable, type UpstreamConnection } from './upstream.js';

export const ROUTE_PREFIX = '/api/routes/v1/';

/**
 * What the gateway reads of a request: `node:http`'s `IncomingMessage`, or the front's own lighter
 * request for the connections it parses itself (front.ts).
 */
export interface GatewayRequest {
  readonly method?: string;
  readonly url?: string;
  readonly rawHeaders: string[];
  readonly headers: IncomingHttpHeaders;
  readonly socket: { readonly remoteAddress?: string; readonly localAddress?: string };
  on(event: 'data', listener: (chunk: any) => void): unknown;
  on(event: 'end', listener: () => void): unknown;
  pause(): unknown;
  resume(): unknown;
  setEncoding(encoding: BufferEncoding): unknown;
}

/** What the gateway does with a response: `ServerResponse`, or the front's own writer. */
export interface GatewayResponse {
  readonly headersSent: boolean;
  readonly destroyed: boolean;
  writeHead(status: number, headers?: OutgoingHttpHeaders): GatewayResponse;
  writeHead(status: number, reason: string, headers: string[]): GatewayResponse;
  write(chunk: Buffer): boolean;
  end(chunk?: string): unknown;
  once(event: 'drain' | 'close', listener: () => void): unknown;
  destroy(): unknown;
}

const IDEMPOTENT = new Set(['GET', 'HEAD', 'OPTIONS']);

/**
 * Request headers not forwarded: those of one hop (RFC 9110 §7.6.1), `expect` (this hop answered
 * it), and the ones the gateway sets itself.
 */
const REQUEST_DROPPED = new Set(['connection', 'keep-alive', 'proxy-connection', 'proxy-authorization', 'te', 'trailer', 'transfer-encoding', 'upgrade', 'expect', 'host', 'x-forwarded-for', 'x-forwarded-proto', 'x-forwarded-host', 'x-forwarded-prefix', 'x-request-id']);

/** Response headers of one hop; the gateway's own connection sets its framing. */
function isResponseHopByHop(name: string): boolean {
  const n = name.length;
  if (n !== 10 && n !== 17) return false;
  const lower = name.toLowerCase();
  return lower === 'connection' || lower === 'keep-alive' || lower === 'transfer-encoding';
}

/**
 * A molt token in an `Authorization` value, whatever the scheme's case or the spacing
 * (`Bearer molt_…`, `bearer  molt_…`, a bare `molt_…`): such a value never reaches an app.
 */
const MOLT_TOKEN = /(^|[\s,])molt_[1-9A-HJ-NP-Za-km-z]{8,}/;

/** What the gateway needs from a request's headers, read in one pass over the raw list. */
interface RequestFacts {
  /** The header the molt token is checked from: `Proxy-Authorization` with a molt token, else the
   * `Authorization` with one, else the first `Authorization` (for the message that names it). */
  token?: string;
  /** molt's session cookie, taken out of `Cookie` (the app never sees it). */
  session?: string;
  /** A transfer coding the gateway does not take (anything but chunked): the request is refused. */
  badCoding?: string;
  requestId?: string;
  host?: string;
  forwardedFor?: string;
  /** The headers that are forwarded as they are, as header lines. */
  lines: string;
  /** Whether a body follows (RFC 9112 §6.3: content-length or transfer-encoding). */
  hasBody: boolean;
  /** A body without a length, forwarded with chunked encoding. */
  chunked: boolean;
}

/**
 * Responses a browser may run as a page (HTML, XML, SVG, or no type it could sniff from). On a path
 * route they come from the server's own origin, the dashboard's: the sandbox gives such a page an
 * origin of its own (opaque), so its scripts cannot call the API with a visitor's dashboard
 * session or reach the dashboard's window. Apps that serve pages to browsers belong on a host of
 * their own (`--domain`, `domains`), where none of this applies.
 */
const ACTIVE_CONTENT = /html|xml|svg/i;
export const PATH_ROUTE_SANDBOX = 'sandbox allow-scripts allow-forms allow-popups allow-modals allow-downloads';

const hasMoltToken = (value: string) => value.includes('molt_') && MOLT_TOKEN.test(value);

function readRequest(req: GatewayRequest): RequestFacts {
  const facts: RequestFacts = { lines: '', hasBody: false, chunked: false };
  const raw = req.rawHeaders;
  let length: string | undefined;
  let encoded = false;
  let proxyToken: string | undefined;
  let bearer: string | undefined;
  for (let i = 0; i < raw.length; i += 2) {
    const name = raw[i]!;
    const value = raw[i + 1]!;
    const lower = name.toLowerCase();
    if (lower === 'authorization') {
      facts.token ??= value;
      // The molt token is for the gateway; an app's own credentials pass through.
      if (hasMoltToken(value)) {
        bearer ??= value;
        continue;
      }
    } else if (lower === 'content-length') length = value;
    else if (lower === 'cookie' && (value.includes('molt_session') || value.includes('molt_dashboard'))) {
      const { session, rest } = takeSessionCookie(value);
      facts.session ??= session;
      if (!rest) continue;
      facts.lines += `${name}: ${rest}\r\n`;
      continue;
    } else if (REQUEST_DROPPED.has(lower)) {
      if (lower === 'host') facts.host = value;
      else if (lower === 'x-request-id') facts.requestId ??= value;
      else if (lower === 'x-forwarded-for') facts.forwardedFor = facts.forwardedFor ? `${facts.forwardedFor}, ${value}` : value;
      else if (lower === 'proxy-authorization' && hasMoltToken(value)) proxyToken ??= value;
      else if (lower === 'transfer-encoding') {
        encoded = true;
        // Codings are of one hop: the gateway decodes none but chunked, so it cannot pass others on.
        if (value.trim().toLowerCase() !== 'chunked') facts.badCoding = value;
      }
      continue;
    }
    facts.lines += `${name}: ${value}\r\n`;
  }
  // Google IAP's channel for apps that use Authorization themselves, then wherever the token is.
  facts.token = proxyToken ?? bearer ?? facts.token;
  facts.hasBody = encoded || (length !== undefined && length !== '0');
  facts.chunked = encoded;
  return facts;
}

/** The Host header straight from the raw list (reading `req.headers` would build every header's entry). */
function rawHost(raw: string[]): string | undefined {
  for (let i = 0; i < raw.length; i += 2) {
    const name = raw[i]!;
    if (name.length === 4 && name.toLowerCase() === 'host') return raw[i + 1];
  }
  return undefined;
}

/** The request head sent to a worker: its request line, forwarded headers and the gateway's own. */
function requestHead(req: GatewayRequest, path: string, prefix: string | undefined, facts: RequestFacts, requestId: string, extra = ''): string {
  const remote = req.socket.remoteAddress ?? '';
  let head = `${req.method} ${path} HTTP/1.1\r\n${facts.lines}`;
  head += `x-forwarded-for: ${facts.forwardedFor ? `${facts.forwardedFor}, ${remote}` : remote}\r\n`;
  head += `x-forwarded-proto: ${(req.socket as { encrypted?: boolean }).encrypted ? 'https' : 'http'}\r\n`;
  if (facts.host) head += `x-forwarded-host: ${facts.host}\r\nhost: ${facts.host}\r\n`;
  else head += `host: ${req.socket.localAddress ?? 'localhost'}\r\n`;
  head += `x-request-id: ${requestId}\r\n`;
  if (prefix) head += `x-forwarded-prefix: ${prefix}\r\n`;
  if (facts.chunked) head += 'transfer-encoding: chunked\r\n';
  return `${head}${extra}\r\n`;
}

/** Streams a request body to the worker, with backpressure; chunked when it has no length. */
function forwardBody(req: GatewayRequest, conn: UpstreamConnection, chunked: boolean): void {
  const socket = conn.socket;
  const onDrain = () => req.resume();
  req.on('data', (chunk: Buffer) => {
    if (socket.destroyed || chunk.length === 0) return;
    let ok: boolean;
    if (chunked) {
      socket.cork();
      socket.write(`${chunk.length.toString(16)}\r\n`, 'latin1');
      socket.write(chunk);
      ok = socket.write('\r\n', 'latin1');
      socket.uncork();
    } else ok = conn.write(chunk);
    if (!ok) {
      req.pause();
      socket.once('drain', onDrain);
    }
  });
  req.on('end', () => {
    if (chunked && !socket.destroyed) socket.write('0\r\n\r\n', 'latin1');
  });
}

export interface GatewayOptions {
  /** How long a worker has to start answering a request (headers) before 504. */
  upstreamTimeoutMs: number;
  /** The server's domains (`--domain`): `<app>.<namespace>.<D>` and `<app>.<D>` route to apps at their root. */
  domains?: string[];
  /** Told of every 502/504 with its request id; never called on the success path. */
  onUpstreamError?: (info: { requestId: string; ns: string; app: string; workerId: string; status: number; message: string }) => void;
}

export interface ParsedRoute {
  namespace: string;
  app: string;
  /** The path the app sees. */
  path: string;
  /** `/api/routes/v1/<ns>/<app>` for a path route (sent as X-Forwarded-Prefix); none on an app's host. */
  prefix?: string;
  /** The app's hostname, when the request came by it. */
  host?: string;
}

/** `/api/routes/v1/<ns>/<app>/<path>?q` → its parts; undefined when it is not such a path. */
export function parseRoute(url: string): ParsedRoute | undefined {
  const a = url.indexOf('/', ROUTE_PREFIX.length);
  if (a < 0) return undefined;
  const b = url.indexOf('/', a + 1);
  const q = url.indexOf('?', a + 1);
  const appEnd = b < 0 ? (q < 0 ? url.length : q) : q >= 0 && q < b ? q : b;
  const namespace = url.slice(ROUTE_PREFIX.length, a);
  const app = url.slice(a + 1, appEnd);
  if (!namespace || !app) return undefined;
  const rest = url.slice(appEnd);
  return { namespace, app, path: rest.startsWith('/') ? rest : `/${rest}`, prefix: url.slice(0, appEnd) };
}

function unsupportedCoding(value: string): MoltError {
  return new MoltError('MOLT_ERR_UNSUPPORTED_CODING', `Transfer-Encoding ${JSON.stringify(value.slice(0, 100))} is not supported; send the body with Content-Length or Transfer-Encoding: chunked alone`);
}

/** Sends a gateway error: JSON `{ error: { code, message } }` with the status of its code. */
/** Answers with molt's JSON error for `err`; returns the status sent. */
function sendError(res: GatewayResponse, err: unknown, requestId?: string, close = false): number {
  const { status, body } = errorResponse(err);
  if (res.headersSent) {
    res.destroy();
    return status;
  }
  const payload = JSON.stringify(body);
  const headers: OutgoingHttpHeaders = { 'content-type': 'application/json', 'content-length': Buffer.byteLength(payload) };
  if (requestId) headers['x-request-id'] = requestId;
  if (close) headers.connection = 'close';
  res.writeHead(status, headers).end(payload);
  return status;
}

/**
 * Answers a request Node's parser refused (too many or too large headers, a bad framing, a timeout)
 * with the same JSON error body as every other error, then closes the connection. Nothing of such a
 * request reaches a worker: it never got past the parser.
 */
export function answerClientError(err: NodeJS.ErrnoException & { reason?: string }, socket: Duplex): void {
  if (err.code === 'ECONNRESET' || socket.destroyed) return;
  // A response is already under way on this connection: it cannot be followed by an error.
  if ((socket as { _httpMessage?: { headersSent?: boolean } })._httpMessage?.headersSent) {
    socket.destroy();
    return;
  }
  const error =
    err.code === 'HPE_HEADER_OVERFLOW'
      ? new MoltError('MOLT_ERR_HEADERS_TOO_LARGE', 'the request headers are over the server\'s limit (16 KiB in all); send fewer or smaller headers')
      : err.code === 'ERR_HTTP_REQUEST_TIMEOUT'
        ? new MoltError('MOLT_ERR_REQUEST_TIMEOUT', 'the request was not received in time; send it again')
        : new MoltError('MOLT_ERR_BAD_REQUEST', `the request is not valid HTTP/1.1 (${err.reason ?? err.message}); fix how it is framed`);
  const { status, body } = errorResponse(error);
  const payload = JSON.stringify(body);
  socket.end(`HTTP/1.1 ${status} ${STATUS_CODES[status]}\r\ncontent-type: application/json\r\ncontent-length: ${Buffer.byteLength(payload)}\r\nconnection: close\r\n\r\n${payload}`);
}

/** The most of a login form the gateway reads. */
const MAX_LOGIN_BODY = 8 * 1024;

const isSecure = (req: GatewayRequest) => (req.socket as { encrypted?: boolean }).encrypted === true;

/** A browser navigating (not a script or an API client): it gets a login page rather than a 401. */
function wantsPage(req: GatewayRequest): boolean {
  return (req.method === 'GET' || req.method === 'HEAD') && (req.headers.accept ?? '').includes('text/html');
}

/**
 * The data path: token check, route to the least busy ready worker, stream both ways.
 * It runs on the bare `node:http` request, outside the API framework.
 */
export class Gateway {
  /** Browser sessions, once the control plane has given their key. */
  sessions?: Sessions;

  constructor(
    private readonly table: RouteTable,
    private readonly tokens: TokenVerifier,
    private readonly opts: GatewayOptions,
  ) {}

  /**
   * Where a request goes: an app by its hostname (the whole path is the app's) or by a path route;
   * undefined when it is the server's own (the API). A path route that names no app is an error.
   */
  routeOf(url: string, rawHeaders: string[]): ParsedRoute | MoltError | undefined {
    if (this.opts.domains?.length || this.table.hasDomains()) {
      const host = hostName(rawHost(rawHeaders));
      if (host) {
        const claimed = this.table.byDomain(host);
        const named = claimed ? { namespace: claimed.namespace, app: claimed.name } : underDomain(host, this.opts.domains ?? []);
        if (named) return { ...named, path: url, host };
      }
    }
    if (!url.startsWith(ROUTE_PREFIX)) return undefined;
    return parseRoute(url) ?? new MoltError('MOLT_ERR_NOT_FOUND', 'route paths look like /api/routes/v1/<namespace>/<app>/<path>');
  }

  /** Serves a request for an app; false when it is not one (the API serves it). */
  handle(req: GatewayRequest, res: GatewayResponse): boolean {
    const route = this.routeOf(req.url ?? '', req.rawHeaders);
    if (route === undefined) return false;
    this.serve(req, res, route);
    return true;
  }

  /** Serves a request for an app, whose route `routeOf` gave. */
  serve(req: GatewayRequest, res: GatewayResponse, route: ParsedRoute | MoltError): void {
    const facts = readRequest(req);
    const requestId = facts.requestId ?? randomUUID();
    if (route instanceof MoltError) {
      sendError(res, route, requestId);
      return;
    }
    if (facts.badCoding !== undefined) {
      // Its body has no framing molt can read, so nothing after it on this connection can be trusted.
      sendError(res, unsupportedCoding(facts.badCoding), requestId, true);
      return;
    }
    const routes = this.table.app(route.namespace, route.app);
    if (route.host && route.path.startsWith('/.molt/')) {
      this.molt(req, res, route, routes, requestId);
      return;
    }
    const authorized = this.authorize(facts, route, routes);
    const refused = (err: unknown) => {
      // A browser on the app's own host signs in rather than reading a 401.
      if (route.host && err instanceof MoltError && err.code === 'MOLT_ERR_UNAUTHENTICATED' && wantsPage(req)) {
        res.writeHead(302, { location: `/.molt/login?next=${encodeURIComponent(route.path)}`, 'content-length': 0, 'x-request-id': requestId }).end();
      } else sendError(res, err, requestId);
    };
    if (authorized === true) this.dispatch(req, res, route, routes!, facts, requestId);
    else authorized.then(() => this.dispatch(req, res, route, routes!, facts, requestId), refused);
  }

  /** true when allowed now; a promise when the token must be looked up; throws nothing. */
  private authorize(facts: RequestFacts, route: ParsedRoute, routes: AppRoutes | undefined): true | Promise<void> {
    if (routes?.public) return true;
    try {
      // A session is good on the host it was made for; a token wherever it is sent.
      if (facts.session && route.host && !facts.token) {
        const row = this.sessions?.verify(facts.session, route.host);
        if (row) {
          this.check(row, route, routes);
          return true;
        }
        throw new MoltError('MOLT_ERR_UNAUTHENTICATED', 'the session has expired or its token was revoked; sign in again at /.molt/login');
      }
      const cached = this.tokens.cached(facts.token);
      if (cached !== undefined) {
        this.check(checkRow(cached), route, routes);
        return true;
      }
    } catch (err) {
      return Promise.reject(err);
    }
    return this.tokens.lookup(facts.token).then((row) => this.check(row, route, routes));
  }

  private check(row: { namespace: string; role: string }, route: ParsedRoute, routes: AppRoutes | undefined): void {
    if (row.namespace !== '*' && row.namespace !== route.namespace) {
      throw new MoltError('MOLT_ERR_FORBIDDEN', `this token belongs to namespace ${row.namespace}, not ${route.namespace}; use a token of ${route.namespace}`);
    }
    if (!routes) {
      throw new MoltError('MOLT_ERR_APP_NOT_FOUND', `no app ${route.app} in namespace ${route.namespace}; see \`molt app list -n ${route.namespace}\``);
    }
  }

  /**
   * molt's own pages on an app's host, under `/.molt/`: the login form, the post that exchanges a
   * token for a session cookie, and the logout. Nothing under it reaches the app.
   */
  private molt(req: GatewayRequest, res: GatewayResponse, route: ParsedRoute & { host?: string }, routes: AppRoutes | undefined, requestId: string): void {
    const url = new URL(route.path, 'http://app');
    const secure = isSecure(req);
    const page = (status: number, html: string): void => {
      res
        .writeHead(status, { 'content-type': 'text/html; charset=utf-8', 'content-length': Buffer.byteLength(html), 'content-security-policy': PAGE_CSP, 'cache-control': 'no-store', 'x-frame-options': 'DENY', 'x-request-id': requestId })
        .end(req.method === 'HEAD' ? undefined : html);
    };
    const name = `${route.app}${route.namespace === 'default' ? '' : ` (${route.namespace})`}`;
    if (!routes) return void sendError(res, new MoltError('MOLT_ERR_APP_NOT_FOUND', `no app ${route.app} in namespace ${route.namespace}`), requestId);
    if (url.pathname === '/.molt/login' && (req.method === 'GET' || req.method === 'HEAD')) return page(200, loginPage(name, safeNext(url.searchParams.get('next'))));
    if (req.method !== 'POST' || (url.pathname !== '/.molt/login' && url.pathname !== '/.molt/logout')) {
      return void sendError(res, new MoltError('MOLT_ERR_NOT_FOUND', `${url.pathname} is molt's, not the app's: GET /.molt/login, POST /.molt/login, POST /.molt/logout`), requestId);
    }
    // A form posted from another site would sign the browser in or out without its user.
    const origin = req.headers.origin;
    if (origin !== undefined && origin !== `${secure ? 'https' : 'http'}://${req.headers.host}`) {
      return void sendError(res, new MoltError('MOLT_ERR_FORBIDDEN', `a sign-in form must be posted from ${route.host} itself, not from ${origin.slice(0, 200)}`), requestId);
    }
    if (url.pathname === '/.molt/logout') {
      res.writeHead(303, { location: '/.molt/login', 'set-cookie': SessionCookies.clear(secure), 'content-length': 0, 'x-request-id': requestId }).end();
      return;
    }
    let body = '';
    let tooLarge = false;
    req.setEncoding('latin1');
    req.on('data', (chunk: string) => {
      if (tooLarge) return;
      body += chunk;
      if (body.length > MAX_LOGIN_BODY) {
        tooLarge = true;
        sendError(res, new MoltError('MOLT_ERR_UPLOAD_TOO_LARGE', `a sign-in form is at most ${MAX_LOGIN_BODY} bytes`), requestId, true);
      }
    });
    req.on('end', () => {
      if (tooLarge) return;
      const form = new URLSearchParams(body);
      const next = safeNext(form.get('next'));
      const token = (form.get('token') ?? '').trim();
      const retry = (status: number, problem: string) => page(status, loginPage(name, next, problem));
      if (!this.sessions) return retry(503, 'molt is starting; try again in a moment');
      if (!token) return retry(400, 'paste a token');
      this.tokens.lookup(`Bearer ${token}`).then(
        (row) => {
          try {
            this.check(row, route, routes);
          } catch (err) {
            return retry(403, (err as Error).message);
          }
          res.writeHead(303, { location: next, 'set-cookie': this.sessions!.cookie(route.host!, row, secure), 'content-length': 0, 'cache-control': 'no-store', 'x-request-id': requestId }).end();
        },
        (err) => retry(401, (err as Error).message),
      );
    });
  }

  private dispatch(req: GatewayRequest, res: GatewayResponse, route: ParsedRoute, routes: AppRoutes, facts: RequestFacts, requestId: string): void {
    // Counted from here: the time a request waits for a worker is the client's time too.
    const started = performance.now();
    const refused = (err: unknown) => routes.stats.record(sendError(res, err, requestId), performance.now() - started);
    let acquired: Target | Promise<Target>;
    try {
      acquired = routes.acquire();
    } catch (err) {
      refused(err);
      return;
    }
    const head = requestHead(req, route.path, route.prefix, facts, requestId);
    if (acquired instanceof Promise) acquired.then((t) => this.proxy(req, res, route, routes, t, head, facts, requestId, started, false), refused);
    else this.proxy(req, res, route, routes, acquired, head, facts, requestId, started, false);
  }

  private proxy(req: GatewayRequest, res: GatewayResponse, route: ParsedRoute, routes: AppRoutes, target: Target, head: string, facts: RequestFacts, requestId: string, started: number, retried: boolean): void {
    target.begin();
    const conn = target.pool.acquire();
    let active = true;
    let paused = false;
    let answered = 0;
    const finish = () => {
      if (active) {
        active = false;
        clearTimeout(timer);
        target.end();
      }
    };
    const timer = setTimeout(() => conn.destroy(new MoltError('MOLT_ERR_UPSTREAM_TIMEOUT', `worker ${target.workerId} did not answer within ${this.opts.upstreamTimeoutMs} ms`)), this.opts.upstreamTimeoutMs);
    const resume = () => {
      paused = false;
      conn.resume();
    };

    conn.send(head, {
      head: req.method === 'HEAD',
      onHead(status, statusMessage, raw) {
        clearTimeout(timer);
        const headers: string[] = [];
        let contentType: string | undefined;
        for (let i = 0; i < raw.length; i += 2) {
          const name = raw[i]!;
          if (isResponseHopByHop(name)) continue;
          let value = raw[i + 1]!;
          if (name.length === 12 && name.toLowerCase() === 'content-type') contentType = value;
          // Fitted to the route the client used (see app-host.ts).
          if (name.length === 10 && name.toLowerCase() === 'set-cookie') value = fitCookie(value, route.prefix);
          else if (name.length === 8 && route.prefix && name.toLowerCase() === 'location') value = prefixLocation(value, route.prefix, hostName(facts.host));
          headers.push(name, value);
        }
        headers.push('x-request-id', requestId);
        // A page of an app on a path route would run on the dashboard's origin: it runs in a sandbox.
        if (!route.host && (contentType === undefined || ACTIVE_CONTENT.test(contentType))) headers.push('content-security-policy', PATH_ROUTE_SANDBOX);
        if (status >= 500) target.serverErrors++;
        answered = status;
        res.writeHead(status, statusMessage, headers);
      },
      // SSE and other streams: every chunk is written as it arrives, never buffered whole.
      onBody(chunk) {
        if (!res.write(chunk) && !paused) {
          paused = true;
          conn.pause();
          res.once('drain', resume);
        }
      },
      onComplete() {
        finish();
        res.end();
        routes.stats.record(answered, performance.now() - started);
      },
      onError: (err) => {
        const responded = res.headersSent;
        finish();
        if (responded || res.destroyed) {
          res.destroy();
          // An answer cut short is not the one the app meant: the client saw a failure.
          routes.stats.record(responded ? 502 : answered, performance.now() - started);
          return;
        }
        // A reused keep-alive connection the worker closed at the same moment: retry once, elsewhere
        // if possible (nodejs/node#47130). Only bodiless idempotent requests are safe to resend.
        if (!retried && conn.reused && !facts.hasBody && IDEMPOTENT.has(req.method ?? '') && isRetryable(err)) {
          const next = routes.pickReady() ?? target;
          this.proxy(req, res, route, routes, next, head, facts, requestId, started, true);
          return;
        }
        const error =
          err instanceof MoltError
            ? err
            : err.code === 'ECONNREFUSED' || isRetryable(err)
              ? new MoltError('MOLT_ERR_UPSTREAM', `worker ${target.workerId} of ${route.namespace}/${route.app} closed the connection (${err.code}); see \`molt app logs\``, { cause: err })
              : new MoltError('MOLT_ERR_UPSTREAM', `worker ${target.workerId} failed: ${err.message}`, { cause: err });
        this.opts.onUpstreamError?.({ requestId, ns: route.namespace, app: route.app, workerId: target.workerId, status: error.status, message: error.message });
        routes.stats.record(sendError(res, error, requestId), performance.now() - started);
      },
    });

    res.once('close', () => {
      // The client went away before the answer was complete: that connection cannot be reused.
      if (active) conn.destroy();
    });
    if (facts.hasBody && !retried) forwardBody(req, conn, facts.chunked);
  }

  /** Passes an HTTP upgrade (WebSocket) through to a worker as raw bytes both ways; false when it is not for an app. */
  handleUpgrade(req: GatewayRequest, socket: Duplex, head: Buffer): boolean {
    const reject = (err: unknown) => {
      const { status, body } = errorResponse(err);
      const payload = JSON.stringify(body);
      socket.end(`HTTP/1.1 ${status} Error\r\ncontent-type: application/json\r\ncontent-length: ${Buffer.byteLength(payload)}\r\nconnection: close\r\n\r\n${payload}`);
    };
    const route = this.routeOf(req.url ?? '', req.rawHeaders);
    if (route === undefined) return false;
    if (route instanceof MoltError) {
      reject(route);
      return true;
    }
    const routes = this.table.app(route.namespace, route.app);
    const facts = readRequest(req);
    if (facts.badCoding !== undefined) {
      reject(unsupportedCoding(facts.badCoding));
      return true;
    }
    Promise.resolve(this.authorize(facts, route, routes))
      .then(() => routes!.acquire())
      .then((target) => {
        target.begin();
        const upstream: Socket = connect(target.address);
        const lines = requestHead(req, route.path, route.prefix, facts, facts.requestId ?? randomUUID(), `connection: Upgrade\r\nupgrade: ${req.headers.upgrade}\r\n`);
        upstream.on('connect', () => {
          upstream.write(lines);
          if (head.length) upstream.write(head);
          upstream.pipe(socket);
          socket.pipe(upstream);
        });
        let closed = false;
        const close = () => {
          if (closed) return;
          closed = true;
          target.end();
          upstream.destroy();
          socket.destroy();
        };
        upstream.on('error', () => (upstream.bytesRead === 0 ? reject(new MoltError('MOLT_ERR_UPSTREAM', `worker ${target.workerId} refused the upgrade`)) : close()));
        upstream.on('close', close);
        socket.on('error', close);
        socket.on('close', close);
      })
      .catch(reject);
    return true;
  }
}
