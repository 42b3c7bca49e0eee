import { randomBytes } from 'node:crypto';
import { mkdirSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { BlobStore } from '../blobs/blob-store.js';
import { removeTree } from '../blobs/materialize.js';
import type { Store } from '../store/store.js';
import type { AppRow, RevisionRow, RolloutRow, TokenRow } from '../store/types.js';
import { Sessions } from '../gateway/sessions.js';
import type { DataPlaneWorker, GatewayApp } from '../data-plane/protocol.js';
import { DurableTimers } from './durable-timers.js';
import { AppService } from './app-service.js';
import { TokenVerifier } from './auth.js';
import { BlobAccess } from './blob-access.js';
import { Quotas } from './quotas.js';
import type { Isolation } from './sandbox/isolation.js';
import { UploadGate } from './upload-gate.js';
import { SharedBlobs } from './shared-blobs.js';
import { EventLog } from './event-log.js';
import type { DataPlaneClient, RemoteLogHub } from './data-plane-client.js';
import { RolloutEngine } from './rollout-engine.js';
import { replaceKey, Supervisor } from './supervisor.js';
import type { Cgroups } from './resources/cgroups.js';
import type { NodeCapacity } from './resources/node-info.js';
import { Scheduler } from './resources/scheduler.js';
import { VolumeService } from './volume-service.js';
import { describeExit } from './worker-process.js';
import { listDir } from '../list-dir.js';
import { DEFAULT_DRAIN_TIMEOUT_MS, DEFAULT_STOP_GRACE_MS } from '../config/validate-config.js';

export interface ControlPlaneOptions {
  dataDir: string;
  /** The server's domains (`--domain`): apps' own hostnames are under them, so no app may claim one there. */
  domains: string[];
  /** How long a browser session made on an app's host lasts. */
  sessionTtlMs: number;
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
  readonly logs: RemoteLogHub;
  readonly tokens: TokenVerifier;
  /** Token rows by id (for sessions), as of the last syncTokens. */
  private tokenRows = new Map<string, TokenRow>();
  /** The dashboard's browser sessions (see dashboard.ts), once the session key is read. */
  sessions?: Sessions;
  readonly supervisor: Supervisor;
  readonly rollouts: RolloutEngine;
  readonly apps: AppService;
  readonly volumes: VolumeService;
  readonly blobAccess: BlobAccess;
  readonly quotas: Quotas;
  readonly uploads: UploadGate;
  readonly sharedBlobs: SharedBlobs;
  /** Work promised for later, kept in the store. */
  readonly timers: DurableTimers;
  private heartbeat?: NodeJS.Timeout;
  private recovering = true;
  /** Workers recovery found left over, draining before they stop (see retire). */
  private readonly retiring = new Set<Promise<unknown>>();
  private closing = false;

  constructor(
    readonly store: Store,
    /** The data plane: the port, the gateway and the worker processes. */
    readonly dp: DataPlaneClient,
    readonly opts: ControlPlaneOptions,
  ) {
    mkdirSync(opts.dataDir, { recursive: true });
    this.blobs = new BlobStore(join(opts.dataDir, 'blobs'));
    this.blobAccess = new BlobAccess(store, this.blobs);
    this.sharedBlobs = new SharedBlobs(store, this.blobs);
    this.quotas = new Quotas(store);
    this.uploads = new UploadGate(opts.maxConcurrentUploads);
    this.events = new EventLog(store);
    this.logs = dp.logs;
    this.tokens = new TokenVerifier(store);
    this.timers = new DurableTimers(store, this.events);
    this.supervisor = new Supervisor(
      store,
      this.blobs,
      dp,
      this.events,
      this.logs,
      { dataDir: opts.dataDir, workerHost: opts.workerHost, isolation: opts.isolation, scratchBytes: opts.scratchBytes, shared: this.sharedBlobs },
      new Scheduler(opts.node),
      opts.cgroups,
      this.timers,
    );
    this.rollouts = new RolloutEngine(store, this.supervisor, this.events, dp, this.timers);
    this.apps = new AppService(this);
    this.volumes = new VolumeService(this);
    dp.explain = (namespace, name) => {
      // While the server starts, every app's workers are on their way.
      if (this.recovering || this.supervisor.workerComing(namespace, name) || this.rollouts.updating(namespace, name)) return undefined;
      const why = this.rollouts.lastFailure.get(`${namespace}/${name}`) ?? 'it has no revision that serves';
      return `no worker of ${namespace}/${name} is running or starting (${why}); see \`molt app history --app ${name} -n ${namespace}\`, fix it and \`molt app update\``;
    };
  }

  /**
   * Brings the control plane back to what the store and the data plane say, after any start of it
   * (level-triggered, as Kubernetes controllers resume): workers the data plane still runs are
   * adopted untouched; those it lost are recorded as gone; unfinished rollouts are failed and
   * whatever they started that the app does not run is drained; probations go on to their
   * deadline (or end, or go back when their workers are gone); then every app gets its workers.
   */
  async recover(): Promise<void> {
    this.removeLeftovers();
    await this.sharedBlobs.fetchTrees();
    await this.blobAccess.backfill();
    await this.syncTokens();
    // When the previous control plane was last seen alive: what its probations were watched until.
    const lastSeen = Date.parse((await this.store.lastBeat(HEARTBEAT)) ?? '') || 0;
    await this.beat();
    this.heartbeat = setInterval(() => void this.beat().catch(() => {}), HEARTBEAT_MS);
    this.heartbeat.unref();
    // Only the control plane restarted when its data plane was up before it was last seen.
    const { startedAt, runtime } = await this.dp.info();
    const who = Date.parse(startedAt) < lastSeen ? 'the control plane' : 'the server';
    // Swaps under way finish first (the data plane carries them through): the release a worker runs says its revision.
    const running = new Map((await this.settledWorkers()).map((w) => [w.id, w]));
    // Rollouts under way go on (below) once their workers are known; their targets' workers are theirs.
    const rollouts = new Map((await this.store.listRunningRollouts()).map((r) => [`${r.namespace}/${r.app}`, r]));
    /** Apps whose rollout under way lost a worker while no control plane watched: going on is unsafe. */
    const crashedDuring = new Map<string, string>();
    const apps = await this.store.listApps();
    const byKey = new Map(apps.map((a) => [`${a.namespace}/${a.name}`, a]));
    const strays: { id: string; reason: string; drainTimeoutMs: number; stopGraceMs: number }[] = [];
    /** Adopted workers an older molt's worker runtime runs, by app: replaced one by one once recovered. */
    const outdated = new Map<string, { namespace: string; app: string; ids: string[]; rev: RevisionRow; from: string }>();
    const exited: string[] = [];
    /** Apps on probation a worker of whose upgraded revision crashed while no control plane watched. */
    const crashed = new Map<string, string>();
    for (const w of await this.store.listLiveWorkers()) {
      const info = running.get(w.id);
      running.delete(w.id);
      const app = byKey.get(`${w.namespace}/${w.app}`);
      if (info?.state === 'running' && w.status === 'RUNNING' && app) {
        // The release it runs decides its revision (a hot upgrade may have finished meanwhile).
        const revs = await this.store.listRevisions(w.namespace, w.app);
        const rollout = rollouts.get(`${w.namespace}/${w.app}`);
        const rev = [w.revision, rollout?.toRevision, app.currentRevision, app.permanentRevision].map((n) => revs.find((r) => r.revision === n && r.releaseId === info.releaseId)).find(Boolean);
        if (rev) {
          await this.supervisor.adopt(w, rev, info);
          // A swap to the target of the hot upgrade under way failed and no control plane heard it: the upgrade cannot go on (it is not tried twice).
          const swap = info.lastUpgrade;
          if (rollout?.strategy === 'hot' && swap && !swap.ok && swap.toRelease === revs.find((r) => r.revision === rollout.toRevision)?.releaseId) {
            crashedDuring.set(`${w.namespace}/${w.app}`, `worker ${w.id} could not upgrade: ${swap.error}`);
          }
          if (info.runtime !== runtime && rev.revision === app.currentRevision) {
            const key = `${w.namespace}/${w.app}`;
            const entry = outdated.get(key) ?? { namespace: w.namespace, app: w.app, ids: [], rev, from: info.runtime };
            entry.ids.push(w.id);
            outdated.set(key, entry);
          }
          if (rev.revision !== app.currentRevision && rev.revision !== app.permanentRevision && rev.revision !== rollout?.toRevision) strays.push({ id: w.id, reason: `its rollout was cut short when the control plane restarted; revision ${app.currentRevision} serves`, drainTimeoutMs: rev.spec.rollout.drainTimeoutMs, stopGraceMs: rev.spec.rollout.stopGraceMs });
          continue;
        }
      }
      if (!info && w.status === 'PENDING' && app) {
        // It was waiting for capacity: the next start of its revision waits on in its place.
        this.supervisor.keepPending([w]);
        continue;
      }
      if (info && info.state !== 'exited') {
        // Half-started (its start was the previous control plane's), draining (its stop was), or of no app: it goes,
        // drained first (it may have been routed still, or have requests in flight); recorded once it is gone.
        const detail = w.status === 'TERMINATING' ? (w.detail ?? 'stopped: it was draining when the control plane restarted') : 'stopped: the control plane restarted while it started';
        const policy = (await this.store.getRevision(w.namespace, w.app, w.revision))?.spec.rollout;
        this.retire(w.id, policy?.drainTimeoutMs ?? DEFAULT_DRAIN_TIMEOUT_MS, policy?.stopGraceMs ?? DEFAULT_STOP_GRACE_MS, () => this.store.setWorkerStatus(w.id, 'TERMINATED', { detailStatus: null, detail, deletedAt: new Date().toISOString() }));
        continue;
      }
      const exit = info?.exit;
      if (info) exited.push(info.id);
      const detail = exit ? `exited while the control plane was down (${describeExit(exit)})` : 'gone: its data plane stopped';
      const crash = !!exit && !exit.expected && w.status === 'RUNNING';
      await this.store.setWorkerStatus(w.id, crash ? 'ERROR' : 'TERMINATED', { detailStatus: null, detail, deletedAt: new Date().toISOString() });
      if (crash && app?.probationUntil && w.revision === app.currentRevision) crashed.set(`${w.namespace}/${w.app}`, `worker ${w.id} crashed during its probation`);
      const rollout = rollouts.get(`${w.namespace}/${w.app}`);
      // A rolling update's new worker, or any worker of a hot upgrade (each is the upgrade's).
      if (crash && rollout && (rollout.strategy === 'hot' || w.revision === rollout.toRevision)) crashedDuring.set(`${w.namespace}/${w.app}`, `worker ${w.id} crashed while the control plane was down (${describeExit(exit!)})`);
    }
    // Processes the store does not know as live: nothing decides for them, so they stop.
    for (const info of running.values()) if (info.state !== 'exited') this.retire(info.id, DEFAULT_DRAIN_TIMEOUT_MS, DEFAULT_STOP_GRACE_MS);
    // Exits are recorded now: the data plane may forget them.
    for (const id of exited) this.dp.forgetWorker(id);
    // A rollout that cannot go on (its revision or its plan is gone) fails, with the reason.
    const resumable = new Set<string>();
    for (const [key, r] of rollouts) {
      const app = byKey.get(key);
      if (app?.rolloutId === r.id && (await this.store.getRevision(r.namespace, r.app, r.toRevision))) {
        resumable.add(key);
        continue;
      }
      await this.failCutShort(r, app, who);
    }
    for (const app of apps) {
      // A lock whose rollout is over (or was never recorded) is released.
      if (!app.rolloutId || resumable.has(`${app.namespace}/${app.name}`) || (await this.store.getRollout(app.rolloutId))?.phase === 'running') continue;
      await this.store.updateApp(app.namespace, app.name, { rolloutId: null });
      // An update that died between recording its revision and its rollout: the revision will not run unless asked again.
      const last = (await this.store.listRevisions(app.namespace, app.name)).at(-1);
      if (last?.status === 'pending') await this.store.setRevisionStatus(app.namespace, app.name, last.revision, 'failed', `${who} stopped before its rollout started; run the update again`);
    }
    await this.dp.syncApps(await Promise.all(apps.map((a) => this.gatewayView(a))));
    for (const s of strays) await this.supervisor.stopWorker(s.id, { drainTimeoutMs: s.drainTimeoutMs, graceMs: s.stopGraceMs, reason: s.reason });
    for (const app of apps) {
      if (!app.probationUntil) continue;
      const key = `${app.namespace}/${app.name}`;
      const until = Date.parse(app.probationUntil);
      const upgraded = this.supervisor.workersOf(app.namespace, app.name).filter((w) => w.revision === app.currentRevision);
      // An update under way decides (a hot one starts a new probation, a rolling one ends it); if it fails, the probation goes on.
      if (resumable.has(key)) this.rollouts.watchProbation(app.namespace, app.name, app.probationUntil);
      else if (crashed.has(key)) await this.rollouts.revertProbation(app.namespace, app.name, crashed.get(key)!, 'ghosted');
      else if (upgraded.length > 0) this.rollouts.watchProbation(app.namespace, app.name, app.probationUntil);
      else if (until <= lastSeen) await this.rollouts.endProbation(app.namespace, app.name);
      else {
        const why = `the server stopped before revision ${app.currentRevision}'s probation ended (its workers stopped with it)`;
        await this.rollouts.revertProbation(app.namespace, app.name, why, 'failed');
      }
    }
    for (const key of resumable) {
      const r = rollouts.get(key)!;
      if (!(await this.rollouts.resume(r, `${who} restarted during the rollout`, crashedDuring.get(key)))) {
        await this.failCutShort(r, byKey.get(key), who);
        await this.store.updateApp(r.namespace, r.app, { rolloutId: null });
      }
    }
    this.recovering = false;
    // An app waiting out a crash backoff waits on (its timer is armed below), not replaced at once.
    const backingOff = new Set((await this.store.listTimers()).map((t) => t.key));
    await Promise.all(apps.filter((a) => !backingOff.has(replaceKey(a.namespace, a.name))).map((app) => this.supervisor.reconcile(app.namespace, app.name).catch(() => {})));
    // PENDING workers no start took and no rollout under way will: nothing wants them any more.
    for (const left of this.supervisor.pendingLeft()) {
      const [namespace, app, revision] = left.split('/');
      if (rollouts.get(`${namespace}/${app}`)?.toRevision !== Number(revision) && !backingOff.has(replaceKey(namespace!, app!))) {
        await this.supervisor.dropPending(namespace!, app!, Number(revision), 'the app no longer wants it after the restart');
      }
    }
    await this.timers.resume();
    // A newer molt took over workers an older one started: the runtime they run is not this molt's
    // (a hot upgrade changes an app's modules, never the runtime that loads them), so each is replaced
    // by a fresh worker, one at a time per app, never left to run the old runtime for ever.
    for (const { namespace, app, ids, rev, from } of outdated.values()) {
      await this.events.append({ namespace, app, level: 'warn', type: 'runtime.changed', message: `the worker runtime changed (${from} → ${runtime}): replacing ${ids.length} worker(s) one at a time` });
      void (async () => {
        for (const id of ids) if (!this.closing) await this.rollouts.recycle(namespace, app, id, rev, { message: `runs worker runtime ${from}, this molt's is ${runtime}`, reason: 'the worker runtime changed' });
      })().catch((err) => this.events.internalError(namespace, app, err));
    }
  }

  /** Ends a rollout that a restart (of `who`) cut short and that cannot go on, saying what serves. */
  private async failCutShort(r: RolloutRow, app: AppRow | undefined, who: string): Promise<void> {
    const serving = app?.currentRevision ? `revision ${app.currentRevision} keeps serving` : 'the app has no revision that served: fix it, then `molt app update`';
    const reason = `${who} restarted during the rollout and it cannot go on; ${serving}`;
    const target = await this.store.getRevision(r.namespace, r.app, r.toRevision);
    if (target && (target.status === 'pending' || target.status === 'deploying')) await this.store.setRevisionStatus(r.namespace, r.app, r.toRevision, 'failed', reason);
    this.rollouts.lastFailure.set(`${r.namespace}/${r.app}`, reason);
    await this.events.finishRollout(r.id, 'failed', reason, { namespace: r.namespace, app: r.app, level: 'warn', type: 'rollout.failed', message: `rollout to revision ${r.toRevision} failed: ${reason}` });
  }

  /** The data plane's workers once none is swapping modules (bounded: a swap has its own timeout). */
  private async settledWorkers(): Promise<DataPlaneWorker[]> {
    const until = Date.now() + 60_000;
    for (;;) {
      const workers = await this.dp.listWorkers();
      if (!workers.some((w) => w.upgrading) || Date.now() > until) return workers;
      await new Promise((r) => setTimeout(r, 100));
    }
  }

  private beat(): Promise<void> {
    return this.store.beat(HEARTBEAT, new Date().toISOString());
  }

  /**
   * What a control plane that died mid-way left in the data dir (only it writes these, so nothing
   * of this is in use): staged uploads, half-built trees. Workers' run directories are the data plane's.
   */
  private removeLeftovers(): void {
    const { dataDir } = this.opts;
    // Where link directories lived before each worker had a run directory.
    rmSync(join(dataDir, 'links'), { recursive: true, force: true });
    for (const name of listDir(join(dataDir, 'blobs', 'staging'))) rmSync(join(dataDir, 'blobs', 'staging', name), { recursive: true, force: true });
    const temps = (dir: string) => listDir(dir).filter((n) => n.includes('.tmp-')).forEach((n) => removeTree(join(dir, n)));
    temps(join(dataDir, 'trees'));
    for (const ns of listDir(join(dataDir, 'apps'))) for (const app of listDir(join(dataDir, 'apps', ns))) temps(this.supervisor.releasesDir(ns, app));
  }

  /** Copies what the gateway needs (public, paused) from the app's current state to the data plane. */
  async syncRoutes(namespace: string, name: string): Promise<void> {
    const app = await this.store.getApp(namespace, name);
    if (!app) return this.dp.deleteApp(namespace, name);
    return this.dp.setApp(await this.gatewayView(app));
  }

  private async gatewayView(app: AppRow): Promise<GatewayApp> {
    const rev = app.currentRevision ? await this.store.getRevision(app.namespace, app.name, app.currentRevision) : undefined;
    const latest = rev ?? (await this.store.listRevisions(app.namespace, app.name)).at(-1);
    const domains = (await this.store.listDomains()).filter((d) => d.namespace === app.namespace && d.app === app.name).map((d) => d.domain);
    return { namespace: app.namespace, name: app.name, public: latest?.spec.public ?? false, paused: app.paused, domains };
  }

  /** Gives the gateway the token rows it checks requests against (after any change to them), and the key of browser sessions. */
  async syncTokens(): Promise<void> {
    this.tokens.invalidate();
    const key = await this.store.setting('session-key', randomBytes(32).toString('base64'));
    const rows = await this.store.listTokens();
    this.tokenRows = new Map(rows.map((r) => [r.id, r]));
    this.sessions ??= new Sessions({ key: Buffer.from(key, 'base64'), ttlMs: this.opts.sessionTtlMs }, (id) => this.tokenRows.get(id));
    await this.dp.setTokens(rows, { key, ttlMs: this.opts.sessionTtlMs });
  }

  /** Drains and stops a worker no one wants, in the background (recovery does not wait on its drain); `then` once it is gone. */
  private retire(id: string, drainMs: number, graceMs: number, then?: () => Promise<unknown>): void {
    const done = this.dp
      .retireWorker(id, drainMs, graceMs)
      .then(then)
      .catch(() => {})
      .finally(() => this.retiring.delete(done));
    this.retiring.add(done);
  }

  /**
   * Stops: rollouts under way finish, then every worker is drained and stopped — unless the
   * workers are kept for the next server to adopt, when nothing is waited for and nothing is
   * stopped: the next control plane resumes from the store and the workers, as after a crash.
   */
  async close(opts: { keepWorkers?: boolean } = {}): Promise<void> {
    this.closing = true;
    clearInterval(this.heartbeat);
    this.timers.close();
    if (opts.keepWorkers) return this.supervisor.detach();
    await Promise.allSettled(this.retiring);
    await this.rollouts.waitAll().catch(() => {});
    await this.supervisor.shutdown(10_000);
  }
}
