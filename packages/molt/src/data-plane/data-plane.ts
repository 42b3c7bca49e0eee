import { type ChildProcess, spawn } from 'node:child_process';
import { readdirSync, rmSync } from 'node:fs';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { createServer as createNetServer, type AddressInfo, type Server as NetServer } from 'node:net';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { pino, type Logger } from 'pino';
import { TokenVerifier } from '../control-plane/auth.js';
import { LogHub, type LogLine } from '../control-plane/log-hub.js';
import { type WorkerExit, type WorkerHome, type WorkerLaunch, WorkerProcess } from '../control-plane/worker-process.js';
import { answerClientError, Gateway, ROUTE_PREFIX } from '../gateway/gateway.js';
import { RouteTable } from '../gateway/route-table.js';
import type { WorkerAddress } from '../gateway/target.js';
import type { ServerToWorker, UpgradeRequest } from '../runtime/control-messages.js';
import type { TokenRow } from '../store/types.js';
import { ApiProxy } from './api-proxy.js';
import { CONTROL_PLANE_SOCKET, DATA_PLANE_SOCKET, type DataPlaneWorker, type TargetStats } from './protocol.js';
import { RpcPeer } from './rpc.js';
import { stillRuns, type WorkerRecord, WorkerRecords } from './worker-records.js';

const CONTROL_PLANE_MAIN = fileURLToPath(new URL('../control-plane/control-plane-main.js', import.meta.url));

export interface DataPlaneOptions {
  dataDir: string;
  host: string;
  port: number;
  maxQueue: number;
  queueTimeoutMs: number;
  upstreamTimeoutMs: number;
  maxLogBytes: number;
  logLevel: string;
  /** How its own lines are printed on stderr, as the control plane prints events. */
  logFormat?: 'text' | 'json';
  /** What the control plane is started with (its own options, as JSON). */
  controlPlaneOptions: object;
  /** API requests that may wait while the control plane is down, and for how long. */
  apiQueue?: number;
  apiWaitMs?: number;
  /** How long a worker whose data plane is gone keeps serving, waiting to be adopted, before it stops. */
  adoptGraceMs?: number;
  /** A clean stop leaves the workers running, for the next data plane to adopt. */
  keepWorkers?: boolean;
}

/** What the control plane says when it is ready (once per start of it). */
export interface ControlPlaneReady {
  isolation: string;
  adminToken?: string;
}

interface OwnedWorker {
  proc: WorkerProcess;
  state: DataPlaneWorker['state'];
  exit?: WorkerExit;
}

/** Restart delays of a control plane that died: doubling from 100 ms to 10 s, reset after a minute up. */
const RESTART_MIN_MS = 100;
const RESTART_MAX_MS = 10_000;
const HEALTHY_MS = 60_000;
/** Exited workers kept for a control plane to record, at most (the oldest go first). */
const MAX_EXITED_KEPT = 10_000;

/**
 * The data plane: one per node. It holds the listening port, serves the gateway, owns the worker
 * processes and runs the control plane as a child it restarts when it dies. Nothing slow runs on
 * its event loop: the store, the API, builds and rollouts are all the control plane's.
 */
export class DataPlane {
  private readonly routes: RouteTable;
  private readonly logs: LogHub;
  private readonly tokens = new Map<string, TokenRow>();
  private readonly verifier: TokenVerifier;
  private readonly gateway: Gateway;
  private readonly api: ApiProxy;
  private readonly workers = new Map<string, OwnedWorker>();
  private readonly home: WorkerHome;
  /** Questions to the control plane under way, per app (see explain). */
  private readonly explaining = new Map<string, Promise<string | undefined>>();
  private readonly log: Logger;
  private server?: Server;
  private rpcServer?: NetServer;
  private peer?: RpcPeer;
  private child?: ChildProcess;
  private childStartedAt = 0;
  private restartDelay = RESTART_MIN_MS;
  private closing = false;
  private firstReady?: { resolve(r: ControlPlaneReady): void; reject(e: Error): void };
  url = '';
  port = 0;
  /** When this data plane started (a control plane tells its own restart from the whole server's by it). */
  readonly startedAt = new Date().toISOString();

