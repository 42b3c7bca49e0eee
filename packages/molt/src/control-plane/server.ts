import Fastify, { type FastifyInstance } from 'fastify';
import { pino, type Logger } from 'pino';
import { chmodSync, mkdirSync, writeFileSync } from 'node:fs';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { join, resolve } from 'node:path';
import { errorResponse, MoltError } from '../errors.js';
import { answerClientError, Gateway, ROUTE_PREFIX } from '../gateway/gateway.js';
import { newId, newToken, sha256 } from '../ids.js';
import { openStore } from '../store/open-store.js';
import { appRoutes } from './api/app-routes.js';
import { volumeRoutes } from './api/volume-routes.js';
import { nodeRoutes } from './api/node-routes.js';
import { Cgroups } from './resources/cgroups.js';
import { detectNode } from './resources/node-info.js';
import type { ApiContext } from './api/context.js';
import { namespaceRoutes } from './api/namespace-routes.js';
import { releaseRoutes } from './api/release-routes.js';
import { tokenRoutes } from './api/token-routes.js';
import { ControlPlane } from './control-plane.js';
import { lockDataDir } from './data-dir-lock.js';
import { SOCKET_NAME } from './sandbox/bwrap-args.js';
import { DEFAULT_WORKER_UIDS, describeIsolation, detectIsolation, parseUidRange } from './sandbox/isolation.js';

export interface ServerOptions {
  dataDir: string;
  host?: string;
  port?: number;
  /** `postgres://…` to use PostgreSQL; default SQLite in the data dir. */
  storeUrl?: string;
  maxUploadBytes?: number;
  maxUploadFiles?: number;
  maxVolumeBytes?: number;
  /** Capacity offered to workers; default: this machine's cores and memory. */
  cpus?: number;
  memoryMb?: number;
  /** Where cgroups are mounted (default /sys/fs/cgroup). */
  cgroupRoot?: string;
  maxQueue?: number;
  queueTimeoutMs?: number;
  upstreamTimeoutMs?: number;
  /** Structured log level (`MOLT_LOG_LEVEL`): info prints every event; silent prints nothing. */
  logLevel?: string;
  /** How the server prints its events on stderr: `text` lines for a person, or `json` lines (default). */
  logFormat?: 'text' | 'json';
  /** Refuse to run workers unsandboxed: the server does not start where it cannot sandbox them. */
  requireIsolation?: boolean;
  /** Run workers unsandboxed (local trials, benchmarks); they say NOT ISOLATED. */
  noIsolation?: boolean;
  /** `START-END`: the uids namespaces' workers run as (default 100000-165535). */
  workerUids?: string;
  /** Size of each private tmpfs of a sandboxed worker (/tmp, scratch, links), MiB. */
  scratchMb?: number;
  /** Most workers one app may ask for. */
  maxWorkersPerApp?: number;
  /** Uploads read at once; more wait their turn. */
  maxConcurrentUploads?: number;
  /** MiB of a worker's log file before it is rotated (its last two parts are kept). */
  maxLogMb?: number;
}

export interface MoltServer {
  url: string;
  port: number;
  cp: ControlPlane;
  /** How workers are isolated here, as `node list` says it. */
  isolation: string;
  /** The admin token, only on the start that created it. */
  adminToken?: string;
  close(): Promise<void>;
}

/** Creates the `default` namespace and the server admin token on first start; the token is shown once and written 0600. */
async function bootstrap(cp: ControlPlane, dataDir: string): Promise<string | undefined> {
  await cp.store.createNamespace('default');
  if ((await cp.store.listTokens()).length > 0) return undefined;
  const token = newToken();
  await cp.store.insertToken({ id: newId(12), name: 'server admin', namespace: '*', role: 'admin', hash: sha256(token), createdAt: new Date().toISOString(), revokedAt: null });
  const file = join(dataDir, 'admin-token');
  writeFileSync(file, `${token}\n`, { mode: 0o600 });
  chmodSync(file, 0o600);
  return token;
}

function buildApi(cp: ControlPlane, gateway: Gateway): FastifyInstance {
  const api = Fastify({
    logger: false,
    bodyLimit: 16 * 1024 * 1024,
    // What Node's parser refuses gets molt's JSON error too, on the API and the gateway alike.
    clientErrorHandler: answerClientError,
    // The gateway goes first: route requests never enter the API framework.
    serverFactory: (handler) =>
      createServer((req: IncomingMessage, res: ServerResponse) => {
        if (req.url!.startsWith(ROUTE_PREFIX)) gateway.handle(req, res);
        else handler(req, res);
      }),
  });
  const ctx: ApiContext = { cp, apps: cp.apps, volumes: cp.volumes };
  api.setErrorHandler((err, _req, reply) => {
    const { status, body } = errorResponse(err);
    // An upload refused part-way: the rest of its body is not wanted on this connection.
    if (status === 413) void reply.header('connection', 'close');
    void reply.code(status).send(body);
  });
  api.setNotFoundHandler((req, reply) => {
    void reply.code(404).send(new MoltError('MOLT_ERR_NOT_FOUND', `no API route ${req.method} ${req.url.split('?')[0]}; see \`molt --help\``).toJSON());
  });
  api.get('/api/v1/health', async () => ({ ok: true }));
  api.register(
    async (v1) => {
      v1.addHook('onRequest', async (req) => {
        req.principal = await cp.tokens.verify(req.headers.authorization);
      });
      namespaceRoutes(v1, ctx);
      tokenRoutes(v1, ctx);
      releaseRoutes(v1, ctx);
      appRoutes(v1, ctx);
      volumeRoutes(v1, ctx);
      nodeRoutes(v1, ctx);
    },
    { prefix: '/api/v1' },
  );
  return api;
}

