import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { extname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { MoltError } from '../errors.js';
import { PROMETHEUS_CONTENT_TYPE, prometheusText } from '../data-plane/prometheus.js';
import { cookieName, DASHBOARD_COOKIE, Sessions } from '../gateway/sessions.js';
import type { EventRow } from '../store/types.js';
import { type Principal, READ_RIGHT, requireRole, requireServerAdmin } from './auth.js';
import type { ControlPlane } from './control-plane.js';

/** Where `npm run build` puts the dashboard (index.html and hashed assets). */
const DASHBOARD_DIR = fileURLToPath(new URL('../dashboard/', import.meta.url));

/**
 * The dashboard's policy: its own script and styles only, requests only to this origin, never in
 * a frame. Nothing inline runs, so markup that reaches the page (an app's name, a log line) is inert
 * even if a view rendered it as HTML, which none does.
 */
export const DASHBOARD_CSP = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

const TYPES: Record<string, string> = { '.js': 'text/javascript; charset=utf-8', '.css': 'text/css; charset=utf-8', '.html': 'text/html; charset=utf-8', '.svg': 'image/svg+xml', '.map': 'application/json' };

/** The built files, read once at start: the dashboard is a few files, served from memory. */
function loadAssets(): Map<string, Buffer> {
  const files = new Map<string, Buffer>();
  if (!existsSync(DASHBOARD_DIR)) return files;
  for (const name of readdirSync(DASHBOARD_DIR, { recursive: true }) as string[]) {
    const path = join(DASHBOARD_DIR, name);
    if (TYPES[extname(name)]) files.set(`/${name.split('\\').join('/')}`, readFileSync(path));
  }
  return files;
}

const isSecure = (req: FastifyRequest) => req.headers['x-forwarded-proto'] === 'https';
/** What a dashboard session is bound to: the server's host, apart from any app host's session. */
const sessionHost = (req: FastifyRequest) => `dashboard\n${req.headers.host ?? ''}`;

function readCookie(req: FastifyRequest, name: string): string | undefined {
  for (const pair of (req.headers.cookie ?? '').split(';')) {
    const eq = pair.indexOf('=');
    if (eq > 0 && pair.slice(0, eq).trim() === name) return pair.slice(eq + 1).trim();
  }
  return undefined;
}

/**
 * Who calls the API: a bearer token (the CLI), else the dashboard's session cookie. A request
 * that changes something on a session must come from this origin (SameSite=Strict already keeps
 * other sites' requests from carrying it; the Origin check holds where a browser does not).
 */
export async function authenticate(cp: ControlPlane, req: FastifyRequest): Promise<Principal> {
  if (req.headers.authorization !== undefined) return cp.tokens.verify(req.headers.authorization);
  const session = readCookie(req, cookieName(DASHBOARD_COOKIE, isSecure(req)));
  if (session === undefined) return cp.tokens.verify(undefined);
  const row = cp.sessions?.verify(session, sessionHost(req));
  if (!row) throw new MoltError('MOLT_ERR_UNAUTHENTICATED', 'the dashboard session has ended (it expired, or its token was revoked); sign in again with a token');
  if (req.method !== 'GET' && req.method !== 'HEAD') {
    const origin = req.headers.origin;
    const own = `${isSecure(req) ? 'https' : 'http'}://${req.headers.host}`;
    if (origin !== own) throw new MoltError('MOLT_ERR_FORBIDDEN', `a change made with a dashboard session must come from the dashboard (${own}), not from ${origin ?? 'a request without Origin'}`);
  }
  return { tokenId: row.id, namespace: row.namespace, role: row.role };
}

/** Whether a principal may read an event's namespace (a deployer's right; an invoker reads no events). */
function mayRead(p: Principal, e: EventRow): boolean {
  try {
    requireRole(p, e.namespace, 'deployer', READ_RIGHT);
    return true;
  } catch {
    return false;
  }
}

/**
 * The dashboard's routes: its page and assets at `/`, the session it signs in with, the event
 * stream it follows, the figures it draws, and `/metrics` for Prometheus.
 */
export function dashboardRoutes(api: FastifyInstance, cp: ControlPlane): void {
  const assets = loadAssets();
  const send = (reply: FastifyReply, path: string, cache: string) => {
    const body = assets.get(path);
    if (!body) throw new MoltError('MOLT_ERR_NOT_FOUND', path === '/index.html' ? 'the dashboard is not built: run `npm run build`' : `no dashboard file ${path}`);
    return reply
      .header('content-type', TYPES[extname(path)] ?? 'application/octet-stream')
      .header('content-security-policy', DASHBOARD_CSP)
      .header('x-content-type-options', 'nosniff')
      .header('x-frame-options', 'DENY')
      .header('referrer-policy', 'no-referrer')
      .header('cache-control', cache)
      .send(body);
  };
  api.get('/', async (_req, reply) => send(reply, '/index.html', 'no-store'));
  // Asset names carry a hash of their content: cached for good.
  api.get<{ Params: { file: string } }>('/assets/:file', async (req, reply) => send(reply, `/assets/${req.params.file}`, 'public, max-age=31536000, immutable'));

  api.get('/metrics', async (req, reply) => {
    requireServerAdmin(await authenticate(cp, req));
    return reply.header('content-type', PROMETHEUS_CONTENT_TYPE).send(await prometheusText(await cp.dp.metricTotals()));
  });

  api.register(
    async (v1) => {
      /** Signs in: the token is checked and exchanged for a session cookie; the token itself is never kept by the page. */
      v1.post<{ Body: { token?: unknown } }>('/session', async (req, reply) => {
        const token = typeof req.body?.token === 'string' ? req.body.token.trim() : '';
        if (!token) throw new MoltError('MOLT_ERR_BAD_REQUEST', 'send {"token": "molt_…"}: a token made by `molt token create` (or the admin token)');
        const row = await cp.tokens.lookup(`Bearer ${token}`);
        if (!cp.sessions) throw new MoltError('MOLT_ERR_CONTROL_PLANE_DOWN', 'molt is starting; sign in again in a moment');
        const p = { tokenId: row.id, namespace: row.namespace, role: row.role };
        return reply.header('set-cookie', cp.sessions.cookie(sessionHost(req), row, isSecure(req), DASHBOARD_COOKIE)).header('cache-control', 'no-store').send({ principal: p, expiresInS: Math.floor(cp.sessions.ttlMs / 1000) });
      });
      v1.get('/session', async (req, reply) => reply.header('cache-control', 'no-store').send({ principal: await authenticate(cp, req) }));
      v1.delete('/session', async (req, reply) => reply.header('set-cookie', Sessions.clear(isSecure(req), DASHBOARD_COOKIE)).send({ ok: true }));

      /**
       * Every event the caller may read, as server-sent events (what the CLI follows per app, for all
       * apps at once). `Last-Event-ID` (EventSource's reconnect) or `after` resumes after an event.
       */
      v1.get<{ Querystring: { after?: string; namespace?: string } }>('/events/stream', async (req, reply) => {
        const p = await authenticate(cp, req);
        const only = req.query.namespace;
        if (only) requireRole(p, only, 'deployer', READ_RIGHT);
        const wanted = (e: EventRow) => (only === undefined || e.namespace === only) && mayRead(p, e);
        reply.hijack();
        const res = reply.raw;
        res.writeHead(200, { 'content-type': 'text/event-stream; charset=utf-8', 'cache-control': 'no-store', 'x-accel-buffering': 'no' });
        let last = Number(req.headers['last-event-id'] ?? req.query.after ?? 0) || 0;
        let backlog = true;
        const queued: EventRow[] = [];
        const write = (e: EventRow) => {
          if (e.id <= last || !wanted(e)) return;
          last = e.id;
          res.write(`id: ${e.id}\nevent: molt\ndata: ${JSON.stringify(e)}\n\n`);
        };
        const unsubscribe = cp.events.subscribe((e) => (backlog ? queued.push(e) : write(e)));
        // A comment now and then keeps proxies from closing a quiet stream.
        const beat = setInterval(() => res.write(': keep-alive\n\n'), 15_000);
        res.on('close', () => {
          clearInterval(beat);
          unsubscribe();
        });
        res.write('retry: 2000\n\n');
        // Only what came after `last` is sent again: a fresh page gets none of the history (it reads that per app).
        if (last > 0) for (const e of await cp.store.listEvents({ namespace: only, afterId: last, limit: 10_000 })) write(e);
        backlog = false;
        for (const e of queued) write(e);
      });
    },
    { prefix: '/api/v1' },
  );
}
