import { randomUUID } from 'node:crypto';
import { type IncomingMessage, type OutgoingHttpHeaders, request as httpRequest, type ServerResponse } from 'node:http';
import { connect, type Socket } from 'node:net';
import type { Duplex } from 'node:stream';
import { checkRow, type TokenVerifier } from '../control-plane/auth.js';
import { MoltError, errorResponse } from '../errors.js';
import type { AppRoutes, RouteTable } from './route-table.js';
import type { Target } from './target.js';

export const ROUTE_PREFIX = '/api/routes/v1/';

/** Headers that belong to one hop and are not forwarded (RFC 9110 §7.6.1), plus the molt token. */
const HOP_BY_HOP = new Set(['connection', 'keep-alive', 'proxy-connection', 'proxy-authorization', 'te', 'trailer', 'transfer-encoding', 'upgrade', 'authorization', 'host']);
const IDEMPOTENT = new Set(['GET', 'HEAD', 'OPTIONS']);

export interface GatewayOptions {
  /** How long a worker has to start answering a request (headers) before 504. */
  upstreamTimeoutMs: number;
  /** Told of every 502/504 with its request id; never called on the success path. */
  onUpstreamError?: (info: { requestId: string; ns: string; app: string; workerId: string; status: number; message: string }) => void;
}

interface ParsedRoute {
  namespace: string;
  app: string;
  path: string;
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
  return { namespace, app, path: rest.startsWith('/') ? rest : `/${rest}` };
}

/** Sends a gateway error: JSON `{ error: { code, message } }` with the status of its code. */
function sendError(res: ServerResponse, err: unknown, requestId?: string): void {
  const { status, body } = errorResponse(err);
  if (res.headersSent) {
    res.destroy();
    return;
  }
  const payload = JSON.stringify(body);
  const headers: OutgoingHttpHeaders = { 'content-type': 'application/json', 'content-length': Buffer.byteLength(payload) };
  if (requestId) headers['x-request-id'] = requestId;
  res.writeHead(status, headers).end(payload);
}

/**
 * The data path: token check, route to the least busy ready worker, stream both ways.
 * It runs on the bare `node:http` request, outside the API framework.
 */
export class Gateway {
  constructor(
    private readonly table: RouteTable,
    private readonly tokens: TokenVerifier,
    private readonly opts: GatewayOptions,
  ) {}

  handle(req: IncomingMessage, res: ServerResponse): void {
    const route = parseRoute(req.url ?? '');
    const requestId = (req.headers['x-request-id'] as string | undefined) ?? randomUUID();
    if (!route) {
      sendError(res, new MoltError('MOLT_ERR_NOT_FOUND', 'route paths look like /api/routes/v1/<namespace>/<app>/<path>'), requestId);
      return;
    }
    const routes = this.table.app(route.namespace, route.app);
    const authorized = this.authorize(req, route, routes);
    if (authorized === true) this.dispatch(req, res, route, routes!, requestId);
    else
      authorized.then(
        () => this.dispatch(req, res, route, routes!, requestId),
        (err) => sendError(res, err, requestId),
      );
  }

  /** true when allowed now; a promise when the token must be looked up; throws nothing. */
  private authorize(req: IncomingMessage, route: ParsedRoute, routes: AppRoutes | undefined): true | Promise<void> {
    if (routes?.public) return true;
    const header = req.headers.authorization;
    try {
      const cached = this.tokens.cached(header);
      if (cached !== undefined) {
        this.check(checkRow(cached), route, routes);
        return true;
      }
    } catch (err) {
      return Promise.reject(err);
    }
    return this.tokens.lookup(header).then((row) => this.check(row, route, routes));
  }

  private check(row: { namespace: string; role: string }, route: ParsedRoute, routes: AppRoutes | undefined): void {
    if (row.namespace !== '*' && row.namespace !== route.namespace) {
      throw new MoltError('MOLT_ERR_FORBIDDEN', `this token belongs to namespace ${row.namespace}, not ${route.namespace}; use a token of ${route.namespace}`);
    }
    if (!routes) {
      throw new MoltError('MOLT_ERR_APP_NOT_FOUND', `no app ${route.app} in namespace ${route.namespace}; see \`molt app list -n ${route.namespace}\``);
    }
  }

  private dispatch(req: IncomingMessage, res: ServerResponse, route: ParsedRoute, routes: AppRoutes, requestId: string): void {
    let acquired: Target | Promise<Target>;
    try {
      acquired = routes.acquire();
    } catch (err) {
      sendError(res, err, requestId);
      return;
    }
    if (acquired instanceof Promise) {
      acquired.then(
        (t) => this.proxy(req, res, route, routes, t, requestId, false),
        (err) => sendError(res, err, requestId),
      );
    } else this.proxy(req, res, route, routes, acquired, requestId, false);
  }

