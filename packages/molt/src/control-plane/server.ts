import Fastify, { type FastifyInstance } from 'fastify';
import { pino, type Logger } from 'pino';
import { chmodSync, existsSync, mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import type { Server } from 'node:http';
import { hostname } from 'node:os';
import { join, resolve } from 'node:path';
import { type ControlPlaneReady, DataPlane } from '../data-plane/data-plane.js';
import { CONTROL_PLANE_SOCKET, DATA_PLANE_SOCKET } from '../data-plane/protocol.js';
import { errorResponse, MoltError } from '../errors.js';
import { answerClientError } from '../gateway/gateway.js';
import { type TlsFiles, tlsServerOptions } from '../gateway/tls.js';
import { newId, newToken, sha256 } from '../ids.js';
import { openStore } from '../store/open-store.js';
import { describeLeader, Leadership } from './leadership.js';
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
import { authenticate, dashboardRoutes } from './dashboard.js';
import { DataPlaneClient, RemoteLogHub } from './data-plane-client.js';
import { lockDataDir } from './data-dir-lock.js';
import { CONTROL_SOCKET_NAME } from './sandbox/bwrap-args.js';
import { DEFAULT_WORKER_UIDS, describeIsolation, detectIsolation, parseUidRange } from './sandbox/isolation.js';

export interface ServerOptions {
  dataDir: string;
  host?: string;
  port?: number;
  /** Domains whose hosts `<app>.<namespace>.<D>` and `<app>.<D>` route to apps at their root (`--domain`). */
  domains?: string[];
  /** HTTPS on the port: a default certificate and key, and certificates by SNI (PEM files). */
  tls?: TlsFiles;
  /** How long a browser session made on an app's host lasts (default 12 hours). */
  sessionTtlMs?: number;
  /** `postgres://…` to use PostgreSQL; default SQLite in the data dir. */
  databaseUrl?: string;
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
  /** How long an API request waits for a restarting control plane before 503 with Retry-After. */
  apiWaitMs?: number;
  /** How long a worker whose molt server is gone keeps serving, waiting to be adopted, before it stops (default 10 minutes). */
  adoptGraceMs?: number;
  /** A clean stop leaves the workers running for the next `molt server` on the data dir to adopt. */
  keepWorkers?: boolean;
  /** How long a data plane that was taken over finishes in-flight requests before it cuts the rest. */
  takeoverDrainMs?: number;
  /** How often the dashboard's figures are read (default 5000 ms). */
  metricsIntervalMs?: number;
  /** `host:port` where Prometheus may scrape `/metrics` without a token (`--metrics-listen`). */
  metricsListen?: string;
}

export interface MoltServer {
  url: string;
  port: number;
  /** How workers are isolated here, as `node list` says it. */
  isolation: string;
  /** The admin token, only on the start that created it. */
  adminToken?: string;
  /** Who leads, when this server started as a standby. */
  standby?: string;
  /** Settles when a newer `molt server --takeover` has taken over and this one has drained: it should exit. */
  retired: Promise<void>;
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

function buildApi(cp: ControlPlane): FastifyInstance {
  const api = Fastify({
    logger: false,
    bodyLimit: 16 * 1024 * 1024,
    // What Node's parser refuses gets molt's JSON error too, on the API and the gateway alike.
    clientErrorHandler: answerClientError,
  });
  const ctx: ApiContext = { cp, apps: cp.apps, volumes: cp.volumes };
  api.setErrorHandler(async (err, _req, reply) => {
    const { status, body } = errorResponse(err);
    // An upload refused part-way: Node reads and drops the rest of its body on this connection (the
    // data plane's, never the client's own), so the data plane is not cut off before this answer.
    return reply.code(status).send(body);
  });
  api.setNotFoundHandler((req, reply) => {
    void reply.code(404).send(new MoltError('MOLT_ERR_NOT_FOUND', `no API route ${req.method} ${req.url.split('?')[0]}; see \`molt --help\``).toJSON());
  });
  // No answer of the API is a page: opened in a browser, nothing in it runs or is sniffed as one.
  api.addHook('onSend', async (_req, reply) => {
    if (!reply.hasHeader('content-security-policy')) reply.header('content-security-policy', "default-src 'none'; frame-ancestors 'none'; base-uri 'none'");
    reply.header('x-content-type-options', 'nosniff');
  });
  api.get('/api/v1/health', async () => ({ ok: true }));
  api.register(
    async (v1) => {
      v1.addHook('onRequest', async (req) => {
        req.principal = await authenticate(cp, req);
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
  dashboardRoutes(api, cp);
  return api;
}

/**
 * Starts molt on one port, as two processes: this one becomes the data plane (the port, the
 * gateway, the workers), and it runs the control plane (the API, the store, rollouts) as a child
 * it talks to over a local socket and restarts when it dies.
 */
export async function startServer(opts: ServerOptions): Promise<MoltServer> {
  const dataDir = resolve(opts.dataDir);
  // Only molt reads its data dir: the admin token, the database, blobs and logs are in it.
  mkdirSync(dataDir, { recursive: true, mode: 0o700 });
  chmodSync(dataDir, 0o700);
  let lock = lockDataDir(dataDir);
  let databaseUrl: string | undefined;
  try {
    // Every certificate is read and checked before anything starts: a bad one is named now.
    if (opts.tls) tlsServerOptions(opts.tls);
    databaseUrl = databaseOf(dataDir, opts.databaseUrl);
  } catch (err) {
    lock.release();
    throw err;
  }
  // Started by a data plane that hands over to this one: its listening socket is at this fd.
  const listenFd = process.env.MOLT_TAKEOVER_FD ? Number(process.env.MOLT_TAKEOVER_FD) : undefined;
  const takeoverStatusFd = process.env.MOLT_TAKEOVER_STATUS_FD ? Number(process.env.MOLT_TAKEOVER_STATUS_FD) : undefined;
  delete process.env.MOLT_TAKEOVER_FD;
  delete process.env.MOLT_TAKEOVER_STATUS_FD;
  let onRetired = () => {};
  const retired = new Promise<void>((r) => (onRetired = r));
  const dataPlane = new DataPlane({
    dataDir,
    host: opts.host ?? '127.0.0.1',
    port: opts.port ?? 7070,
    maxQueue: opts.maxQueue ?? 1000,
    queueTimeoutMs: opts.queueTimeoutMs ?? 30_000,
    upstreamTimeoutMs: opts.upstreamTimeoutMs ?? 60_000,
    domains: opts.domains ?? [],
    tls: opts.tls,
    maxLogBytes: (opts.maxLogMb ?? 16) * 1024 * 1024,
    logLevel: opts.logLevel ?? process.env.MOLT_LOG_LEVEL ?? 'info',
    logFormat: opts.logFormat,
    apiWaitMs: opts.apiWaitMs,
    adoptGraceMs: opts.adoptGraceMs,
    keepWorkers: opts.keepWorkers,
    listenFd,
    takeoverStatusFd,
    takeoverDrainMs: opts.takeoverDrainMs,
    metricsIntervalMs: opts.metricsIntervalMs,
    metricsListen: opts.metricsListen,
    lock: {
      release: () => lock.release(),
      retake: () => {
        lock = lockDataDir(dataDir);
      },
    },
    onRetired: () => onRetired(),
    controlPlaneOptions: { ...opts, dataDir, databaseUrl },
  });
  process.title = `molt: gateway ${dataDir}`;
  try {
    const ready = await dataPlane.start();
    return {
      url: dataPlane.url,
      port: dataPlane.port,
      isolation: ready.isolation,
      adminToken: ready.adminToken,
      standby: ready.standby,
      retired,
      close: once(async () => {
        await dataPlane.close();
        lock.release();
      }),
    };
  } catch (err) {
    // Workers it adopted are left running for the next start (or the server it was to take over from).
    await dataPlane.close({ keepWorkers: true });
    lock.release();
    throw err;
  }
}

/** A database URL as it may be printed: without its password. */
function redact(url: string): string {
  try {
    const u = new URL(url);
    if (u.password) u.password = '***';
    return u.toString();
  } catch {
    return url;
  }
}

/**
 * Which database a data dir's server keeps its state in. A data dir remembers the database it was
 * first started with (`database-url`, mode 0600): a later start without `--database-url` (a
 * takeover, a restart) uses it again, and one naming another database is refused before anything
 * is touched, as is a PostgreSQL URL for a data dir whose state is in its SQLite file.
 */
function databaseOf(dataDir: string, given: string | undefined): string | undefined {
  const file = join(dataDir, 'database-url');
  const recorded = existsSync(file) ? readFileSync(file, 'utf8').trim() : undefined;
  const mismatch = (where: string) =>
    new MoltError('MOLT_ERR_DATABASE_MISMATCH', `data dir ${dataDir} keeps its state in ${where}, not in ${redact(given!)}; start it ${recorded ? `with --database-url ${redact(recorded)} (or none: it is remembered)` : 'without --database-url'}, or use another data dir`);
  if (given && recorded && given !== recorded) throw mismatch(redact(recorded));
  if (given && !recorded) {
    if (existsSync(join(dataDir, 'molt.db'))) throw mismatch(`SQLite (${join(dataDir, 'molt.db')})`);
    writeFileSync(file, `${given}\n`, { mode: 0o600 });
  }
  return given ?? recorded;
}

function once<A>(fn: (arg?: A) => Promise<void>): (arg?: A) => Promise<void> {
  let p: Promise<void> | undefined;
  return (arg) => (p ??= fn(arg));
}

/** The longest path of a Unix socket (sun_path holds 108 bytes with its NUL). */
const MAX_SOCKET_PATH = 107;

export interface ControlPlaneProcess {
  cp: ControlPlane;
  /** Stops; `keepWorkers` leaves the workers running (a takeover, or a stop with --keep-workers). */
  close(how?: { keepWorkers?: boolean }): Promise<void>;
}

/**
 * The control plane's process: the store, the API (on a Unix socket the data plane forwards to),
 * the scheduler and the rollout engine. It connects to its data plane, resumes from what the store
 * and the data plane report, and tells the data plane it is ready.
 */
export async function runControlPlane(opts: ServerOptions): Promise<ControlPlaneProcess> {
  const dataDir = resolve(opts.dataDir);
  const isolation = detectIsolation({ disabled: opts.noIsolation === true, users: parseUidRange(opts.workerUids ?? DEFAULT_WORKER_UIDS, process.getuid?.() ?? 0) });
  if (opts.requireIsolation && isolation.notIsolated) {
    throw new MoltError('MOLT_ERR_BAD_REQUEST', `--require-isolation: workers cannot be isolated here: ${isolation.notIsolated}`);
  }
  // A worker's control socket is <data-dir>/run/<22-character id>/control.sock (its HTTP socket, when sandboxed, is beside it).
  const socketPath = join(dataDir, 'run', 'x'.repeat(22), CONTROL_SOCKET_NAME);
  if (Buffer.byteLength(socketPath) > MAX_SOCKET_PATH) {
    throw new MoltError(
      'MOLT_ERR_BAD_REQUEST',
      `the data dir path ${dataDir} is too long: workers' sockets under it would pass the ${MAX_SOCKET_PATH}-byte limit of Unix socket paths; use a data dir path of at most ${MAX_SOCKET_PATH - (Buffer.byteLength(socketPath) - Buffer.byteLength(dataDir))} bytes`,
    );
  }
  const logs = new RemoteLogHub(join(dataDir, 'logs'));
  const dp = await DataPlaneClient.connect(join(dataDir, DATA_PLANE_SOCKET), logs);
  const store = await openStore(dataDir, opts.databaseUrl);
  const cp = new ControlPlane(store, dp, {
    dataDir,
    domains: opts.domains ?? [],
    sessionTtlMs: opts.sessionTtlMs ?? 12 * 60 * 60 * 1000,
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
  const ready = (p: Omit<ControlPlaneReady, 'isolation'>) => dp.call('cp.ready', { isolation: describeIsolation(isolation), ...p });
  // One control plane decides per database; the others stand by, their data planes serving no app.
  // Where it serves, for standbys to say: known now if its data plane listens (a restart, a standby
  // that takes the lead), else once it does, after the first ready; the lease says it at once.
  let url = (await dp.info()).url;
  let leads = false;
  const leadership = new Leadership(store, `${hostname()}:${dataDir}`, () => ({ dataDir, pid: process.pid, url: url || undefined }));
  dp.onListening = (listening) => {
    url = listening;
    if (leads) void leadership.attempt().catch(() => {});
  };
  const first = await leadership.attempt();
  if (!first.leads) {
    await ready({ standby: describeLeader(first.lease) });
    // What this data plane still runs is the leader's to replace, not this one's to run.
    for (const w of await dp.listWorkers()) if (w.state !== 'exited') await dp.stopWorker(w.id, 5000).catch(() => {});
    await leadership.acquire((lease) => void ready({ standby: describeLeader(lease) }).catch(() => {}), first.lease.holder);
  }
  const adminToken = await bootstrap(cp, dataDir);
  const log: Logger = pino({ level: opts.logLevel ?? process.env.MOLT_LOG_LEVEL ?? 'info', base: undefined }, pino.destination(2));
  // Every event, once: a JSON line with its app, rollout and worker ids, or a line for a person.
  if (opts.logFormat === 'text') {
    cp.events.subscribe((e) => {
      if (log.isLevelEnabled(e.level)) process.stderr.write(`[${e.ts.slice(11, 19)}] ${e.level === 'info' ? '' : `${e.level.toUpperCase()} `}${e.app ? `${e.namespace}/${e.app}: ` : ''}${e.message}\n`);
    });
  } else cp.events.subscribe((e) => log[e.level]({ ns: e.namespace, app: e.app, rolloutId: e.rolloutId ?? undefined, workerId: e.workerId ?? undefined, event: e.type }, e.message));
  const api = buildApi(cp);
  await api.ready();
  const server: Server = api.server;
  server.keepAliveTimeout = 65_000;
  const apiSocket = join(dataDir, CONTROL_PLANE_SOCKET);
  rmSync(apiSocket, { force: true });
  await new Promise<void>((resolvePromise, reject) => {
    server.once('error', reject);
    server.listen(apiSocket, () => resolvePromise());
  });
  await cp.recover();
  leads = true;
  await ready({ adminToken });
  leadership.keep((why) => {
    // Deposed: it decides nothing more. Its data plane starts a new control plane, which stands by.
    log.error({ event: 'leadership.lost' }, `this control plane lost the lead (${why}); it stops deciding and restarts as a standby`);
    process.exit(1);
  });

  return {
    cp,
    close: once(async (how: { keepWorkers?: boolean } = {}) => {
      const closed = new Promise<void>((r) => server.close(() => r()));
      server.closeIdleConnections();
      await cp.close({ keepWorkers: how.keepWorkers === true });
      // A server that stops gives the lead to a standby at once; one handing over to its successor keeps it.
      if (how.keepWorkers) leadership.stop();
      else await leadership.release();
      server.closeAllConnections();
      await closed;
      await api.close().catch(() => {});
      await store.close();
      dp.peer.close();
    }),
  };
}
