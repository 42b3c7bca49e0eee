import { type ChildProcess, spawn } from 'node:child_process';
import { request } from 'node:http';
import { fileURLToPath } from 'node:url';
import type { AppSpec } from '../config/app-spec.js';
import type { ServerToWorker, UpgradeRequest, UpgradeResult, WorkerToServer } from '../runtime/control-messages.js';
import { lineSplitter, type LogLine } from './log-hub.js';
import { launcher } from './resources/isolation.js';

const WORKER_MAIN = fileURLToPath(new URL('../runtime/worker-main.js', import.meta.url));
/** Variables a worker inherits from the server; everything else comes from the app's env. */
const INHERITED_ENV = ['PATH', 'HOME', 'LANG', 'LC_ALL', 'TZ', 'TMPDIR', 'NODE_EXTRA_CA_CERTS'];

export interface WorkerLaunch {
  id: string;
  namespace: string;
  app: string;
  revision: number;
  releaseId: string;
  releaseDir: string;
  /** The volumes it reads, materialized. */
  volumes: WorkerVolume[];
  /** A writable directory of its own for hot upgrades' link directories. */
  linksDir: string;
  /** `cgroup.procs` files the process enters before Node starts (its limits); empty for none. */
  cgroupProcs: string[];
  /** Whether the release and volume directories are made read-only mounts (see isolation.ts). */
  mountNamespace: boolean;
  /** `CUDA_VISIBLE_DEVICES`: the GPUs it was given; undefined when the node has none. */
  cudaVisibleDevices?: string;
  entry: string;
  spec: AppSpec;
  host: string;
}

export interface WorkerVolume {
  /** The name the app's config uses. */
  ref: string;
  revision: string;
  path: string;
}

/**
 * How a worker finds its volumes: `MOLT_VOLUMES` (JSON, for `runtime.volume()`) and one
 * `MOLT_VOLUME_<NAME>` each (the name upper-cased, every character outside A–Z and 0–9 made `_`).
 */
export function volumeEnv(volumes: WorkerVolume[]): Record<string, string> {
  const env: Record<string, string> = { MOLT_VOLUMES: JSON.stringify(Object.fromEntries(volumes.map((v) => [v.ref, { path: v.path, revision: v.revision }]))) };
  for (const v of volumes) env[`MOLT_VOLUME_${v.ref.toUpperCase().replace(/[^A-Z0-9]/g, '_')}`] = v.path;
  return env;
}

export interface WorkerExit {
  code: number | null;
  signal: NodeJS.Signals | null;
  /** True when molt asked it to stop. */
  expected: boolean;
}

/** The reason a worker failed to start, for `app update` to print. */
export class WorkerStartError extends Error {}

/**
 * One worker process: spawn, readiness, drain and stop. It knows nothing of the store;
 * the supervisor records what it reports.
 */
export class WorkerProcess {
  child?: ChildProcess;
  port?: number;
  private stopping = false;
  private upgradeSeq = 0;
  private exited?: WorkerExit;
  private exitWaiters: ((e: WorkerExit) => void)[] = [];

  constructor(
    readonly launch: WorkerLaunch,
    private readonly onLog: (l: LogLine) => void,
    private readonly onExit: (e: WorkerExit) => void,
    /** Called once the process has exited and its output has ended. */
    private readonly onClosed: () => void = () => {},
  ) {}

  get id(): string {
    return this.launch.id;
  }

  /** Spawns the process; `onSpawned` fires when it is up (INITIALIZED). Resolves once it passes readiness. */
  async start(onSpawned: () => void): Promise<void> {
    const { launch } = this;
    const env: Record<string, string> = {};
    for (const k of INHERITED_ENV) if (process.env[k] !== undefined) env[k] = process.env[k]!;
    Object.assign(env, launch.spec.env, {
      NODE_ENV: launch.spec.env.NODE_ENV ?? 'production',
      MOLT_WORKER_ID: launch.id,
      MOLT_APP: launch.app,
      MOLT_NAMESPACE: launch.namespace,
      MOLT_REVISION: String(launch.revision),
      MOLT_RELEASE: launch.releaseId,
      MOLT_RELEASE_DIR: launch.releaseDir,
      MOLT_LINKS_DIR: launch.linksDir,
      MOLT_ENTRY: launch.entry,
      MOLT_HOST: launch.host,
      MOLT_PORT: '0',
      ...volumeEnv(launch.volumes),
    });
    const execArgv: string[] = ['--enable-source-maps'];
    if (launch.spec.resources.memoryMb) execArgv.push(`--max-old-space-size=${Math.max(16, Math.floor(launch.spec.resources.memoryMb * 0.75))}`);
    if (launch.cudaVisibleDevices !== undefined) env.CUDA_VISIBLE_DEVICES = launch.cudaVisibleDevices;
    const start = launcher(process.execPath, [...execArgv, WORKER_MAIN], {
      cgroupProcs: launch.cgroupProcs,
      readOnlyDirs: [launch.releaseDir, ...launch.volumes.map((v) => v.path)],
      mountNamespace: launch.mountNamespace,
    });
    const child = spawn(start.command, start.args, {
      cwd: launch.releaseDir,
      env: { ...env, ...start.env },
      stdio: ['ignore', 'pipe', 'pipe', 'ipc'],
    });
    this.child = child;
    child.once('close', () => this.onClosed());
    for (const stream of ['stdout', 'stderr'] as const) {
      const split = lineSplitter((line) => this.onLog({ ts: new Date().toISOString(), workerId: launch.id, stream, line }));
      child[stream]!.on('data', (c: Buffer) => split.push(c));
      child[stream]!.on('end', () => split.end());
    }

    const { path, timeoutMs } = launch.spec.readiness;
    const deadline = Date.now() + timeoutMs;
    let timer: NodeJS.Timeout | undefined;
    let onPort: (port: number) => void = () => {};
    const listening = new Promise<number>((r) => (onPort = r));
    // Rejects on the first way a start can fail: load error, early exit, spawn error, deadline.
    const failed = new Promise<never>((_, reject) => {
      child.on('message', (msg: WorkerToServer) => {
        if (msg.type === 'listening') onPort(msg.port);
        else if (msg.type === 'load-failed') reject(new WorkerStartError(`the app failed to load: ${msg.error}`));
      });
      child.once('exit', (code, signal) => reject(new WorkerStartError(`the worker exited before it was ready (${describeExit(code, signal)}); see \`molt app logs\``)));
      child.once('error', (err) => reject(new WorkerStartError(`the worker could not start: ${err.message}`)));
      timer = setTimeout(
        () => reject(new WorkerStartError(`the worker was not ready within ${timeoutMs} ms (readiness GET ${path}); fix the app or raise readiness.timeoutMs`)),
        timeoutMs,
      );
    });
    failed.catch(() => {});
    child.once('exit', (code, signal) => {
      this.exited = { code, signal, expected: this.stopping };
      for (const w of this.exitWaiters.splice(0)) w(this.exited);
      this.onExit(this.exited);
    });
    try {
      await Promise.race([new Promise<void>((r) => child.once('spawn', () => r())), failed]);
      onSpawned();
      this.port = await Promise.race([listening, failed]);
      await Promise.race([this.pollReadiness(path, deadline), failed]);
    } finally {
      clearTimeout(timer);
    }
  }

