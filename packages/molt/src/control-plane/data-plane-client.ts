import { connect, type Socket } from 'node:net';
import type { WorkerAddress } from '../gateway/target.js';
import type { ServerToWorker, UpgradeRequest, UpgradeResult } from '../runtime/control-messages.js';
import type { TokenRow } from '../store/types.js';
import { PeerGone, RemoteError, RpcPeer } from '../data-plane/rpc.js';
import type { DataPlaneWorker, GatewayApp, TargetStats } from '../data-plane/protocol.js';
import type { MetricPoint, MetricTotals } from '../data-plane/metrics.js';
import { LogHub, type LogLine } from './log-hub.js';
import { type WorkerExit, type WorkerLaunch, WorkerStartError } from './worker-process.js';

/**
 * The control plane's end of the local channel to the data plane: the process that holds the
 * port, routes requests and owns the workers. Everything the control plane decides about workers
 * and routes goes through here.
 */
export class DataPlaneClient {
  private readonly workers = new Map<string, RemoteWorker>();
  /** Answers the data plane's question: why will no worker of this app come? (undefined: one is on its way). */
  explain: (namespace: string, name: string) => string | undefined = () => undefined;

  private constructor(
    readonly peer: RpcPeer,
    readonly logs: RemoteLogHub,
  ) {}

  /** Connects to the data plane's socket (retrying while it is not there yet). */
  static async connect(socketPath: string, logs: RemoteLogHub, timeoutMs = 10_000): Promise<DataPlaneClient> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      try {
        const socket = await new Promise<Socket>((resolve, reject) => {
          const s = connect(socketPath);
          s.once('connect', () => resolve(s));
          s.once('error', reject);
        });
        let client!: DataPlaneClient;
        const peer = new RpcPeer(socket, { explain: (p: { namespace: string; name: string }) => client.explain(p.namespace, p.name) ?? null }, (event, data) => client.onEvent(event, data));
        client = new DataPlaneClient(peer, logs);
        logs.client = client;
        return client;
      } catch (err) {
        if (Date.now() > deadline) throw new Error(`cannot reach the data plane at ${socketPath}: ${(err as Error).message}`);
        await new Promise((r) => setTimeout(r, 50));
      }
    }
  }

  call<T>(method: string, params: unknown = {}): Promise<T> {
    return this.peer.call<T>(method, params);
  }

  /** Called when the data plane starts listening on its port (on a first start, after the control plane's first ready). */
  onListening?: (url: string) => void;

  private onEvent(event: string, data: unknown): void {
    if (event === 'dp.listening') {
      this.onListening?.((data as { url: string }).url);
      return;
    }
    if (event === 'log') {
      const { namespace, app, entry } = data as { namespace: string; app: string; entry: LogLine };
      this.logs.publish(namespace, app, entry);
      return;
    }
    const { id } = data as { id: string };
    const w = this.workers.get(id);
    if (!w) return;
    if (event === 'worker.spawned') w.spawned((data as { pid: number }).pid);
    else if (event === 'worker.exit') w.exited((data as { exit: WorkerExit }).exit);
    else if (event === 'worker.closed') {
      this.workers.delete(id);
      w.closed();
      this.forgetWorker(id);
    }
  }

  /** A handle on a worker the data plane will start (`start`) or already runs (`adopt`). */
  worker(id: string, readinessPath: string, onExit: (e: WorkerExit) => void, onClosed: () => void): RemoteWorker {
    const w = new RemoteWorker(this, id, readinessPath, onExit, onClosed);
    this.workers.set(id, w);
    return w;
  }

  listWorkers(): Promise<DataPlaneWorker[]> {
    return this.call<DataPlaneWorker[]>('workers.list');
  }

  /** When the data plane started. */
  info(): Promise<{ startedAt: string; runtime: string; url: string }> {
    return this.call('dp.info');
  }

  /** Stops a worker by id (SIGTERM, SIGKILL after `graceMs`); how it exited. */
  stopWorker(id: string, graceMs: number): Promise<WorkerExit> {
    return this.call<WorkerExit>('worker.stop', { id, graceMs });
  }

  /**
   * Drains a worker (nothing new; `drainMs` for its requests in flight), then stops it (SIGKILL after
   * `graceMs`); how it exited. The data plane finishes it even if this control plane dies.
   */
  retireWorker(id: string, drainMs: number, graceMs: number): Promise<WorkerExit> {
    return this.call<WorkerExit>('worker.retire', { id, drainMs, graceMs });
  }

  /** How a worker ended is recorded: the data plane may drop it. */
  forgetWorker(id: string): void {
    this.call('worker.forget', { id }).catch(() => {});
  }

  /** Starts sending the app's requests to a worker that passed readiness. */
  addRoute(namespace: string, app: string, workerId: string, address: WorkerAddress): Promise<void> {
    return this.call('route.add', { namespace, app, workerId, address });
  }

  removeRoute(workerId: string): void {
    this.call('route.remove', { workerId }).catch(() => {});
  }

  /** Outstanding requests and 5xx answers per worker, as the gateway counts them. */
  targetStats(workerIds: string[]): Promise<Record<string, TargetStats>> {
    return this.call('route.stats', { workerIds });
  }

  /** An app's figures after `since` (ms since the epoch): requests, errors, latency, workers' CPU and memory. */
  metricPoints(namespace: string, app: string, since?: number): Promise<{ intervalMs: number; points: MetricPoint[] }> {
    return this.call('metrics.points', { namespace, app, since });
  }

  /** The last figures of each app of a namespace, by app name. */
  latestMetrics(namespace: string): Promise<Record<string, MetricPoint>> {
    return this.call('metrics.latest', { namespace });
  }

  /** Every app's and worker's totals, for Prometheus. */
  metricTotals(): Promise<MetricTotals> {
    return this.call('metrics.totals');
  }

  /** What the gateway needs of every app (public, paused); apps not listed are dropped. */
  syncApps(apps: GatewayApp[]): Promise<void> {
    return this.call('apps.sync', { apps });
  }

  setApp(app: GatewayApp): Promise<void> {
    return this.call('app.set', app);
  }

  deleteApp(namespace: string, name: string): Promise<void> {
    return this.call('app.delete', { namespace, name });
  }

  /** The token rows the gateway checks requests against (hashes only). */
  /** The token rows requests are checked against, and the key and lifetime of browser sessions made from them. */
  setTokens(rows: TokenRow[], sessions: { key: string; ttlMs: number }): Promise<void> {
    return this.call('tokens.set', { rows, sessions });
  }
}

