import { type ChildProcess, spawn } from 'node:child_process';
import { closeSync, rmSync, writeFileSync, writeSync } from 'node:fs';
import { createServer as createNetServer, type AddressInfo, Server as NetServer } from 'node:net';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { pino, type Logger } from 'pino';
import { TokenVerifier } from '../control-plane/auth.js';
import { LogHub, type LogLine } from '../control-plane/log-hub.js';
import { type WorkerExit, type WorkerHome, type WorkerLaunch, WorkerProcess } from '../control-plane/worker-process.js';
import { Front } from '../gateway/front.js';
import { Gateway } from '../gateway/gateway.js';
import { Sessions } from '../gateway/sessions.js';
import type { TlsFiles } from '../gateway/tls.js';
import { RouteTable } from '../gateway/route-table.js';
import type { WorkerAddress } from '../gateway/target.js';
import type { ServerToWorker, UpgradeRequest } from '../runtime/control-messages.js';
import type { TokenRow } from '../store/types.js';
import { ApiProxy } from './api-proxy.js';
import { CONTROL_PLANE_SOCKET, DATA_PLANE_SOCKET, type DataPlaneWorker, type GatewayApp, TAKEOVER_SOCKET, type TakeoverAnswer, type TakeoverRequest, type TargetStats } from './protocol.js';
import { RpcPeer } from './rpc.js';
import { listenMetrics, Metrics, parseListen } from './metrics.js';
import type { Server as HttpServer } from 'node:http';
import { ControlChannel } from '../runtime/control-channel.js';
import { runtimeId } from '../runtime/runtime-id.js';
import type { Duplex } from 'node:stream';
import { stillRuns, WorkerRecords } from './worker-records.js';
import { listDir } from '../list-dir.js';
import { waitAtMost } from '../wait.js';

/** Where the serving data plane's pid is written (systemd's PIDFile=, see docs/architecture.md). */
const MAIN_PID_FILE = 'server.pid.main';
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
  /** HTTPS: the default certificate and key, and certificates chosen by SNI (PEM files). */
  tls?: TlsFiles;
  /** The server's domains: `<app>.<namespace>.<D>` routes to the app at its root. */
  domains?: string[];
  /** What the control plane is started with (its own options, as JSON). */
  controlPlaneOptions: object;
  /** API requests that may wait while the control plane is down, and for how long. */
  apiQueue?: number;
  apiWaitMs?: number;
  /** How long a worker whose data plane is gone keeps serving, waiting to be adopted, before it stops. */
  adoptGraceMs?: number;
  /** A clean stop leaves the workers running, for the next data plane to adopt. */
  keepWorkers?: boolean;
  /** Listen on this inherited fd (a takeover: the old data plane's listening socket) rather than host and port. */
  listenFd?: number;
  /** Where to say, once listening, that a takeover succeeded (an fd the old data plane reads). */
  takeoverStatusFd?: number;
  /** How long an old data plane finishes in-flight requests after a takeover before it cuts the rest. */
  takeoverDrainMs?: number;
  /** How often the dashboard's figures are read (default 5 s); they are kept for an hour. */
  metricsIntervalMs?: number;
  /** `host:port` to serve `/metrics` on for Prometheus, without a token (only what is reachable there may read it). */
  metricsListen?: string;
  /** The data dir's lock: let go of for a takeover's new data plane, taken again if it fails. */
  lock?: { release(): void; retake(): void };
  /** Called when this data plane has handed over to a new one and drained: the process should exit. */
  onRetired?: () => void;
}