  constructor(readonly opts: DataPlaneOptions) {
    this.log = pino({ level: opts.logLevel, base: undefined }, pino.destination(2));
    this.routes = new RouteTable({ maxQueue: opts.maxQueue, queueTimeoutMs: opts.queueTimeoutMs });
    this.routes.explainNoWorker = (namespace, name) => this.explain(namespace, name);
    this.logs = new LogHub(join(opts.dataDir, 'logs'), opts.maxLogBytes);
    this.home = { records: new WorkerRecords(join(opts.dataDir, 'workers')), adoptGraceMs: opts.adoptGraceMs ?? 600_000 };
    this.verifier = new TokenVerifier({ tokenByHash: async (hash) => this.tokens.get(hash) });
    this.gateway = new Gateway(this.routes, this.verifier, {
      upstreamTimeoutMs: opts.upstreamTimeoutMs,
      onUpstreamError: (info) => (this.opts.logFormat === 'text' ? this.say('warn', 'gateway.upstream-error', `${info.ns}/${info.app}: ${info.status} ${info.message} (request ${info.requestId})`) : this.log.warn(info, 'gateway upstream error')),
    });
    this.api = new ApiProxy({ socketPath: join(opts.dataDir, CONTROL_PLANE_SOCKET), maxWaiting: opts.apiQueue ?? 256, waitMs: opts.apiWaitMs ?? 15_000 });
  }

  /**
   * Starts the channel for the control plane, the control plane itself, and, once it is ready,
   * the listening port. Rejects when the first control plane fails to start (its error is printed).
   */
  async start(): Promise<ControlPlaneReady> {
    await this.adoptWorkers();
    await this.listenRpc();
    const ready = new Promise<ControlPlaneReady>((resolve, reject) => (this.firstReady = { resolve, reject }));
    this.spawnControlPlane();
    const info = await ready;
    await this.listen();
    return info;
  }

  /**
   * Takes over the workers a previous data plane on this data dir left running (it died, or stopped
   * with --keep-workers): each one by its record, if it is the same process and knows its secret.
   * Those that are gone are reported exited, for the control plane to record; what is left of them
   * (run dirs, records) is removed.
   */
  private async adoptWorkers(): Promise<void> {
    const { records, orphans } = this.home.records.list();
    for (const id of orphans) this.home.records.remove(id);
    await Promise.all(
      records.map(async (record) => {
        try {
          const proc = await WorkerProcess.adopt(record, ...this.callbacks(record.launch), this.home);
          this.workers.set(proc.id, { proc, state: proc.running ? 'running' : 'starting' });
        } catch (err) {
          this.say('warn', 'worker.lost', (err as Error).message);
          // It may run still, unreachable: nothing could manage it, so it goes.
          if (stillRuns(record)) {
            try {
              process.kill(record.pid, 'SIGKILL');
            } catch {
              // gone meanwhile
            }
          }
          this.home.records.remove(record.launch.id);
          rmSync(record.launch.runDir, { recursive: true, force: true });
          const proc = new WorkerProcess(record.launch, () => {}, () => {}, () => {}, this.home);
          this.workers.set(record.launch.id, { proc, state: 'exited', exit: { code: null, signal: null, expected: false, unknown: true } });
        }
      }),
    );
    if (records.length > 0) {
      const adopted = [...this.workers.values()].filter((w) => w.state !== 'exited').length;
      this.say('info', 'workers.adopted', `adopted ${adopted} running worker${adopted === 1 ? '' : 's'} of the previous molt server${records.length > adopted ? `; ${records.length - adopted} had exited` : ''}`);
    }
    // Run directories of workers that are not running any more.
    const runRoot = join(this.opts.dataDir, 'run');
    for (const id of safeList(runRoot)) if (this.workers.get(id)?.state !== 'running' && this.workers.get(id)?.state !== 'starting') rmSync(join(runRoot, id), { recursive: true, force: true });
  }