  private async pollReadiness(path: string, deadline: number): Promise<void> {
    let last = 'no answer';
    while (Date.now() < deadline) {
      if (this.exited) throw new WorkerStartError(`the worker exited before it was ready (${describeExit(this.exited.code, this.exited.signal)})`);
      const status = await probe(this.launch.host, this.port!, path).catch((err: Error) => err.message);
      if (typeof status === 'number' && status >= 200 && status < 300) return;
      last = typeof status === 'number' ? `HTTP ${status}` : status;
      await new Promise((r) => setTimeout(r, 100));
    }
    throw new WorkerStartError(`readiness GET ${path} did not succeed within ${this.launch.spec.readiness.timeoutMs} ms (last: ${last})`);
  }

  send(msg: ServerToWorker): void {
    if (this.child?.connected) this.child.send(msg);
  }

  /** One readiness request: whether the worker answers its readiness path with 2xx now. */
  async ready(): Promise<boolean> {
    if (!this.port) return false;
    const status = await probe(this.launch.host, this.port, this.launch.spec.readiness.path).catch(() => 0);
    return status >= 200 && status < 300;
  }

  /**
   * Asks the worker to upgrade in place and waits for its answer; a worker that exits or does not
   * answer within `timeoutMs` counts as a failed upgrade.
   */
  upgrade(req: Omit<UpgradeRequest, 'type' | 'id'>, timeoutMs: number): Promise<UpgradeResult> {
    const child = this.child;
    if (!child?.connected) return Promise.resolve({ ok: false, phase: 'load', error: 'the worker is not running' });
    const id = `u${++this.upgradeSeq}`;
    return new Promise((resolvePromise) => {
      const done = (r: UpgradeResult) => {
        clearTimeout(timer);
        child.off('message', onMessage);
        child.off('exit', onExit);
        resolvePromise(r);
      };
      const onMessage = (m: WorkerToServer) => {
        if (m.type === 'upgrade-result' && m.id === id) done(m.result);
      };
      const onExit = () => done({ ok: false, phase: 'load', error: 'the worker exited during the upgrade' });
      const timer = setTimeout(() => done({ ok: false, phase: 'load', error: `the worker did not finish the upgrade within ${timeoutMs} ms` }), timeoutMs);
      child.on('message', onMessage);
      child.once('exit', onExit);
      child.send({ type: 'upgrade', id, ...req } satisfies UpgradeRequest);
    });
  }

  waitExit(): Promise<WorkerExit> {
    if (this.exited) return Promise.resolve(this.exited);
    return new Promise((resolvePromise) => this.exitWaiters.push(resolvePromise));
  }

  /** SIGTERM, then SIGKILL after `graceMs`; resolves when the process is gone. */
  async stop(graceMs: number): Promise<WorkerExit> {
    this.stopping = true;
    if (!this.child || this.exited) return this.exited ?? { code: 0, signal: null, expected: true };
    this.child.kill('SIGTERM');
    const timer = setTimeout(() => this.child?.kill('SIGKILL'), graceMs);
    const exit = await this.waitExit();
    clearTimeout(timer);
    return exit;
  }
}

export function describeExit(code: number | null, signal: NodeJS.Signals | null): string {
  return signal ? `killed by ${signal}` : `exit code ${code}`;
}

export function probe(host: string, port: number, path: string): Promise<number> {
  return new Promise((resolvePromise, reject) => {
    const req = request({ host, port, path, method: 'GET', timeout: 2000, agent: false }, (res) => {
      res.resume();
      resolvePromise(res.statusCode ?? 0);
    });
    req.on('timeout', () => req.destroy(new Error('readiness request timed out')));
    req.on('error', reject);
    req.end();
  });
}
