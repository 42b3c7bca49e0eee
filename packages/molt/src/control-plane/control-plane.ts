import { mkdirSync, readdirSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { BlobStore } from '../blobs/blob-store.js';
import { removeTree } from '../blobs/materialize.js';
import { RouteTable } from '../gateway/route-table.js';
import type { Store } from '../store/store.js';
import { AppService } from './app-service.js';
import { TokenVerifier } from './auth.js';
import { BlobAccess } from './blob-access.js';
import { Quotas } from './quotas.js';
import type { Isolation } from './sandbox/isolation.js';
import { UploadGate } from './upload-gate.js';
import { EventLog } from './event-log.js';
import { LogHub } from './log-hub.js';
import { RolloutEngine } from './rollout-engine.js';
import { Supervisor } from './supervisor.js';
import type { Cgroups } from './resources/cgroups.js';
import type { NodeCapacity } from './resources/node-info.js';
import { Scheduler } from './resources/scheduler.js';
import { VolumeService } from './volume-service.js';

export interface ControlPlaneOptions {
  dataDir: string;
  workerHost: string;
  maxUploadBytes: number;
  maxUploadFiles: number;
  /** Most bytes a volume revision may hold. */
  maxVolumeBytes: number;
  maxQueue: number;
  queueTimeoutMs: number;
  /** Uploads read at once; more wait their turn. */
  maxConcurrentUploads: number;
  /** Most workers one app may ask for (`--max-workers-per-app`). */
  maxWorkersPerApp: number;
  /** This node's capacity (detected, or set by --cpus / --memory-mb). */
  node: NodeCapacity;
  cgroups: Cgroups;
  /** How workers are sandboxed here. */
  isolation: Isolation;
  /** Size of each private tmpfs of a sandboxed worker. */
  scratchBytes: number;
  /** Bytes of a worker's log file before it is rotated (its last two parts are kept). */
  maxLogBytes: number;
}

/** The heartbeat row of this data dir's server, written every HEARTBEAT_MS. */
const HEARTBEAT = 'server';
const HEARTBEAT_MS = 1000;

/** The parts of the control plane, built once per server and handed to the API routes. */
export class ControlPlane {
  readonly blobs: BlobStore;
  readonly events: EventLog;
  readonly logs: LogHub;
  readonly routes: RouteTable;
  readonly tokens: TokenVerifier;
  readonly supervisor: Supervisor;
  readonly rollouts: RolloutEngine;
  readonly apps: AppService;
  readonly volumes: VolumeService;
  readonly blobAccess: BlobAccess;
  readonly quotas: Quotas;
  readonly uploads: UploadGate;
  private heartbeat?: NodeJS.Timeout;
  private recovering = true;

  constructor(
    readonly store: Store,
    readonly opts: ControlPlaneOptions,
  ) {
    mkdirSync(opts.dataDir, { recursive: true });
    this.blobs = new BlobStore(join(opts.dataDir, 'blobs'));
    this.blobAccess = new BlobAccess(store, this.blobs);
    this.quotas = new Quotas(store);
    this.uploads = new UploadGate(opts.maxConcurrentUploads);
    this.events = new EventLog(store);
    this.logs = new LogHub(join(opts.dataDir, 'logs'), opts.maxLogBytes);
    this.routes = new RouteTable({ maxQueue: opts.maxQueue, queueTimeoutMs: opts.queueTimeoutMs });
    this.tokens = new TokenVerifier(store);
    this.supervisor = new Supervisor(
      store,
      this.blobs,
      this.routes,
      this.events,
      this.logs,
      { dataDir: opts.dataDir, workerHost: opts.workerHost, isolation: opts.isolation, scratchBytes: opts.scratchBytes },
      new Scheduler(opts.node),
      opts.cgroups,
    );
    this.rollouts = new RolloutEngine(store, this.supervisor, this.events, this.routes);
    this.apps = new AppService(this);
    this.volumes = new VolumeService(this);
    this.routes.explainNoWorker = (namespace, name) => {
      // While the server starts, every app's workers are on their way.
      if (this.recovering || this.supervisor.workerComing(namespace, name) || this.rollouts.updating(namespace, name)) return undefined;
      const why = this.rollouts.lastFailure.get(`${namespace}/${name}`) ?? 'it has no revision that serves';
      return `no worker of ${namespace}/${name} is running or starting (${why}); see \`molt app history --app ${name} -n ${namespace}\`, fix it and \`molt app update\``;
    };
  }

  /**
   * Brings the server back to what the store says after a start: workers of the previous
   * process are gone (they stop when the server does), unfinished rollouts are failed, a
   * probation watched to its end is made permanent and one cut short goes back to the permanent
   * revision, and every app gets its workers again.
   */
  async recover(): Promise<void> {
    this.removeLeftovers();
    await this.blobAccess.backfill();
    // When the previous server was last seen alive: what its probations were watched until.
    const lastSeen = Date.parse((await this.store.lastBeat(HEARTBEAT)) ?? '') || 0;
    await this.beat();
    this.heartbeat = setInterval(() => void this.beat().catch(() => {}), HEARTBEAT_MS);
    this.heartbeat.unref();
    for (const w of await this.store.listLiveWorkers()) {
      await this.store.setWorkerStatus(w.id, 'TERMINATED', { detailStatus: null, detail: 'server restarted', deletedAt: new Date().toISOString() });
    }
    for (const r of await this.store.listRunningRollouts()) {
      const app = await this.store.getApp(r.namespace, r.app);
      const serving = app?.currentRevision ? `revision ${app.currentRevision} keeps serving` : 'the app has no revision that served: fix it, then `molt app update`';
      const reason = `the server restarted during the rollout; ${serving}`;
      await this.store.finishRollout(r.id, 'failed', reason);
      const target = await this.store.getRevision(r.namespace, r.app, r.toRevision);
      if (target && (target.status === 'pending' || target.status === 'deploying')) await this.store.setRevisionStatus(r.namespace, r.app, r.toRevision, 'failed', reason);
      await this.events.append({ namespace: r.namespace, app: r.app, rolloutId: r.id, level: 'warn', type: 'rollout.failed', message: `rollout to revision ${r.toRevision} failed: ${reason}` });
    }
    const apps = await this.store.listApps();
    for (const app of apps) {
      // A lock whose rollout is over (or was never recorded) is released.
      if (app.rolloutId && (await this.store.getRollout(app.rolloutId))?.phase !== 'running') await this.store.updateApp(app.namespace, app.name, { rolloutId: null });
      if (!app.probationUntil) continue;
      const until = Date.parse(app.probationUntil);
      if (until <= lastSeen) await this.rollouts.endProbation(app.namespace, app.name);
      else {
        const why = `the server stopped before revision ${app.currentRevision}'s probation ended (its workers stopped with it)`;
        await this.rollouts.revertProbation(app.namespace, app.name, why, 'failed');
      }
    }
    for (const app of apps) await this.syncRoutes(app.namespace, app.name);
    await Promise.all(apps.map((app) => this.supervisor.reconcile(app.namespace, app.name).catch(() => {})));
    this.recovering = false;
  }

  private beat(): Promise<void> {
    return this.store.beat(HEARTBEAT, new Date().toISOString());
  }

  /**
   * What a process that died mid-way left in the data dir (only one server holds it, so nothing of
   * this is in use): staged uploads, half-built trees, the run directories of its workers.
   */
  private removeLeftovers(): void {
    const { dataDir } = this.opts;
    rmSync(join(dataDir, 'run'), { recursive: true, force: true });
    // Where link directories lived before each worker had a run directory.
    rmSync(join(dataDir, 'links'), { recursive: true, force: true });
    for (const name of safeList(join(dataDir, 'blobs', 'staging'))) rmSync(join(dataDir, 'blobs', 'staging', name), { recursive: true, force: true });
    const temps = (dir: string) => safeList(dir).filter((n) => n.includes('.tmp-')).forEach((n) => removeTree(join(dir, n)));
    temps(join(dataDir, 'trees'));
    for (const ns of safeList(join(dataDir, 'apps'))) for (const app of safeList(join(dataDir, 'apps', ns))) temps(this.supervisor.releasesDir(ns, app));
  }

  /** Copies what the gateway needs (public, paused) from the app's current state. */
  async syncRoutes(namespace: string, name: string): Promise<void> {
    const app = await this.store.getApp(namespace, name);
    if (!app) {
      this.routes.deleteApp(namespace, name);
      return;
    }
    const routes = this.routes.ensureApp(namespace, name);
    const rev = app.currentRevision ? await this.store.getRevision(namespace, name, app.currentRevision) : undefined;
    const latest = rev ?? (await this.store.listRevisions(namespace, name)).at(-1);
    routes.public = latest?.spec.public ?? false;
    routes.paused = app.paused;
  }

  async close(): Promise<void> {
    clearInterval(this.heartbeat);
    await this.rollouts.waitAll().catch(() => {});
    await this.supervisor.shutdown(10_000);
  }
}

function safeList(dir: string): string[] {
  try {
    return readdirSync(dir);
  } catch {
    return [];
  }
}