  private forwardHeaders(req: IncomingMessage, requestId: string): OutgoingHttpHeaders {
    const out: OutgoingHttpHeaders = {};
    const h = req.headers;
    for (const name in h) {
      if (!HOP_BY_HOP.has(name)) out[name] = h[name];
    }
    const host = h.host;
    const remote = req.socket.remoteAddress ?? '';
    const prior = h['x-forwarded-for'];
    out['x-forwarded-for'] = prior ? `${prior}, ${remote}` : remote;
    out['x-forwarded-proto'] = (req.socket as { encrypted?: boolean }).encrypted ? 'https' : 'http';
    if (host) out['x-forwarded-host'] = host;
    out['x-request-id'] = requestId;
    if (host) out.host = host;
    return out;
  }

  private proxy(req: IncomingMessage, res: ServerResponse, route: ParsedRoute, routes: AppRoutes, target: Target, requestId: string, retried: boolean): void {
    target.begin();
    let ended = false;
    const end = () => {
      if (!ended) {
        ended = true;
        target.end();
      }
    };
    const up = httpRequest({
      agent: target.agent,
      host: target.host,
      port: target.port,
      method: req.method,
      path: route.path,
      headers: this.forwardHeaders(req, requestId),
    });
    const timer = setTimeout(() => up.destroy(new MoltError('MOLT_ERR_UPSTREAM_TIMEOUT', `worker ${target.workerId} did not answer within ${this.opts.upstreamTimeoutMs} ms`)), this.opts.upstreamTimeoutMs);

    up.on('response', (ur) => {
      clearTimeout(timer);
      const raw = ur.rawHeaders;
      const headers: string[] = [];
      for (let i = 0; i < raw.length; i += 2) {
        const name = raw[i]!.toLowerCase();
        if (name !== 'connection' && name !== 'keep-alive' && name !== 'transfer-encoding') headers.push(raw[i]!, raw[i + 1]!);
      }
      headers.push('x-request-id', requestId);
      res.writeHead(ur.statusCode ?? 502, ur.statusMessage, headers);
      // SSE and other streams: every chunk is written as it arrives, never buffered whole.
      ur.pipe(res);
      ur.on('end', end);
      ur.on('error', () => {
        end();
        res.destroy();
      });
    });

    up.on('error', (err: NodeJS.ErrnoException) => {
      clearTimeout(timer);
      end();
      if (res.headersSent || res.destroyed) {
        res.destroy();
        return;
      }
      // A reused keep-alive socket the worker closed at the same moment: retry once, elsewhere
      // if possible (nodejs/node#47130). Only bodiless idempotent requests are safe to resend.
      if (!retried && up.reusedSocket && IDEMPOTENT.has(req.method ?? '') && (err.code === 'ECONNRESET' || err.code === 'EPIPE')) {
        const next = routes.pickReady() ?? target;
        this.proxy(req, res, route, routes, next, requestId, true);
        return;
      }
      const error =
        err instanceof MoltError
          ? err
          : err.code === 'ECONNREFUSED' || err.code === 'ECONNRESET' || err.code === 'EPIPE'
            ? new MoltError('MOLT_ERR_UPSTREAM', `worker ${target.workerId} of ${route.namespace}/${route.app} closed the connection (${err.code}); see \`molt app logs\``, { cause: err })
            : new MoltError('MOLT_ERR_UPSTREAM', `worker ${target.workerId} failed: ${err.message}`, { cause: err });
      this.opts.onUpstreamError?.({ requestId, ns: route.namespace, app: route.app, workerId: target.workerId, status: error.status, message: error.message });
      sendError(res, error, requestId);
    });

    res.on('close', () => {
      if (!res.writableFinished) up.destroy();
      end();
    });
    if (req.readableEnded || req.complete) up.end();
    else req.pipe(up);
  }

  /** Passes an HTTP upgrade (WebSocket) through to a worker as raw bytes both ways. */
  handleUpgrade(req: IncomingMessage, socket: Duplex, head: Buffer): void {
    const reject = (err: unknown) => {
      const { status, body } = errorResponse(err);
      const payload = JSON.stringify(body);
      socket.end(`HTTP/1.1 ${status} Error\r\ncontent-type: application/json\r\ncontent-length: ${Buffer.byteLength(payload)}\r\nconnection: close\r\n\r\n${payload}`);
    };
    const route = parseRoute(req.url ?? '');
    if (!route) return reject(new MoltError('MOLT_ERR_NOT_FOUND', 'route paths look like /api/routes/v1/<namespace>/<app>/<path>'));
    const routes = this.table.app(route.namespace, route.app);
    Promise.resolve(this.authorize(req, route, routes))
      .then(() => routes!.acquire())
      .then((target) => {
        target.begin();
        const upstream: Socket = connect(target.port, target.host);
        const headers = this.forwardHeaders(req, (req.headers['x-request-id'] as string) ?? randomUUID());
        headers.connection = 'Upgrade';
        headers.upgrade = req.headers.upgrade;
        let lines = `${req.method} ${route.path} HTTP/1.1\r\n`;
        for (const [k, v] of Object.entries(headers)) {
          for (const value of Array.isArray(v) ? v : [v]) if (value !== undefined) lines += `${k}: ${value}\r\n`;
        }
        upstream.on('connect', () => {
          upstream.write(`${lines}\r\n`);
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
  }
}