/**
 * A worker process as the control plane sees it: the data plane runs it; this forwards what the
 * supervisor asks (start, readiness, upgrade, drain, stop) and reports what the data plane says.
 */
export class RemoteWorker {
  pid?: number;
  address?: WorkerAddress;
  lastReadiness = 'no answer yet';
  private exit?: WorkerExit;
  private exitWaiters: ((e: WorkerExit) => void)[] = [];
  private onSpawned?: () => void;

  constructor(
    private readonly dp: DataPlaneClient,
    readonly id: string,
    /** What readiness checks ask it for (messages name it). */
    readonly readinessPath: string,
    private readonly onExit: (e: WorkerExit) => void,
    private readonly onClosed: () => void,
  ) {}

  /** Has the data plane spawn it; `onSpawned` fires when it is up. Resolves once it passes readiness. */
  async start(launch: WorkerLaunch, onSpawned: () => void): Promise<void> {
    this.onSpawned = onSpawned;
    try {
      const r = await this.dp.call<{ pid: number; address: WorkerAddress }>('worker.start', { launch });
      this.pid = r.pid;
      this.address = r.address;
    } catch (err) {
      if (err instanceof RemoteError && err.remoteName === 'WorkerStartError') throw new WorkerStartError(err.message);
      throw err;
    }
  }

  /** What the data plane reports of a worker it already runs (a control plane that restarted). */
  adopt(info: DataPlaneWorker): void {
    this.pid = info.pid ?? undefined;
    this.address = info.address ?? undefined;
  }

  spawned(pid: number): void {
    this.pid = pid;
    this.onSpawned?.();
  }

  exited(exit: WorkerExit): void {
    if (this.exit) return;
    this.exit = exit;
    for (const w of this.exitWaiters.splice(0)) w(exit);
    this.onExit(exit);
  }

  closed(): void {
    this.onClosed();
  }

  send(msg: ServerToWorker): void {
    this.dp.call('worker.send', { id: this.id, msg }).catch(() => {});
  }

  async ready(): Promise<boolean> {
    const r = await this.dp.call<{ ok: boolean; lastReadiness: string }>('worker.ready', { id: this.id }).catch((err: Error) => ({ ok: false, lastReadiness: err.message }));
    this.lastReadiness = r.lastReadiness;
    return r.ok;
  }

  upgrade(req: Omit<UpgradeRequest, 'type' | 'id' | 'releaseDir'>, timeoutMs: number): Promise<UpgradeResult> {
    return this.dp.call<UpgradeResult>('worker.upgrade', { id: this.id, req, timeoutMs }).catch((err: Error) => ({ ok: false as const, phase: 'load' as const, error: err.message }));
  }

  waitExit(): Promise<WorkerExit> {
    if (this.exit) return Promise.resolve(this.exit);
    return new Promise((r) => this.exitWaiters.push(r));
  }

  /** SIGTERM, then SIGKILL after `graceMs`; resolves when the process is gone. */
  stop(graceMs: number): Promise<WorkerExit> {
    return this.ended(this.dp.stopWorker(this.id, graceMs));
  }

  /** Drained (`drainMs` for its requests in flight), then stopped as `stop` does. */
  retire(drainMs: number, graceMs: number): Promise<WorkerExit> {
    return this.ended(this.dp.retireWorker(this.id, drainMs, graceMs));
  }

  private async ended(stopped: Promise<WorkerExit>): Promise<WorkerExit> {
    try {
      const exit = await stopped;
      this.exited(exit);
      return exit;
    } catch (err) {
      if (err instanceof PeerGone) return { code: null, signal: null, expected: true };
      throw err;
    }
  }
}

/**
 * The control plane's log hub: the data plane writes every worker's file and sends each line here
 * for live followers; the control plane's own lines (a start that failed) are written there too.
 */
export class RemoteLogHub extends LogHub {
  client?: DataPlaneClient;

  override write(namespace: string, app: string, entry: LogLine): undefined {
    this.client?.peer.emit('log.write', { namespace, app, entry });
    return undefined;
  }

  override async flush(): Promise<void> {
    await this.client?.call('logs.flush');
  }

  override close(): Promise<void> {
    return Promise.resolve();
  }
}