  /** What a worker's process reports: its output, its exit, and its end. */
  private callbacks(launch: WorkerLaunch): [(line: LogLine) => Promise<void> | undefined, (exit: WorkerExit) => void, () => void] {
    return [
      (line) => this.writeLog(launch.namespace, launch.app, line),
      (exit) => {
        const owned = this.workers.get(launch.id);
        if (owned) {
          owned.state = 'exited';
          owned.exit = exit;
        }
        this.routes.removeWorker(launch.id);
        this.emit('worker.exit', { id: launch.id, exit });
      },
      () => {
        void this.logs.close(launch.id);
        rmSync(launch.runDir, { recursive: true, force: true });
        // Kept, exited, until a control plane has recorded how it ended (`worker.forget`).
        if (this.workers.size > MAX_EXITED_KEPT) for (const [id, w] of this.workers) if (w.state === 'exited' && id !== launch.id) this.workers.delete(id);
        this.emit('worker.closed', { id: launch.id });
      },
    ];
  }

  private async listenRpc(): Promise<void> {
    const path = join(this.opts.dataDir, DATA_PLANE_SOCKET);
    rmSync(path, { force: true });
    this.rpcServer = createNetServer((socket) => {
      // One control plane at a time: a newer connection replaces an older one.
      this.peer?.close();
      const handlers = this.handlers();
      // Events are calls without an answer (log lines of the control plane's own).
      const peer = new RpcPeer(socket, handlers, (event, data) => void (handlers as Record<string, (p: unknown) => unknown>)[event]?.(data));
      this.peer = peer;
      peer.onClose(() => {
        if (this.peer === peer) {
          this.peer = undefined;
          this.api.setUp(false);
        }
      });
    });
    await new Promise<void>((resolve, reject) => {
      this.rpcServer!.once('error', reject);
      this.rpcServer!.listen(path, () => resolve());
    });
  }

