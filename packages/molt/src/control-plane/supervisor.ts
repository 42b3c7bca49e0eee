import { chownSync, existsSync, mkdirSync, readFileSync, readlinkSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { moltAppPackageDir } from '../runtime/molt-app-entry.js';
import { BlobStore } from '../blobs/blob-store.js';
import { materializeTree, removeTree } from '../blobs/materialize.js';
import { newId } from '../ids.js';
import type { Store } from '../store/store.js';
import type { SharedBlobs } from './shared-blobs.js';
import type { RevisionRow, WorkerRow } from '../store/types.js';
import type { UpgradeRequest, UpgradeResult } from '../runtime/control-messages.js';
import type { EventLog } from './event-log.js';
import type { DurableTimers } from './durable-timers.js';
import type { LogHub } from './log-hub.js';
import { describeExit, type WorkerExit, type WorkerLaunch, type WorkerSandbox, WorkerStartError, type WorkerVolume } from './worker-process.js';
import type { DataPlaneClient, RemoteWorker } from './data-plane-client.js';
import type { DataPlaneWorker } from '../data-plane/protocol.js';
import { type DetailStatus, type WorkerStatus, workerStatus } from '../store/lifecycle.js';
import { type Cgroups, describeLimits, type WorkerCgroup } from './resources/cgroups.js';
import type { Allocation, Scheduler } from './resources/scheduler.js';
import { type Isolation, namespaceUid } from './sandbox/isolation.js';
import { waitAtMost } from '../wait.js';

/** The timer kind of a crashed app's replacement after its backoff; its key is `replaceKey`. */
const REPLACE = 'replace';
export const replaceKey = (namespace: string, app: string) => `${REPLACE}:${namespace}/${app}`;
/** Backoff counts failures in this window. */
const BACKOFF_WINDOW_MS = 60_000;

interface LiveWorker {
  row: WorkerRow;
  /** Its process, which the data plane runs. */
  proc: RemoteWorker;
  stopping: boolean;
  /** Its cgroup, when its limits are enforced. */
  cgroup?: WorkerCgroup;
  memoryMb?: number;
}

export interface SupervisorOptions {
  dataDir: string;
  /** Address unsandboxed workers listen on. */
  workerHost: string;
  /** How workers are sandboxed here (detected at start). */
  isolation: Isolation;
  /** Size of each private tmpfs of a sandboxed worker (/tmp, scratch, links). */
  scratchBytes: number;
  /** The database's copy of blobs, fetched from when the data dir lacks a tree. */
  shared: SharedBlobs;
}

/**
 * Starts and stops worker processes, records every status change in the store, and keeps
 * each app's current revision at its worker count: a crashed worker is replaced with backoff.
 */
export class Supervisor {
  private readonly live = new Map<string, LiveWorker>();
  private readonly crashListeners = new Set<(w: WorkerRow, exit: WorkerExit) => void>();
  /** Workers waiting for capacity (PENDING); set to true to give up on one. */
  private readonly pending = new Map<string, { row: WorkerRow; cancelled: boolean }>();
  private closing = false;
  /**
   * PENDING workers a control plane that died left waiting for capacity, by `namespace/app/revision`:
   * the next start of a worker of that revision takes one, so it keeps its id and its deadline.
   */
  private readonly leftPending = new Map<string, WorkerRow[]>();
  /** Workers being started, per `namespace/app`. */
  private readonly starting = new Map<string, number>();
  /** The last status write of each worker, which the next one waits for. */
  private readonly statusWrites = new Map<string, Promise<void>>();

  constructor(
    private readonly store: Store,
    private readonly blobs: BlobStore,
    private readonly dp: DataPlaneClient,
    private readonly events: EventLog,
    private readonly logs: LogHub,
    private readonly opts: SupervisorOptions,
    readonly scheduler: Scheduler,
    readonly cgroups: Cgroups,
    private readonly timers: DurableTimers,
  ) {
    this.ensureMoltAppLink();
    timers.on(REPLACE, (t) => this.reconcile(t.namespace, t.app));
  }

  /** Live details of workers (BUSY while one serves, as the gateway counts), overlaid on what the store says. */
  async detailsOf(rows: WorkerRow[]): Promise<(DetailStatus | null)[]> {
    const free = rows.filter((r) => r.status === 'RUNNING' && r.detailStatus === 'FREE').map((r) => r.id);
    const stats = free.length > 0 ? await this.dp.targetStats(free).catch(() => ({}) as Record<string, { outstanding: number }>) : {};
    return rows.map((r) => (r.status === 'RUNNING' && r.detailStatus === 'FREE' ? ((stats[r.id]?.outstanding ?? 0) > 0 ? 'BUSY' : 'FREE') : r.detailStatus));
  }

  /** Called when a RUNNING worker dies unexpectedly (the rollout engine aborts on its new workers). */
  onCrash(fn: (w: WorkerRow, exit: WorkerExit) => void): () => void {
    this.crashListeners.add(fn);
    return () => this.crashListeners.delete(fn);
  }

  /**
   * Moves a worker along its status table (an illegal move throws) and records it. Writes of one
   * worker are chained, so they reach the store in the order they were made.
   */
  private setStatus(w: LiveWorker | WorkerRow, status: WorkerStatus, detailStatus: DetailStatus | null, detail?: string | null): Promise<void> {
    const row = 'row' in w ? w.row : w;
    workerStatus.check(`worker ${row.id}`, row.status, status);
    const patch: Partial<WorkerRow> = { detailStatus };
    if (detail !== undefined) patch.detail = detail;
    if (status === 'TERMINATED' || status === 'ERROR') patch.deletedAt = new Date().toISOString();
    Object.assign(row, patch, { status });
    const write = (this.statusWrites.get(row.id) ?? Promise.resolve()).then(() => this.store.setWorkerStatus(row.id, status, patch));
    const tail = write.catch(() => {});
    this.statusWrites.set(row.id, tail);
    void tail.then(() => {
      if (this.statusWrites.get(row.id) === tail) this.statusWrites.delete(row.id);
    });
    return write;
  }

  /**
   * Apps import `@molt/app` by name; from every tree under the data dir, plain resolution finds
   * `<data-dir>/node_modules/@molt/app`, a link to the runtime's own copy (no loader hooks needed).
   */
  private ensureMoltAppLink(): void {
    const link = join(this.opts.dataDir, 'node_modules', '@molt', 'app');
    const target = moltAppPackageDir();
    try {
      if (readlinkSync(link) === target) return;
      rmSync(link, { force: true });
    } catch {
      // not there yet
    }
    mkdirSync(dirname(link), { recursive: true });
    symlinkSync(target, link);
  }

  /** Where an app's releases are materialized: each app sees its own, and nothing else. */
  releasesDir(namespace: string, app: string): string {
    return join(this.opts.dataDir, 'apps', namespace, app, 'releases');
  }

  /** Materializes a release for an app (once) and returns its directory. */
  releaseDir(namespace: string, app: string, releaseId: string): Promise<string> {
    return this.materialize(join(this.releasesDir(namespace, app), releaseId), releaseId);
  }

  /** Materializes each volume revision once (shared by every worker using it), read-only. */
  volumeDirs(rev: RevisionRow): Promise<WorkerVolume[]> {
    return Promise.all(rev.volumes.map(async (v) => ({ ref: v.ref, revision: v.revision, path: await this.materialize(join(this.opts.dataDir, 'trees', v.treeHash), v.treeHash) })));
  }

  /** A tree materialized at `dest`; its blobs come from a shared database first when it is not there yet (not on each worker start or swap). */
  private async materialize(dest: string, hash: string): Promise<string> {
    if (!existsSync(dest)) await this.opts.shared.fetch(hash);
    return materializeTree(this.blobs, dest, hash);
  }

  /** A release is deleted: the app's copy of it goes. */
  removeRelease(namespace: string, app: string, releaseId: string): void {
    removeTree(join(this.releasesDir(namespace, app), releaseId));
  }

  /** An app is gone: its materialized releases go too. */
  removeAppFiles(namespace: string, app: string): void {
    removeTree(dirname(this.releasesDir(namespace, app)));
  }

  /**
   * How a worker of `namespace` is sandboxed, and how `worker list` says so: its uid and a passwd
   * naming it, or why it is not isolated.
   */
  private async sandboxFor(namespace: string, runDir: string): Promise<{ sandbox?: WorkerSandbox; isolation: string }> {
    const iso = this.opts.isolation;
    mkdirSync(runDir, { recursive: true, mode: 0o700 });
    if (!iso.sandboxed) return { isolation: `NOT ISOLATED: ${iso.notIsolated}` };
    if (!iso.users) return { sandbox: { uid: null, scratchBytes: this.opts.scratchBytes }, isolation: `NOT ISOLATED: ${iso.notIsolated}` };
    const ns = await this.store.getNamespace(namespace);
    if (!ns) throw new WorkerStartError(`namespace ${namespace} does not exist`);
    const uid = namespaceUid(iso.users, ns.uidOffset, namespace);
    // Its socket directory: the worker's own, reachable by no other sandbox.
    chownSync(runDir, uid, uid);
    const users = join(this.opts.dataDir, 'sandbox', 'users', String(uid));
    mkdirSync(users, { recursive: true });
    const passwd = { passwd: join(users, 'passwd'), group: join(users, 'group') };
    const entry = `molt-${namespace}:x:${uid}:${uid}:molt worker of namespace ${namespace}:/molt/scratch:/usr/sbin/nologin\n`;
    // Written when the uid's namespace is new to it (the uid range can be moved), not at every start.
    if (!existsSync(passwd.passwd) || readFileSync(passwd.passwd, 'utf8') !== entry) {
      writeFileSync(passwd.passwd, entry);
      writeFileSync(passwd.group, `molt-${namespace}:x:${uid}:\n`);
    }
    return { sandbox: { uid, passwd, scratchBytes: this.opts.scratchBytes }, isolation: `sandboxed, uid ${uid}` };
  }

  /**
   * Starts one worker of a revision and waits until it passes readiness and takes traffic.
   * On failure the process is stopped, the worker is left in ERROR with the reason, and the error is thrown.
   */
  async startWorker(rev: RevisionRow, rolloutId?: string | null): Promise<WorkerRow> {
    return this.whileStarting(`${rev.namespace}/${rev.app}`, () => this.launch(rev, rolloutId));
  }

  /** Counts the app as having a worker on its way while `fn` runs. */
  private async whileStarting<T>(key: string, fn: () => Promise<T>): Promise<T> {
    this.starting.set(key, (this.starting.get(key) ?? 0) + 1);
    try {
      return await fn();
    } finally {
      const n = (this.starting.get(key) ?? 1) - 1;
      if (n > 0) this.starting.set(key, n);
      else this.starting.delete(key);
    }
  }

  /**
   * Whether a worker of the app is on its way: starting, waiting for capacity, or to replace one
   * that crashed. The gateway answers 503 at once when none is and none serves.
   */
  workerComing(namespace: string, app: string): boolean {
    const key = `${namespace}/${app}`;
    return this.starting.has(key) || this.timers.has(replaceKey(namespace, app)) || this.workersOf(namespace, app).length > 0;
  }

  /** Keeps PENDING workers left by the previous control plane for the next starts of their revision. */
  keepPending(rows: WorkerRow[]): void {
    for (const row of rows) {
      const key = `${row.namespace}/${row.app}/${row.revision}`;
      this.leftPending.set(key, [...(this.leftPending.get(key) ?? []), row]);
    }
  }

  /** Ends the PENDING workers left for a revision that no start took: TERMINATED, with why. */
  async dropPending(namespace: string, app: string, revision: number, why: string): Promise<void> {
    const key = `${namespace}/${app}/${revision}`;
    const rows = this.leftPending.get(key) ?? [];
    this.leftPending.delete(key);
    for (const row of rows) await this.setStatus(row, 'TERMINATED', null, `not placed: ${why}`);
  }

  /** Revisions with PENDING workers left for them, as `namespace/app/revision`. */
  pendingLeft(): string[] {
    return [...this.leftPending.keys()];
  }

  private async launch(rev: RevisionRow, rolloutId?: string | null): Promise<WorkerRow> {
    const release = await this.store.getRelease(rev.namespace, rev.releaseId);
    const now = new Date().toISOString();
    const left = this.leftPending.get(`${rev.namespace}/${rev.app}/${rev.revision}`);
    const resumed = left?.shift();
    if (left?.length === 0) this.leftPending.delete(`${rev.namespace}/${rev.app}/${rev.revision}`);
    const row: WorkerRow = resumed ?? {
      id: newId(),
      namespace: rev.namespace,
      app: rev.app,
      revision: rev.revision,
      status: 'CREATED',
      detailStatus: 'IN_FLIGHT',
      detail: null,
      pid: null,
      port: null,
      createdAt: now,
      deletedAt: null,
      limits: null,
      isolation: null,
    };
    const base = { namespace: rev.namespace, app: rev.app, workerId: row.id, rolloutId: rolloutId ?? null };
    // Trees and the sandbox first: nothing is reserved for a worker whose files cannot be made.
    const releaseDir = await this.releaseDir(rev.namespace, rev.app, rev.releaseId);
    const volumes = await this.volumeDirs(rev);
    const runDir = join(this.opts.dataDir, 'run', row.id);
    let sandbox: WorkerSandbox | undefined;
    let allocation: Allocation;
    try {
      ({ sandbox, isolation: row.isolation } = await this.sandboxFor(rev.namespace, runDir));
      allocation = await this.place(row, rev, base);
    } catch (err) {
      rmSync(runDir, { recursive: true, force: true });
      throw err;
    }
    const { resources } = rev.spec;
    let cgroup: WorkerCgroup | undefined;
    let limits = describeLimits(resources, this.cgroups);
    try {
      cgroup = this.cgroups.create(row.id, resources);
    } catch (err) {
      limits = `${limits} NOT ENFORCED: cannot set up its cgroup (${(err as NodeJS.ErrnoException).code ?? (err as Error).message})`;
    }
    if (allocation.gpus.length > 0) limits = `${limits ? `${limits}, ` : ''}GPU ${allocation.gpus.join(',')}`;
    row.limits = limits || null;
    if (row.status === 'PENDING') {
      await this.store.updateWorker(row.id, { limits: row.limits });
      await this.setStatus(row, 'CREATED', 'IN_FLIGHT', null);
      await this.events.append({ ...base, type: 'worker.created', message: `worker ${row.id} placed: capacity is free` });
    } else {
      await this.store.insertWorker(row);
      await this.events.append({ ...base, type: 'worker.created', message: `worker ${row.id} created for revision ${rev.revision}` });
    }
    const launch: WorkerLaunch = {
      id: row.id,
      namespace: rev.namespace,
      app: rev.app,
      revision: rev.revision,
      releaseId: rev.releaseId,
      releaseDir,
      releasesDir: this.releasesDir(rev.namespace, rev.app),
      volumes,
      runDir,
      cgroupProcs: cgroup?.procs ?? [],
      sandbox,
      cudaVisibleDevices: this.scheduler.node.gpus.length > 0 ? allocation.gpus.join(',') : undefined,
      entry: release?.manifest.entry ?? 'index.js',
      spec: rev.spec,
      host: this.opts.workerHost,
    };
    const proc = this.handle(row.id, rev, cgroup);
    const live: LiveWorker = { row, proc, stopping: false, cgroup, memoryMb: resources.memoryMb };
    this.live.set(row.id, live);
    try {
      await proc.start(launch, () => {
        row.pid = proc.pid ?? null;
        void this.store.updateWorker(row.id, { pid: row.pid });
        this.setStatus(live, 'INITIALIZED', 'IN_FLIGHT').catch((err) => this.events.internalError(rev.namespace, rev.app, err));
      });
    } catch (err) {
      const reason = this.oomReason(live) ?? (err instanceof Error ? err.message : String(err));
      live.stopping = true;
      // The data plane removes its run dir once the process is gone.
      await proc.stop(1000);
      this.live.delete(row.id);
      this.scheduler.release(row.id);
      await this.setStatus(live, 'ERROR', null, reason);
      this.logs.write(rev.namespace, rev.app, { ts: new Date().toISOString(), workerId: row.id, stream: 'molt', line: `start failed: ${reason}` });
      await this.events.append({ ...base, level: 'error', type: 'worker.failed', message: `worker ${row.id} failed to start: ${reason}` });
      throw err;
    }
    const address = proc.address!;
    row.port = 'port' in address ? address.port : null;
    await this.store.updateWorker(row.id, { port: row.port });
    await this.setStatus(live, 'RUNNING', 'FREE');
    await this.dp.addRoute(rev.namespace, rev.app, row.id, address);
    await this.events.append({ ...base, type: 'worker.running', message: `worker ${row.id} is ready and takes traffic` });
    return row;
  }

  /** The control plane's handle on a worker process the data plane runs (and whose run dir it removes). */
  private handle(workerId: string, rev: RevisionRow, cgroup: WorkerCgroup | undefined): RemoteWorker {
    return this.dp.worker(
      workerId,
      rev.spec.readiness.path,
      (exit) => void this.handleExit(workerId, exit),
      () => {
        // The process is gone: its capacity is free and its cgroup can go.
        this.scheduler.release(workerId);
        void cgroup?.remove();
      },
    );
  }

  /**
   * Takes back a worker the data plane still runs after this control plane (re)started: it keeps
   * serving, untouched; its resources are counted again and its exit is watched as any other's.
   */
  async adopt(row: WorkerRow, rev: RevisionRow, info: DataPlaneWorker): Promise<void> {
    const cgroup = this.cgroups.create(row.id, rev.spec.resources);
    this.scheduler.place(row.id, `${row.namespace}/${row.app}`, rev.spec.resources);
    const proc = this.handle(row.id, rev, cgroup);
    proc.adopt(info);
    // A hot upgrade finished while no control plane heard its answer: the release it runs says its revision.
    if (row.revision !== rev.revision) await this.store.updateWorker(row.id, { revision: rev.revision });
    row.revision = rev.revision;
    this.live.set(row.id, { row, proc, stopping: false, cgroup, memoryMb: rev.spec.resources.memoryMb });
    if (row.detailStatus !== 'FREE') await this.setStatus(row, 'RUNNING', 'FREE');
    if (!info.routed && info.address) await this.dp.addRoute(row.namespace, row.app, row.id, info.address);
  }

  /**
   * Upgrades one worker in place (UPGRADING while it swaps). On success the worker belongs to
   * `revision`; on failure it still runs what it ran, with its state.
   */
  async upgradeWorker(
    workerId: string,
    revision: number,
    req: Omit<UpgradeRequest, 'type' | 'id' | 'releaseDir'>,
    timeoutMs: number,
    back: { fromRelease: string; downInstructions: UpgradeRequest['instructions'] },
  ): Promise<UpgradeResult> {
    const { fromRelease, downInstructions } = back;
    const live = this.live.get(workerId);
    if (!live || live.stopping) return { ok: false, phase: 'load', error: `worker ${workerId} is not running` };
    const { proc } = live;
    // Both releases are the app's already: the worker runs one, the rollout made the other before its first swap.
    // The status is written while the worker swaps: the swap does not wait for the store.
    const marked = this.setStatus(live, 'RUNNING', 'UPGRADING');
    let result = await proc.upgrade(req, timeoutMs);
    await marked;
    // The new code must still pass readiness, as a new worker would have to.
    if (result.ok && !(await proc.ready())) {
      const path = proc.readinessPath;
      const env = req.env ? { from: req.env.to, to: req.env.from } : undefined;
      const reverse = { ...req, toRelease: fromRelease, direction: req.direction === 'up' ? ('down' as const) : ('up' as const), instructions: downInstructions, env };
      const back = await proc.upgrade(reverse, timeoutMs);
      result = { ok: false, phase: 'apply', error: `the upgraded worker failed readiness (GET ${path} answered ${proc.lastReadiness})${back.ok ? '; it went back to its release' : `; going back failed too (${back.error})`}` };
    }
    if (this.live.has(workerId)) {
      // One write: its new revision (on success) and FREE again.
      if (result.ok) live.row.revision = revision;
      live.row.detailStatus = 'FREE';
      await this.store.updateWorker(workerId, result.ok ? { revision, detailStatus: 'FREE' } : { detailStatus: 'FREE' });
    }
    return result;
  }

  /** Whether the worker's process ends within `ms` (or has ended). */
  async exitsWithin(workerId: string, ms: number): Promise<boolean> {
    const live = this.live.get(workerId);
    if (!live) return true;
    return (await waitAtMost(live.proc.waitExit().then(() => true), ms)) ?? false;
  }

  /** `OOM: …` when the kernel killed the worker at its memory limit. */
  private oomReason(live: LiveWorker): string | undefined {
    return live.cgroup?.oomKilled() ? `OOM: killed at its memory limit of ${live.memoryMb} MiB` : undefined;
  }

  /**
   * Reserves the revision's resources for a new worker. While they are not free the worker is
   * PENDING with the reason in its detail; it gives up (ERROR) at the readiness deadline or
   * when it is stopped.
   */
  private async place(row: WorkerRow, rev: RevisionRow, base: { namespace: string; app: string; workerId: string; rolloutId: string | null }): Promise<Allocation> {
    const app = `${rev.namespace}/${rev.app}`;
    let placement = this.scheduler.place(row.id, app, rev.spec.resources);
    if (placement.ok) return placement.allocation;
    // A request no node could ever hold fails at once: waiting cannot help.
    const never = this.scheduler.fits(rev.spec.resources);
    if (never) throw new WorkerStartError(`cannot be placed on this node: it ${never}; lower resources in the app config`);
    // A worker left PENDING by the previous control plane waits on, to the deadline it had.
    const resumed = row.status === 'PENDING';
    row.status = 'PENDING';
    row.detailStatus = null;
    row.detail = placement.reason;
    if (resumed) {
      await this.store.updateWorker(row.id, { detail: row.detail });
      await this.events.append({ ...base, level: 'warn', type: 'worker.pending', message: `worker ${row.id} still PENDING after the control plane restarted: ${row.detail}` });
    } else {
      await this.store.insertWorker(row);
      await this.events.append({ ...base, level: 'warn', type: 'worker.pending', message: `worker ${row.id} PENDING: ${row.detail}` });
    }
    const waiting = { row, cancelled: false };
    this.pending.set(row.id, waiting);
    const timeoutMs = rev.spec.readiness.timeoutMs;
    // The deadline counts from when the worker was created, which the store keeps.
    const deadline = Date.parse(row.createdAt) + timeoutMs;
    try {
      for (;;) {
        if (waiting.cancelled || this.closing) {
          await this.setStatus(row, 'TERMINATED', null, 'stopped while waiting for capacity');
          throw new WorkerStartError(`worker ${row.id} was stopped while waiting for capacity`);
        }
        const left = deadline - Date.now();
        if (left <= 0) {
          const hint = base.rolloutId && this.workersOf(rev.namespace, rev.app).length > 0
            ? '; a rolling update needs room for its surge workers beside the old ones: free capacity, or set rollout: { maxSurge: 0, maxUnavailable: 1 } to replace workers in place'
            : '';
          const reason = `${row.detail}; not placed within ${timeoutMs} ms (readiness.timeoutMs)${hint}`;
          await this.setStatus(row, 'ERROR', null, reason);
          await this.events.append({ ...base, level: 'error', type: 'worker.failed', message: `worker ${row.id} failed to start: ${reason}` });
          throw new WorkerStartError(reason);
        }
        await this.scheduler.nextRelease(Math.min(left, 500));
        placement = this.scheduler.place(row.id, app, rev.spec.resources);
        if (placement.ok) return placement.allocation;
      }
    } finally {
      this.pending.delete(row.id);
    }
  }

  /**
   * Takes a worker out of rotation, lets in-flight requests finish (streams until `drainTimeoutMs`),
   * then SIGTERM and SIGKILL after `graceMs`. Resolves when it is TERMINATED.
   */
  async stopWorker(workerId: string, opts: { drainTimeoutMs: number; graceMs: number; rolloutId?: string | null; reason?: string }): Promise<void> {
    const waiting = this.pending.get(workerId);
    if (waiting) waiting.cancelled = true;
    const live = this.live.get(workerId);
    if (!live || live.stopping) return;
    live.stopping = true;
    const { row, proc } = live;
    const base = { namespace: row.namespace, app: row.app, workerId, rolloutId: opts.rolloutId ?? null };
    await this.setStatus(live, 'TERMINATING', 'DRAINING', opts.reason ?? null);
    await this.events.append({ ...base, type: 'worker.draining', message: `worker ${workerId} drains${opts.reason ? `: ${opts.reason}` : ''}` });
    const exit = await proc.retire(opts.drainTimeoutMs, opts.graceMs);
    this.live.delete(workerId);
    await this.setStatus(live, 'TERMINATED', null, row.detail ?? (exit.signal === 'SIGKILL' ? 'killed after the grace period' : null));
    await this.events.append({ ...base, type: 'worker.terminated', message: `worker ${workerId} terminated (${describeExit(exit)})` });
  }

  private async handleExit(workerId: string, exit: WorkerExit): Promise<void> {
    const live = this.live.get(workerId);
    if (!live || live.stopping || this.closing) return;
    // Still starting: startWorker reports the failure itself.
    if (live.row.status !== 'RUNNING') return;
    this.live.delete(workerId);
    this.dp.removeRoute(workerId);
    const reason = this.oomReason(live) ?? `crashed (${describeExit(exit)})`;
    await this.setStatus(live, 'ERROR', null, reason);
    const { namespace, app } = live.row;
    this.logs.write(namespace, app, { ts: new Date().toISOString(), workerId, stream: 'molt', line: `worker ${reason}` });
    await this.events.append({ namespace, app, workerId, level: 'error', type: 'worker.crashed', message: `worker ${workerId} ${reason}` });
    for (const fn of this.crashListeners) fn(live.row, exit);
    await this.scheduleReconcile(namespace, app);
  }

  /**
   * Replaces lost workers after a backoff that doubles with each failure (crash or failed start) of
   * the app in the last minute (1 s … 30 s), as Kubernetes' CrashLoopBackOff does. The failures are
   * the store's ERROR rows and the wait is a durable timer, so a restart of the control plane
   * neither forgets the backoff nor cuts it short.
   */
  private async scheduleReconcile(namespace: string, app: string): Promise<void> {
    const key = replaceKey(namespace, app);
    if (this.closing || this.timers.has(key)) return;
    const failures = await this.store.countFailedWorkers(namespace, app, new Date(Date.now() - BACKOFF_WINDOW_MS).toISOString());
    const delay = Math.min(30_000, 1000 * 2 ** Math.max(0, failures - 1));
    await this.timers.set(key, REPLACE, { namespace, app }, new Date(Date.now() + delay), { failures });
  }

  /** Live workers of an app in this process. */
  workersOf(namespace: string, app: string): WorkerRow[] {
    return [...this.live.values()].filter((l) => l.row.namespace === namespace && l.row.app === app && !l.stopping).map((l) => l.row);
  }

  /**
   * Brings an app's current revision to its worker count, unless a rollout owns the app or it
   * is paused. Extra workers are stopped; missing ones started one at a time.
   */
  async reconcile(namespace: string, appName: string): Promise<void> {
    if (this.closing) return;
    await this.whileStarting(`${namespace}/${appName}`, () => this.reconcileNow(namespace, appName));
  }

  private async reconcileNow(namespace: string, appName: string): Promise<void> {
    const app = await this.store.getApp(namespace, appName);
    if (!app || app.paused || app.rolloutId || app.currentRevision === 0) return;
    const current = await this.store.getRevision(namespace, appName, app.currentRevision);
    if (!current) return;
    // A hot-upgraded revision still on probation: a worker that (re)starts boots the permanent one.
    const boot = app.permanentRevision && app.permanentRevision !== app.currentRevision ? await this.store.getRevision(namespace, appName, app.permanentRevision) : undefined;
    const rev = boot ?? current;
    const mine = this.workersOf(namespace, appName);
    for (let i = mine.length; i < current.spec.workers; i++) {
      try {
        const w = await this.startWorker(rev);
        if (boot) {
          await this.events.append({ namespace, app: appName, workerId: w.id, level: 'warn', type: 'worker.permanent-boot', message: `worker ${w.id} booted revision ${boot.revision}, the permanent one: revision ${current.revision} was upgraded in place and is not permanent yet` });
        }
      } catch {
        await this.scheduleReconcile(namespace, appName);
        return;
      }
    }
    for (const extra of mine.slice(current.spec.workers)) {
      await this.stopWorker(extra.id, { drainTimeoutMs: current.spec.rollout.drainTimeoutMs, graceMs: current.spec.rollout.stopGraceMs, reason: 'scaled down' });
    }
  }

  /** Stops every worker of an app (pause, delete). */
  async stopApp(namespace: string, app: string, reason: string, drainTimeoutMs = 30_000, graceMs = 5_000): Promise<void> {
    await this.timers.clear(replaceKey(namespace, app));
    for (const p of this.pending.values()) if (p.row.namespace === namespace && p.row.app === app) p.cancelled = true;
    await Promise.all(this.workersOf(namespace, app).map((w) => this.stopWorker(w.id, { drainTimeoutMs, graceMs, reason })));
  }

  /** Lets the workers be, at a shutdown that keeps them: nothing is replaced or restarted from now on. */
  detach(): void {
    this.closing = true;
  }

  /** Stops every worker at server shutdown: in-flight requests finish first. */
  async shutdown(drainTimeoutMs: number): Promise<void> {
    this.closing = true;
    await Promise.all([...this.live.values()].map((l) => this.stopWorker(l.row.id, { drainTimeoutMs, graceMs: 5000, reason: 'server stopped' })));
  }
}