/**
 * Starts molt on one port: the API under /api/v1, the gateway under /api/routes/v1.
 * Gateway requests are answered on the bare node:http request, before fastify sees them.
 */
export async function startServer(opts: ServerOptions): Promise<MoltServer> {
  const dataDir = resolve(opts.dataDir);
  // Only molt reads its data dir: the admin token, the database, blobs and logs are in it.
  mkdirSync(dataDir, { recursive: true, mode: 0o700 });
  chmodSync(dataDir, 0o700);
  const lock = lockDataDir(dataDir);
  try {
    return await start(opts, dataDir, lock.release);
  } catch (err) {
    lock.release();
    throw err;
  }
}

/** The longest path of a Unix socket (sun_path holds 108 bytes with its NUL). */
const MAX_SOCKET_PATH = 107;

async function start(opts: ServerOptions, dataDir: string, unlock: () => void): Promise<MoltServer> {
  const isolation = detectIsolation({ disabled: opts.noIsolation === true, users: parseUidRange(opts.workerUids ?? DEFAULT_WORKER_UIDS, process.getuid?.() ?? 0) });
  if (opts.requireIsolation && isolation.notIsolated) {
    throw new MoltError('MOLT_ERR_BAD_REQUEST', `--require-isolation: workers cannot be isolated here: ${isolation.notIsolated}`);
  }
  // A sandboxed worker's socket is <data-dir>/run/<22-character id>/http.sock.
  const socketPath = join(dataDir, 'run', 'x'.repeat(22), SOCKET_NAME);
  if (isolation.sandboxed && Buffer.byteLength(socketPath) > MAX_SOCKET_PATH) {
    throw new MoltError(
      'MOLT_ERR_BAD_REQUEST',
      `the data dir path ${dataDir} is too long: sandboxed workers' sockets under it would pass the ${MAX_SOCKET_PATH}-byte limit of Unix socket paths; use a data dir path of at most ${MAX_SOCKET_PATH - (Buffer.byteLength(socketPath) - Buffer.byteLength(dataDir))} bytes`,
    );
  }
  const store = await openStore(dataDir, opts.storeUrl);
  const cp = new ControlPlane(store, {
    dataDir,
    workerHost: '127.0.0.1',
    maxUploadBytes: opts.maxUploadBytes ?? 512 * 1024 * 1024,
    maxUploadFiles: opts.maxUploadFiles ?? 100_000,
    maxVolumeBytes: opts.maxVolumeBytes ?? 10 * 1024 ** 3,
    maxQueue: opts.maxQueue ?? 1000,
    queueTimeoutMs: opts.queueTimeoutMs ?? 30_000,
    maxConcurrentUploads: opts.maxConcurrentUploads ?? 4,
    maxWorkersPerApp: opts.maxWorkersPerApp ?? 64,
    node: await detectNode({ cpu: opts.cpus, memoryMb: opts.memoryMb }),
    cgroups: Cgroups.detect(opts.cgroupRoot),
    isolation,
    scratchBytes: (opts.scratchMb ?? 512) * 1024 * 1024,
    maxLogBytes: (opts.maxLogMb ?? 16) * 1024 * 1024,
  });
  const adminToken = await bootstrap(cp, dataDir);
  const log: Logger = pino({ level: opts.logLevel ?? process.env.MOLT_LOG_LEVEL ?? 'info', base: undefined }, pino.destination(2));
  // Every event, once: a JSON line with its app, rollout and worker ids, or a line for a person.
  if (opts.logFormat === 'text') {
    cp.events.subscribe((e) => {
      if (log.isLevelEnabled(e.level)) process.stderr.write(`[${e.ts.slice(11, 19)}] ${e.level === 'info' ? '' : `${e.level.toUpperCase()} `}${e.app ? `${e.namespace}/${e.app}: ` : ''}${e.message}\n`);
    });
  } else cp.events.subscribe((e) => log[e.level]({ ns: e.namespace, app: e.app, rolloutId: e.rolloutId ?? undefined, workerId: e.workerId ?? undefined, event: e.type }, e.message));
  const gateway = new Gateway(cp.routes, cp.tokens, {
    upstreamTimeoutMs: opts.upstreamTimeoutMs ?? 60_000,
    onUpstreamError: (info) => log.warn(info, 'gateway upstream error'),
  });
  const api = buildApi(cp, gateway);
  await api.ready();
  const server: Server = api.server;
  server.on('upgrade', (req, socket, head) => {
    if (req.url?.startsWith(ROUTE_PREFIX)) gateway.handleUpgrade(req, socket, head);
    else socket.destroy();
  });
  server.keepAliveTimeout = 65_000;
  await new Promise<void>((resolvePromise, reject) => {
    server.once('error', reject);
    server.listen(opts.port ?? 7070, opts.host ?? '127.0.0.1', () => resolvePromise());
  });
  const { port, address, family } = server.address() as AddressInfo;
  const host = family === 'IPv6' ? `[${address}]` : address === '0.0.0.0' ? '127.0.0.1' : address;
  await cp.recover();

  let closing: Promise<void> | undefined;
  return {
    url: `http://${host}:${port}`,
    port,
    cp,
    isolation: describeIsolation(isolation),
    adminToken,
    close() {
      closing ??= (async () => {
        const closed = new Promise<void>((r) => server.close(() => r()));
        server.closeIdleConnections();
        await cp.close();
        server.closeAllConnections();
        await closed;
        await api.close().catch(() => {});
        await store.close();
        unlock();
      })();
      return closing;
    },
  };
}