/** What the control plane says when it is ready (once per start of it). */
export interface ControlPlaneReady {
  isolation: string;
  adminToken?: string;
  /** Set while the control plane stands by: who leads instead (on a database several servers share). */
  standby?: string;
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
  private readonly tokensById = new Map<string, TokenRow>();
  private readonly verifier: TokenVerifier;
  private readonly gateway: Gateway;
  private readonly api: ApiProxy;
  private readonly workers = new Map<string, WorkerProcess>();
  /** Workers swapping modules now, at a control plane's request. */
  private readonly upgrading = new Set<string>();
  /** How each worker's last swap ended (see DataPlaneWorker.lastUpgrade). */
  private readonly lastUpgrades = new Map<string, NonNullable<DataPlaneWorker['lastUpgrade']>>();
  /** Workers being drained and stopped, at a control plane's request: a second ask waits on the same stop. */
  private readonly retiring = new Map<string, Promise<WorkerExit>>();
  private readonly home: WorkerHome;
  /** Questions to the control plane under way, per app (see explain). */
  private readonly explaining = new Map<string, Promise<string | undefined>>();
  private readonly log: Logger;
  private readonly metrics: Metrics;
  private metricsServer?: HttpServer;
  private front?: Front;
  private rpcServer?: NetServer;
  private peer?: RpcPeer;
  private child?: ChildProcess;
  private childStartedAt = 0;
  private restartDelay = RESTART_MIN_MS;
  private closing = false;
  /** A takeover under way (one at a time), or done. */
  private takeover?: 'running' | 'retiring';
  private takeoverServer?: NetServer;
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
      domains: opts.domains,
      onUpstreamError: (info) => (this.opts.logFormat === 'text' ? this.say('warn', 'gateway.upstream-error', `${info.ns}/${info.app}: ${info.status} ${info.message} (request ${info.requestId})`) : this.log.warn(info, 'gateway upstream error')),
    });
    this.api = new ApiProxy({ socketPath: join(opts.dataDir, CONTROL_PLANE_SOCKET), maxWaiting: opts.apiQueue ?? 256, waitMs: opts.apiWaitMs ?? 15_000 });
    if (opts.metricsListen) parseListen(opts.metricsListen);
    this.metrics = new Metrics(
      () => this.routes.list(),
      () => [...this.workers.values()].filter((w) => w.phase !== 'exited').map((w) => ({ id: w.id, namespace: w.launch.namespace, app: w.launch.app, pid: w.pid })),
      opts.metricsIntervalMs,
    );
  }

  /**
   * Starts the channel for the control plane, the control plane itself, and, once it is ready,
   * the listening port. Rejects when the first control plane fails to start (its error is printed).
   */
  async start(): Promise<ControlPlaneReady> {
    await this.adoptWorkers();
    this.metrics.start();
    this.listenMetrics();
    await this.listenRpc();
    const ready = new Promise<ControlPlaneReady>((resolve, reject) => (this.firstReady = { resolve, reject }));
    this.spawnControlPlane();
    const info = await ready;
    await this.listen();
    this.emit('dp.listening', { url: this.url });
    await this.listenTakeover();
    // The pid that serves, for a service manager to follow across a takeover (written before the old one exits).
    writeFileSync(join(this.opts.dataDir, MAIN_PID_FILE), `${process.pid}\n`);
    if (this.opts.takeoverStatusFd !== undefined) {
      // The old data plane waits for this line: from now on this one serves the port too.
      writeSync(this.opts.takeoverStatusFd, `${JSON.stringify({ pid: process.pid })}\n`);
      closeSync(this.opts.takeoverStatusFd);
    }
    return info;
  }

  /**
   * Takes a worker out of service: the gateway sends it nothing new and its requests in flight get
   * `drainMs` to finish; then it is told to close its idle connections, its route goes, and it is
   * stopped (SIGTERM, SIGKILL after `graceMs`). The data plane carries this through on its own, so a
   * control plane that dies meanwhile (or the next one, asking again) never cuts a drain short.
   */
  private retireWorker(id: string, drainMs: number, graceMs: number): Promise<WorkerExit> {
    const proc = this.workers.get(id);
    if (!proc) return Promise.resolve({ code: null, signal: null, expected: true });
    let exit = this.retiring.get(id);
    if (!exit) {
      exit = (async () => {
        await waitAtMost(this.routes.drainWorker(id), drainMs);
        proc.send({ type: 'drain' });
        this.routes.removeWorker(id);
        return proc.stop(graceMs);
      })().finally(() => this.retiring.delete(id));
      this.retiring.set(id, exit);
    }
    return exit;
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
          this.workers.set(proc.id, proc);
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
          this.workers.set(record.launch.id, WorkerProcess.lost(record.launch, this.home));
        }
      }),
    );
    if (records.length > 0) {
      const adopted = [...this.workers.values()].filter((w) => w.phase !== 'exited').length;
      this.say('info', 'workers.adopted', `adopted ${adopted} running worker${adopted === 1 ? '' : 's'} of the previous molt server${records.length > adopted ? `; ${records.length - adopted} had exited` : ''}`);
    }
    // Run directories of workers that are not running any more.
    const runRoot = join(this.opts.dataDir, 'run');
    for (const id of listDir(runRoot)) if ((this.workers.get(id)?.phase ?? 'exited') === 'exited') rmSync(join(runRoot, id), { recursive: true, force: true });
  }

  /** What a worker's process reports: its output, its exit, and its end. */
  private callbacks(launch: WorkerLaunch): [(line: LogLine) => Promise<void> | undefined, (exit: WorkerExit) => void, () => void] {
    return [
      (line) => this.writeLog(launch.namespace, launch.app, line),
      (exit) => {
        this.routes.removeWorker(launch.id);
        this.emit('worker.exit', { id: launch.id, exit });
      },
      () => {
        void this.logs.close(launch.id);
        rmSync(launch.runDir, { recursive: true, force: true });
        // Kept, exited, until a control plane has recorded how it ended (`worker.forget`).
        if (this.workers.size > MAX_EXITED_KEPT) for (const [id, w] of this.workers) if (w.phase === 'exited' && id !== launch.id) this.workers.delete(id);
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
    // App requests are parsed and answered on the front's own connections; the API through node:http.
    const front = new Front({
      gateway: this.gateway,
      api: (req, res) => this.api.handle(req, res),
      tls: this.opts.tls,
      maxHeaderSize: 16 * 1024,
      keepAliveTimeoutMs: 65_000,
      headersTimeoutMs: 60_000,
      requestTimeoutMs: 300_000,
    });
    const server = front.server;
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      if (this.opts.listenFd !== undefined) server.listen({ fd: this.opts.listenFd }, () => resolve());
      else server.listen(this.opts.port, this.opts.host, () => resolve());
    });
    this.front = front;
    const { port, address, family } = server.address() as AddressInfo;
    const host = family === 'IPv6' ? `[${address}]` : address === '0.0.0.0' ? '127.0.0.1' : address;
    this.port = port;
    this.url = `${this.opts.tls ? 'https' : 'http'}://${host}:${port}`;
  }

  /**
   * `<data-dir>/takeover.sock`: where `molt server --takeover` asks this data plane to hand over
   * to a new one (possibly a newer molt) with the command line it gives. Only molt's user reaches it
   * (the data dir is 0700). It answers with lines of progress, then `done` or an error.
   */
  private async listenTakeover(): Promise<void> {
    const path = join(this.opts.dataDir, TAKEOVER_SOCKET);
    rmSync(path, { force: true });
    this.takeoverServer = createNetServer((socket) => {
      let asked = false;
      const channel: ControlChannel<TakeoverRequest, TakeoverAnswer> = new ControlChannel<TakeoverRequest, TakeoverAnswer>(
        socket,
        (req) => {
          if (asked) return;
          asked = true;
          if (!Array.isArray(req?.argv) || req.argv.length === 0 || !req.argv.every((a) => typeof a === 'string')) {
            channel.send({ error: 'bad takeover request: argv must be a list of strings' });
            return channel.close();
          }
          void this.handOver(req, (line) => channel.send({ progress: line })).then(
            (pid) => channel.send({ done: true, pid }),
            (err: Error) => channel.send({ error: err.message }),
          ).finally(() => socket.end());
        },
        () => {},
        1024 * 1024,
      );
    });
    await new Promise<void>((resolve, reject) => {
      this.takeoverServer!.once('error', reject);
      this.takeoverServer!.listen(path, () => resolve());
    });
  }

  /**
   * Hands the port and the workers to a new data plane, as nginx's binary upgrade does: the control
   * plane stops (leaving the workers be), the workers are let go of, the data dir's lock is released,
   * and the new data plane is started with the listening socket at its fd 3. It takes the lock, adopts
   * the workers, starts its control plane and listens; then this one stops accepting, tells every
   * client to reconnect (`Connection: close`), finishes its in-flight requests (streams until the
   * drain deadline) and exits. If the new one fails, this one takes everything back. Resolves with
   * the new data plane's pid once it serves.
   */
  private async handOver(req: TakeoverRequest, progress: (line: string) => void): Promise<number> {
    if (this.takeover) throw new Error('a takeover of this server is already under way');
    if (!this.front || !this.opts.lock) throw new Error('this server cannot be taken over (it is not listening yet)');
    this.takeover = 'running';
    const listenFd = (this.front.server as unknown as { _handle?: { fd?: number } })._handle?.fd;
    if (typeof listenFd !== 'number' || listenFd < 0) {
      this.takeover = undefined;
      throw new Error('the listening socket has no file descriptor to hand over');
    }
    progress(`stopping the control plane (pid ${this.child?.pid}); apps keep serving`);
    await this.stopControlPlane('SIGUSR2');
    for (const w of this.workers.values()) w.release();
    await this.logs.flush();
    // Closed before the new one starts: closing a Unix socket's server removes its path, which the new one listens on.
    this.rpcServer?.close();
    this.takeoverServer?.close();
    this.opts.lock.release();
    progress(`starting the new data plane: ${req.argv.join(' ')}`);
    const child = spawn(req.argv[0]!, req.argv.slice(1), {
      cwd: req.cwd,
      env: { ...(req.env ?? process.env), MOLT_TAKEOVER_FD: '3', MOLT_TAKEOVER_STATUS_FD: '4' },
      stdio: ['ignore', 'inherit', 'inherit', listenFd, 'pipe'],
      detached: true,
    });
    let said: (m: { pid: number } | Error) => void = () => {};
    // The new data plane's one line on fd 4 (see start).
    const status = new ControlChannel<{ pid: number }, never>(child.stdio[4] as Duplex, (m) => said(m), (reason) => reason && said(new Error(`the new data plane said something other than ready (${reason})`)), 4096);
    const ready = await new Promise<{ pid: number } | Error>((resolve) => {
      const timer = setTimeout(() => resolve(new Error('the new data plane was not ready within 120 s')), 120_000);
      said = (m) => {
        clearTimeout(timer);
        resolve(m);
      };
      child.once('error', (err) => said(new Error(`the new data plane could not start: ${err.message}`)));
      child.once('exit', (code, signal) => said(new Error(`the new data plane exited before it was ready (${signal ? `killed by ${signal}` : `exit code ${code}`}); its error is in this server's output`)));
    });
    status.close();
    if (ready instanceof Error) {
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
      progress(`${ready.message}; this server takes everything back`);
      await this.takeBack();
      this.takeover = undefined;
      throw new Error(`takeover failed: ${ready.message}; the old server (pid ${process.pid}) serves on`);
    }
    child.unref();
    progress(`the new data plane (pid ${ready.pid}) serves; this one (pid ${process.pid}) stops accepting and drains`);
    void this.retire();
    return ready.pid;
  }

  /** After a failed takeover: the lock, the workers and a control plane again. */
  private async takeBack(): Promise<void> {
    this.opts.lock!.retake();
    this.workers.clear();
    await this.adoptWorkers();
    await this.listenRpc();
    await this.listenTakeover();
    this.closing = false;
    const ready = new Promise<ControlPlaneReady>((resolve, reject) => (this.firstReady = { resolve, reject }));
    this.spawnControlPlane();
    await ready;
  }

  /**
   * Stops accepting (the new data plane accepts on the same socket), answers what comes on open
   * connections with `Connection: close`, waits for in-flight requests up to the drain deadline,
   * then closes what is left and exits.
   */
  /**
   * `--metrics-listen`: a data plane that takes over from another finds the address still held by
   * it until it retires, so binding is tried again every second.
   */
  private listenMetrics(first = true): void {
    if (!this.opts.metricsListen || this.closing) return;
    listenMetrics(this.opts.metricsListen, () => this.metrics.totals()).then(
      (server) => (this.closing ? server.close() : (this.metricsServer = server)),
      (err: Error) => {
        if (first) this.say('warn', 'metrics.listen', `${err.message}; trying again every second`);
        setTimeout(() => this.listenMetrics(false), 1000).unref();
      },
    );
  }

  private async retire(): Promise<void> {
    this.takeover = 'retiring';
    this.metricsServer?.close();
    const front = this.front!;
    front.retiring = true;
    // API requests still coming on open connections (and those that waited during the handover) go
    // to the new control plane: it listens on the same socket path.
    this.api.setUp(true);
    const server = front.server;
    // Stop accepting, but leave open connections be.
    server.close();
    // Each answer from now on closes its connection. A connection still idle after a second is one
    // whose client moved on: it is closed; one with a request in flight (a stream) is waited for.
    const deadline = Date.now() + (this.opts.takeoverDrainMs ?? 30_000);
    const idleAfter = Date.now() + 1000;
    const connections = () => new Promise<number>((r) => server.getConnections((_err, n) => r(n ?? 0)));
    while (Date.now() < deadline && (await connections()) > 0) {
      if (Date.now() > idleAfter) front.closeIdleConnections();
      await new Promise((r) => setTimeout(r, 50));
    }
    const cut = await connections();
    front.closeAllConnections();
    await this.logs.flush();
    this.say('info', 'takeover.retired', `handed over to the new data plane; ${cut} connection(s) cut at the drain deadline`);
    this.opts.onRetired?.();
  }

  /** Stops the control plane (SIGTERM: a clean stop; SIGUSR2: it stops leaving the workers be). */
  private async stopControlPlane(signal: NodeJS.Signals): Promise<void> {
    this.closing = true;
    const child = this.child;
    if (!child || child.exitCode !== null || child.signalCode !== null) return;
    const gone = new Promise<void>((r) => child.once('exit', () => r()));
    child.kill(signal);
    const timer = setTimeout(() => child.kill('SIGKILL'), 60_000);
    await gone;
    clearTimeout(timer);
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

  private worker(id: string): WorkerProcess {
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
        const wasStandby = this.api.standby !== undefined;
        this.restartDelay = this.firstReady ? RESTART_MIN_MS : this.restartDelay;
        this.api.standby = p.standby;
        this.api.setUp(true);
        this.firstReady?.resolve(p);
        this.firstReady = undefined;
        if (p.standby) this.say('warn', 'control-plane.standby', `standing by: ${p.standby}; this server takes the lead when it lapses`);
        else if (wasStandby) this.say('info', 'control-plane.leads', `this server's control plane leads now (pid ${this.child?.pid})`);
        else if (!first) this.say('info', 'control-plane.ready', `the control plane is back (pid ${this.child?.pid})`);
      },
      'dp.info': () => ({ startedAt: this.startedAt, runtime: runtimeId(), url: this.url }),
      'workers.list': (): DataPlaneWorker[] =>
        [...this.workers.values()].map((proc) => ({
          id: proc.id,
          namespace: proc.launch.namespace,
          app: proc.launch.app,
          releaseId: proc.releaseId,
          runtime: proc.runtime,
          pid: proc.pid ?? null,
          address: proc.address ?? null,
          state: proc.phase,
          exit: proc.exit,
          routed: this.routes.target(proc.id) !== undefined,
          upgrading: this.upgrading.has(proc.id),
          lastUpgrade: this.lastUpgrades.get(proc.id),
        })),
      'worker.start': async ({ launch }: { launch: WorkerLaunch }) => {
        const proc = new WorkerProcess(launch, ...this.callbacks(launch), this.home);
        this.workers.set(launch.id, proc);
        await proc.start(() => this.emit('worker.spawned', { id: launch.id, pid: proc.pid }));
        return { pid: proc.pid, address: proc.address };
      },
      'worker.stop': ({ id, graceMs }: { id: string; graceMs: number }) => {
        const w = this.workers.get(id);
        return w ? w.stop(graceMs) : { code: null, signal: null, expected: true };
      },
      'worker.retire': ({ id, drainMs, graceMs }: { id: string; drainMs: number; graceMs: number }) => this.retireWorker(id, drainMs, graceMs),
      'worker.forget': ({ id }: { id: string }) => {
        if (this.workers.get(id)?.phase === 'exited') this.workers.delete(id);
      },
      'worker.send': ({ id, msg }: { id: string; msg: ServerToWorker }) => this.workers.get(id)?.send(msg),
      'worker.ready': async ({ id }: { id: string }) => {
        const proc = this.worker(id);
        const ok = await proc.ready();
        return { ok, lastReadiness: proc.lastReadiness };
      },
      'worker.upgrade': async ({ id, req, timeoutMs }: { id: string; req: Omit<UpgradeRequest, 'type' | 'id' | 'releaseDir'>; timeoutMs: number }) => {
        const w = this.worker(id);
        // Carried to its end even if the control plane that asked dies meanwhile: the next one reads the release it runs.
        this.upgrading.add(id);
        try {
          const result = await w.upgrade(req, timeoutMs);
          if (result.ok) w.upgraded(req.toRelease);
          this.lastUpgrades.set(id, result.ok ? { toRelease: req.toRelease, ok: true } : { toRelease: req.toRelease, ok: false, error: `${result.phase} failed${result.module ? ` in ${result.module}` : ''}: ${result.error}` });
          return result;
        } finally {
          this.upgrading.delete(id);
        }
      },
      'route.add': ({ namespace, app, workerId, address }: { namespace: string; app: string; workerId: string; address: WorkerAddress }) => {
        if (!this.routes.target(workerId)) this.routes.addWorker(namespace, app, workerId, address);
      },
      'route.remove': ({ workerId }: { workerId: string }) => this.routes.removeWorker(workerId),
      'route.stats': ({ workerIds }: { workerIds: string[] }) => {
        const out: Record<string, TargetStats> = {};
        for (const id of workerIds) {
          const t = this.routes.target(id);
          if (t) out[id] = { outstanding: t.outstanding, serverErrors: t.serverErrors };
        }
        return out;
      },
      'metrics.points': ({ namespace, app, since }: { namespace: string; app: string; since?: number }) => ({ intervalMs: this.metrics.intervalMs, points: this.metrics.pointsOf(namespace, app, since) }),
      'metrics.totals': () => this.metrics.totals(),
      'metrics.latest': ({ namespace }: { namespace: string }) => this.metrics.latestOf(namespace),
      'apps.sync': ({ apps }: { apps: GatewayApp[] }) => {
        const keep = new Set(apps.map((a) => `${a.namespace}/${a.name}`));
        for (const a of this.routes.list()) if (!keep.has(`${a.namespace}/${a.name}`)) this.routes.deleteApp(a.namespace, a.name);
        for (const a of apps) this.setApp(a);
      },
      'app.set': (a: GatewayApp) => this.setApp(a),
      'app.delete': ({ namespace, name }: { namespace: string; name: string }) => this.routes.deleteApp(namespace, name),
      'tokens.set': ({ rows, sessions }: { rows: TokenRow[]; sessions: { key: string; ttlMs: number } }) => {
        this.tokens.clear();
        this.tokensById.clear();
        for (const r of rows) {
          this.tokens.set(r.hash, r);
          this.tokensById.set(r.id, r);
        }
        this.verifier.invalidate();
        this.gateway.sessions = new Sessions({ key: Buffer.from(sessions.key, 'base64'), ttlMs: sessions.ttlMs }, (id) => this.tokensById.get(id));
      },
      'log.write': ({ namespace, app, entry }: { namespace: string; app: string; entry: LogLine }) => void this.writeLog(namespace, app, entry),
      'logs.flush': () => this.logs.flush(),
    };
  }

  private setApp(a: GatewayApp): void {
    const routes = this.routes.ensureApp(a.namespace, a.name);
    routes.public = a.public;
    routes.paused = a.paused;
    this.routes.setDomains(routes, a.domains);
  }

  /**
   * A clean stop: the control plane stops first (it drains and stops every worker through this
   * data plane), then the port closes and whatever worker is left is stopped. With --keep-workers
   * the workers are let go instead, running, for the next data plane to adopt.
   */
  async close(how: { keepWorkers?: boolean } = {}): Promise<void> {
    const keep = how.keepWorkers ?? this.opts.keepWorkers;
    this.metrics.stop();
    this.metricsServer?.close();
    await this.stopControlPlane(keep ? 'SIGUSR2' : 'SIGTERM');
    if (keep) for (const w of this.workers.values()) w.release();
    else await Promise.all([...this.workers.values()].map((w) => w.stop(5000)));
    await this.front?.close();
    this.rpcServer?.close();
    this.takeoverServer?.close();
    this.peer?.close();
    rmSync(join(this.opts.dataDir, DATA_PLANE_SOCKET), { force: true });
  }
}