  private async listen(): Promise<void> {
    const server = createServer({ maxHeaderSize: 16 * 1024 }, (req: IncomingMessage, res: ServerResponse) => {
      if (req.url!.startsWith(ROUTE_PREFIX)) this.gateway.handle(req, res);
      else this.api.handle(req, res);
    });
    server.on('clientError', answerClientError);
    server.on('upgrade', (req, socket, head) => {
      if (req.url?.startsWith(ROUTE_PREFIX)) this.gateway.handleUpgrade(req, socket, head);
      else socket.destroy();
    });
    server.keepAliveTimeout = 65_000;
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(this.opts.port, this.opts.host, () => resolve());
    });
    this.server = server;
    const { port, address, family } = server.address() as AddressInfo;
    const host = family === 'IPv6' ? `[${address}]` : address === '0.0.0.0' ? '127.0.0.1' : address;
    this.port = port;
    this.url = `http://${host}:${port}`;
  }

  private spawnControlPlane(): void {
    const { dataDir } = this.opts;
    const child = spawn(process.execPath, [CONTROL_PLANE_MAIN, dataDir], {
      stdio: ['ignore', 'inherit', 'inherit'],
      env: { ...process.env, MOLT_CONTROL_PLANE_OPTIONS: JSON.stringify(this.opts.controlPlaneOptions) },
    });
    this.child = child;
    this.childStartedAt = Date.now();
    child.once('exit', (code, signal) => {
      if (this.child === child) this.child = undefined;
      this.api.setUp(false);
      if (this.closing) return;
      const how = signal ? `killed by ${signal}` : `exit code ${code}`;
      if (this.firstReady) {
        this.firstReady.reject(new Error(`the control plane exited before it was ready (${how})`));
        this.firstReady = undefined;
        return;
      }
      if (Date.now() - this.childStartedAt > HEALTHY_MS) this.restartDelay = RESTART_MIN_MS;
      const delay = this.restartDelay;
      this.restartDelay = Math.min(RESTART_MAX_MS, this.restartDelay * 2);
      this.say('error', 'control-plane.exited', `the control plane exited (${how}); apps keep serving; restarting it in ${delay} ms`);
      setTimeout(() => {
        if (!this.closing) this.spawnControlPlane();
      }, delay);
    });
  }

  /** One line of the data plane's own on stderr: text for a person, or a JSON line. */
  private say(level: 'info' | 'warn' | 'error', event: string, message: string): void {
    if (!this.log.isLevelEnabled(level)) return;
    if (this.opts.logFormat === 'text') process.stderr.write(`[${new Date().toISOString().slice(11, 19)}] ${level === 'info' ? '' : `${level.toUpperCase()} `}${message}\n`);
    else this.log[level]({ event }, message);
  }

  /**
   * Why no worker of the app will come, as the control plane sees it; while it is down, one may.
   * Requests that arrive while the question is out share its answer: one call per app at a time.
   */
  private explain(namespace: string, name: string): Promise<string | undefined> | undefined {
    const peer = this.peer;
    if (!peer) return undefined;
    const key = `${namespace}/${name}`;
    let asked = this.explaining.get(key);
    if (!asked) {
      let timer: NodeJS.Timeout | undefined;
      const late = new Promise<null>((r) => (timer = setTimeout(() => r(null), 2000)));
      asked = Promise.race([peer.call<string | null>('explain', { namespace, name }).catch(() => null), late]).then((why) => {
        clearTimeout(timer);
        this.explaining.delete(key);
        return why ?? undefined;
      });
      this.explaining.set(key, asked);
    }
    return asked;
  }

  private emit(event: string, data: unknown): void {
    if (this.peer?.open) this.peer.emit(event, data);
  }

  private worker(id: string): OwnedWorker {
    const w = this.workers.get(id);
    if (!w) throw new Error(`no worker ${id} on this data plane`);
    return w;
  }

  private writeLog(namespace: string, app: string, entry: LogLine): Promise<void> | undefined {
    const wait = this.logs.write(namespace, app, entry);
    this.emit('log', { namespace, app, entry });
    return wait;
  }

  /** What the control plane may ask of the data plane. */
  private handlers() {
    return {
      'cp.ready': (p: ControlPlaneReady) => {
        const first = this.firstReady !== undefined;
        this.restartDelay = this.firstReady ? RESTART_MIN_MS : this.restartDelay;
        this.api.setUp(true);
        this.firstReady?.resolve(p);
        this.firstReady = undefined;
        if (!first) this.say('info', 'control-plane.ready', `the control plane is back (pid ${this.child?.pid})`);
      },
      'dp.info': () => ({ startedAt: this.startedAt }),
      'workers.list': (): DataPlaneWorker[] =>
        [...this.workers.values()].map(({ proc, state, exit }) => ({
          id: proc.id,
          namespace: proc.launch.namespace,
          app: proc.launch.app,
          releaseId: proc.releaseId,
          pid: proc.pid ?? null,
          address: proc.address ?? null,
          state,
          exit,
          routed: this.routes.target(proc.id) !== undefined,
        })),
      'worker.start': async ({ launch }: { launch: WorkerLaunch }) => {
        const proc = new WorkerProcess(launch, ...this.callbacks(launch), this.home);
        const owned: OwnedWorker = { proc, state: 'starting' };
        this.workers.set(launch.id, owned);
        await proc.start(() => this.emit('worker.spawned', { id: launch.id, pid: proc.pid }));
        if (owned.state === 'starting') owned.state = 'running';
        return { pid: proc.pid, address: proc.address };
      },
      'worker.stop': ({ id, graceMs }: { id: string; graceMs: number }) => {
        const w = this.workers.get(id);
        return w ? w.proc.stop(graceMs) : { code: null, signal: null, expected: true };
      },
      'worker.forget': ({ id }: { id: string }) => {
        if (this.workers.get(id)?.state === 'exited') this.workers.delete(id);
      },
      'worker.send': ({ id, msg }: { id: string; msg: ServerToWorker }) => this.workers.get(id)?.proc.send(msg),
      'worker.ready': async ({ id }: { id: string }) => {
        const { proc } = this.worker(id);
        const ok = await proc.ready();
        return { ok, lastReadiness: proc.lastReadiness };
      },
      'worker.upgrade': async ({ id, req, timeoutMs }: { id: string; req: Omit<UpgradeRequest, 'type' | 'id' | 'releaseDir'>; timeoutMs: number }) => {
        const w = this.worker(id);
        const result = await w.proc.upgrade(req, timeoutMs);
        if (result.ok) w.proc.upgraded(req.toRelease);
        return result;
      },
      'route.add': ({ namespace, app, workerId, address }: { namespace: string; app: string; workerId: string; address: WorkerAddress }) => {
        if (!this.routes.target(workerId)) this.routes.addWorker(namespace, app, workerId, address);
      },
      'route.drain': ({ workerId }: { workerId: string }) => this.routes.drainWorker(workerId),
      'route.remove': ({ workerId }: { workerId: string }) => this.routes.removeWorker(workerId),
      'route.stats': ({ workerIds }: { workerIds: string[] }) => {
        const out: Record<string, TargetStats> = {};
        for (const id of workerIds) {
          const t = this.routes.target(id);
          if (t) out[id] = { outstanding: t.outstanding, serverErrors: t.serverErrors };
        }
        return out;
      },
      'apps.sync': ({ apps }: { apps: { namespace: string; name: string; public: boolean; paused: boolean }[] }) => {
        const keep = new Set(apps.map((a) => `${a.namespace}/${a.name}`));
        for (const a of this.routes.list()) if (!keep.has(`${a.namespace}/${a.name}`)) this.routes.deleteApp(a.namespace, a.name);
        for (const a of apps) this.setApp(a);
      },
      'app.set': (a: { namespace: string; name: string; public: boolean; paused: boolean }) => this.setApp(a),
      'app.delete': ({ namespace, name }: { namespace: string; name: string }) => this.routes.deleteApp(namespace, name),
      'tokens.set': ({ rows }: { rows: TokenRow[] }) => {
        this.tokens.clear();
        for (const r of rows) this.tokens.set(r.hash, r);
        this.verifier.invalidate();
      },
      'log.write': ({ namespace, app, entry }: { namespace: string; app: string; entry: LogLine }) => void this.writeLog(namespace, app, entry),
      'logs.flush': () => this.logs.flush(),
    };
  }

  private setApp(a: { namespace: string; name: string; public: boolean; paused: boolean }): void {
    const routes = this.routes.ensureApp(a.namespace, a.name);
    routes.public = a.public;
    routes.paused = a.paused;
  }

  /**
   * A clean stop: the control plane stops first (it drains and stops every worker through this
   * data plane), then the port closes and whatever worker is left is stopped. With --keep-workers
   * the workers are let go instead, running, for the next data plane to adopt.
   */
  async close(): Promise<void> {
    this.closing = true;
    const child = this.child;
    if (child && child.exitCode === null && child.signalCode === null) {
      const gone = new Promise<void>((r) => child.once('exit', () => r()));
      child.kill('SIGTERM');
      const timer = setTimeout(() => child.kill('SIGKILL'), 60_000);
      await gone;
      clearTimeout(timer);
    }
    if (this.opts.keepWorkers) for (const w of this.workers.values()) w.proc.release();
    else await Promise.all([...this.workers.values()].map((w) => w.proc.stop(5000)));
    if (this.server) {
      const closed = new Promise<void>((r) => this.server!.close(() => r()));
      this.server.closeAllConnections();
      await closed;
    }
    this.rpcServer?.close();
    this.peer?.close();
    rmSync(join(this.opts.dataDir, DATA_PLANE_SOCKET), { force: true });
  }
}

function safeList(dir: string): string[] {
  try {
    return readdirSync(dir);
  } catch {
    return [];
  }
}
