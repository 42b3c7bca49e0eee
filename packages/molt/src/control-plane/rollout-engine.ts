import { MoltError } from '../errors.js';
import { newId } from '../ids.js';
import type { Store } from '../store/store.js';
import type { AppRow, RevisionRow, RolloutProgress, RolloutRow, WorkerRow } from '../store/types.js';
import { generatePlan } from '../release/upgrade-plan.js';
import type { EventLog } from './event-log.js';
import type { Supervisor } from './supervisor.js';
import type { DataPlaneClient } from './data-plane-client.js';
import type { UpgradeInstruction } from '../runtime/control-messages.js';
import type { DurableTimers } from './durable-timers.js';

/** The timer kind of a recycle waiting for its app's lock. */
const RECYCLE = 'recycle';

/** How a rollout goes on after a restart: what crashed meanwhile, how far its canary got. */
interface Resumed {
  crashed?: string;
  canary?: Extract<RolloutProgress, { kind: 'hot' }>['canary'];
}

/**
 * Rolling replacement of an app's workers by those of a new revision.
 *
 *   start ≤ surge new ──▶ all ready? ──no──▶ abort: remove new, keep old, revision failed
 *        ▲                    │yes
 *        └── drain old ◀──────┘   (ready workers never drop below min(old, desired) − maxUnavailable)
 *
 * The app's rollout lock (`apps.rolloutId`) is taken in the store before anything starts, so a
 * second update of the same app gets 409 even from another control plane.
 */
/** What a hot rollout needs besides the target revision: where it comes from and the plan. */
export interface HotRollout {
  from: RevisionRow;
  /** The steps to the target and back. */
  up: UpgradeInstruction[];
  down: UpgradeInstruction[];
  /** `down` for a rollback to an older release (its codeChange is told so). */
  direction: 'up' | 'down';
}

const sameEnv = (a: Record<string, string>, b: Record<string, string>) => JSON.stringify(Object.entries(a).sort()) === JSON.stringify(Object.entries(b).sort());

const DEFAULT_HOT = { canaryWindowMs: 1000, suspendTimeoutMs: 5000, maxRetainedModules: 2000, permanentAfterMs: 10_000 };
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Why a worker is recycled: what the event says of it (`worker <id> <message>: replacing it…`), and the reason its stop records. */
export interface RecycleReason {
  message: string;
  reason: string;
}

export class RolloutEngine {
  private readonly running = new Map<string, Promise<void>>();
  /** Apps whose rollout lock this control plane holds. */
  private readonly locked = new Set<string>();
  /** Why each app's last rollout failed, until one succeeds (what the gateway says when no worker serves). */
  readonly lastFailure = new Map<string, string>();
  /** The timer of each app's probation (its deadline is in the store: `apps.probationUntil`). */
  private readonly probationTimers = new Map<string, NodeJS.Timeout>();

  constructor(
    private readonly store: Store,
    private readonly supervisor: Supervisor,
    private readonly events: EventLog,
    private readonly dp: DataPlaneClient,
    private readonly timers: DurableTimers,
  ) {
    timers.on(RECYCLE, async (t) => {
      const { workerId, revision, message, reason } = t.payload as { workerId: string; revision: number; message: string; reason: string };
      const rev = await this.store.getRevision(t.namespace, t.app, revision);
      if (rev) await this.recycle(t.namespace, t.app, workerId, rev, { message, reason });
    });
    supervisor.onCrash((w) => void this.probationCrash(w).catch((err) => this.events.internalError(w.namespace, w.app, err)));
  }

  /** Takes the app's rollout lock or throws 409 naming the rollout in progress. */
  async claim(app: AppRow): Promise<string> {
    const id = newId();
    if (await this.store.claimRollout(app.namespace, app.name, id)) this.locked.add(`${app.namespace}/${app.name}`);
    else {
      const current = await this.store.getApp(app.namespace, app.name);
      throw new MoltError(
        'MOLT_ERR_ROLLOUT_IN_PROGRESS',
        `app ${app.namespace}/${app.name} is being updated (rollout ${current?.rolloutId ?? 'unknown'}); wait for it to finish, then retry`,
      );
    }
    return id;
  }

  /** Releases the app's rollout lock, with the app's other changes in the same write. */
  private async unlock(namespace: string, app: string, patch: Partial<AppRow> = {}): Promise<void> {
    await this.store.updateApp(namespace, app, { ...patch, rolloutId: null });
    this.locked.delete(`${namespace}/${app}`);
  }

  /** Whether this control plane is updating the app (so its workers are on their way). */
  updating(namespace: string, app: string): boolean {
    return this.locked.has(`${namespace}/${app}`);
  }

  /**
   * Takes the app's lock once no rollout holds it, for work of the engine's own (a probation going
   * back, a recycle): waits for an update under way, then asks `still` whether the work is still
   * wanted. Undefined when it is not.
   */
  private async claimWhenFree(namespace: string, app: string, still: (row: AppRow) => boolean): Promise<{ row: AppRow; rolloutId: string } | undefined> {
    for (;;) {
      const row = await this.store.getApp(namespace, app);
      if (row?.rolloutId) {
        await this.finished(row.rolloutId, 500);
        continue;
      }
      if (!row || !still(row)) return undefined;
      try {
        return { row, rolloutId: await this.claim(row) };
      } catch (err) {
        // Another update took it between the read and the claim: wait for that one.
        if (!(err instanceof MoltError && err.code === 'MOLT_ERR_ROLLOUT_IN_PROGRESS')) throw err;
      }
    }
  }

  /** Records a rollout that runs now under a lock just taken. */
  private async recordRollout(id: string, namespace: string, app: string, fromRevision: number, toRevision: number, strategy: RolloutRow['strategy']): Promise<RolloutRow> {
    const rollout: RolloutRow = { id, namespace, app, fromRevision, toRevision, strategy, phase: 'running', reason: null, createdAt: new Date().toISOString(), finishedAt: null };
    await this.store.insertRollout(rollout);
    return rollout;
  }

  /** Releases a claimed lock when the update is refused before its rollout starts. */
  async release(app: AppRow): Promise<void> {
    await this.unlock(app.namespace, app.name);
  }

  /** Records the rollout (lock already held) and runs it in the background. */
  async start(rolloutId: string, app: AppRow, to: RevisionRow, hot?: HotRollout): Promise<RolloutRow> {
    const rollout = await this.recordRollout(rolloutId, app.namespace, app.name, app.currentRevision, to.revision, hot ? 'hot' : 'rolling');
    // What a control plane that starts again needs to go on with it, written before any step.
    if (hot) await this.store.setRolloutProgress(rolloutId, { kind: 'hot', up: hot.up, down: hot.down, direction: hot.direction });
    this.launch(rollout, to, hot);
    return rollout;
  }

  /** Ends a rollout with its final event (`rollout.succeeded` or `rollout.failed`), written with it. */
  private finish(rollout: RolloutRow, phase: 'succeeded' | 'failed', reason: string | null, message: string) {
    return this.events.finishRollout(rollout.id, phase, reason, { namespace: rollout.namespace, app: rollout.app, type: `rollout.${phase}`, message, level: phase === 'failed' ? 'error' : 'info' });
  }

  /** Runs a recorded rollout in the background, from its start or from where a restart cut it short. */
  private launch(rollout: RolloutRow, to: RevisionRow, hot?: HotRollout, resumed?: Resumed): void {
    const app = { namespace: rollout.namespace, name: rollout.app };
    // A bug in a rollout (an illegal transition, a store error) is an error event, not a crash of the server that serves every app.
    // The revision is deploying from the rollout's first step on; one resumed before that step is still pending.
    const deploying = to.status === 'pending' ? this.store.setRevisionStatus(app.namespace, app.name, to.revision, 'deploying') : Promise.resolve();
    const run = deploying
      .then(() => (hot ? this.runHot(rollout, to, hot, resumed) : this.run(rollout, to, resumed)))
      .catch(async (err) => {
        this.events.internalError(app.namespace, app.name, err);
        // The app is not left locked: the lock goes and the rollout ends failed (if it had not ended).
        const reason = `internal error: ${err instanceof Error ? err.message : String(err)}`;
        await this.unlock(app.namespace, app.name).catch(() => {});
        await this.finish(rollout, 'failed', reason, `revision ${to.revision} failed: ${reason}`).catch(() => {});
      });
    void this.track(rollout.id, run);
  }

  /**
   * Goes on with a rollout that a control plane which died left running, its lock still held:
   * level-triggered, from what the store and the data plane say now. A rolling update counts the
   * target revision's workers already ready as done and drains what is left of the old ones; a hot
   * upgrade takes the workers already on the new release as upgraded (and finishes its canary's
   * watch to the deadline it wrote) and upgrades the rest; a recycle replaces its worker if it still
   * runs. Where going on is unsafe (a worker of the update crashed meanwhile) the rollout aborts as
   * it would have, with the reason. Returns false when the rollout cannot be resumed at all.
   */
  async resume(rollout: RolloutRow, why: string, crashed?: string): Promise<boolean> {
    const { namespace, app } = rollout;
    const [to, progress] = await Promise.all([this.store.getRevision(namespace, app, rollout.toRevision), this.store.getRolloutProgress(rollout.id)]);
    if (!to) return false;
    const key = `${namespace}/${app}`;
    this.locked.add(key);
    const ev = (type: string, message: string, level: 'info' | 'warn' = 'warn') => this.events.append({ namespace, app, rolloutId: rollout.id, type, message, level });
    if (progress?.kind === 'recycle') {
      await ev('rollout.resumed', `${why}: resuming the recycle of worker ${progress.workerId}`);
      void this.track(rollout.id, this.replaceWorker(namespace, app, progress.workerId, to, progress, rollout.id, true));
      return true;
    }
    const mine = this.supervisor.workersOf(namespace, app);
    const done = mine.filter((w) => w.revision === to.revision).length;
    if (rollout.strategy === 'hot') {
      const from = await this.store.getRevision(namespace, app, rollout.fromRevision);
      if (!from || progress?.kind !== 'hot') {
        this.locked.delete(key);
        return false;
      }
      const hot: HotRollout = { from, up: progress.up as UpgradeInstruction[], down: progress.down as UpgradeInstruction[], direction: progress.direction };
      await ev('rollout.resumed', `${why}: resuming the hot upgrade to revision ${to.revision}: ${done} of ${mine.length} worker(s) upgraded${crashed ? `, but ${crashed}` : ''}`);
      this.launch(rollout, to, hot, { crashed, canary: progress.canary });
    } else {
      await ev('rollout.resumed', `${why}: resuming the rolling update to revision ${to.revision}: ${done} of ${to.spec.workers} new worker(s) ready, ${mine.length - done} old to replace${crashed ? `, but ${crashed}` : ''}`);
      this.launch(rollout, to, undefined, { crashed });
    }
    return true;
  }

  /** Keeps a rollout's work until it ends, for `finished` and `waitAll` (a stop waits for it). */
  private track(rolloutId: string, work: Promise<void>): Promise<void> {
    const tracked = work.finally(() => this.running.delete(rolloutId));
    this.running.set(rolloutId, tracked);
    return tracked;
  }

  /** Resolves when that rollout has finished here, or after `pollMs` if it runs elsewhere. */
  async finished(rolloutId: string, pollMs: number): Promise<void> {
    const run = this.running.get(rolloutId);
    if (run) await run.catch(() => {});
    else await new Promise((r) => setTimeout(r, pollMs));
  }

  /** Resolves when every running rollout has finished (shutdown). */
  async waitAll(): Promise<void> {
    await Promise.all(this.running.values());
  }

  private async run(rollout: RolloutRow, to: RevisionRow, resumed?: Resumed): Promise<void> {
    const { namespace, app } = rollout;
    const ev = (type: string, message: string, level: 'info' | 'warn' | 'error' = 'info') =>
      this.events.append({ namespace, app, rolloutId: rollout.id, type, message, level });
    const { workers: desired } = to.spec;
    const { maxSurge, maxUnavailable, drainTimeoutMs, stopGraceMs } = to.spec.rollout;
    // The target's workers are new (only a resumed rollout finds some ready already); the rest are old.
    const mine = this.supervisor.workersOf(namespace, app);
    const olds = mine.filter((w) => w.revision !== to.revision).map((w) => w.id);
    const news: string[] = mine.filter((w) => w.revision === to.revision).map((w) => w.id);
    const stops: Promise<void>[] = [];
    let crash: string | undefined = resumed?.crashed;
    const unsubscribe = this.supervisor.onCrash((w) => {
      if (news.includes(w.id)) crash = `new worker ${w.id} crashed after it became ready`;
    });

    if (!resumed) {
      await ev(
        'rollout.started',
        rollout.fromRevision === 0
          ? `deploying revision ${to.revision}: ${desired} worker(s)`
          : `rolling update from revision ${rollout.fromRevision} to ${to.revision}: ${olds.length} → ${desired} worker(s), surge ${maxSurge}, max unavailable ${maxUnavailable}`,
      );
    }
    try {
      if (crash) throw new Error(crash);
      const floor = Math.max(0, Math.min(desired, olds.length) - maxUnavailable);
      while (news.length < desired || olds.length > 0) {
        const room = Math.max(desired, olds.length) + maxSurge - (olds.length + news.length);
        const count = Math.min(desired - news.length, Math.max(0, room));
        if (count > 0) {
          const started = await Promise.allSettled(Array.from({ length: count }, () => this.supervisor.startWorker(to, rollout.id)));
          for (const s of started) if (s.status === 'fulfilled') news.push(s.value.id);
          const failed = started.find((s): s is PromiseRejectedResult => s.status === 'rejected');
          if (failed) throw failed.reason;
        }
        if (crash) throw new Error(crash);
        const removable = news.length >= desired ? olds.length : Math.max(0, olds.length + news.length - floor);
        if (removable === 0 && count === 0) throw new Error('rollout cannot progress: raise rollout.maxSurge or rollout.maxUnavailable');
        for (const id of olds.splice(0, removable)) {
          stops.push(this.supervisor.stopWorker(id, { drainTimeoutMs, graceMs: stopGraceMs, rolloutId: rollout.id, reason: `replaced by revision ${to.revision}` }));
        }
      }
      await Promise.all(stops);
      if (crash) throw new Error(crash);
      const previous = rollout.fromRevision;
      await this.unlock(namespace, app, { currentRevision: to.revision, permanentRevision: null, probationUntil: null });
      await this.store.setRevisionStatus(namespace, app, to.revision, 'active');
      if (previous > 0) await this.store.setRevisionStatus(namespace, app, previous, 'superseded');
      this.lastFailure.delete(`${namespace}/${app}`);
      await this.finish(rollout, 'succeeded', null, `revision ${to.revision} serves all traffic`);
    } catch (err) {
      const reason = err instanceof Error ? err.message : String(err);
      const serving = rollout.fromRevision > 0 ? `revision ${rollout.fromRevision} keeps serving` : 'the app has no revision that serves yet';
      await ev('rollout.aborting', `rollout aborted: ${reason}; removing new workers, ${serving}`, 'error');
      this.lastFailure.set(`${namespace}/${app}`, `revision ${to.revision} failed: ${reason}`);
      await Promise.all(news.map((id) => this.supervisor.stopWorker(id, { drainTimeoutMs, graceMs: stopGraceMs, rolloutId: rollout.id, reason: 'rollout aborted' })));
      await Promise.all(stops);
      await this.store.setRevisionStatus(namespace, app, to.revision, 'failed', reason);
      await this.supervisor.dropPending(namespace, app, to.revision, 'its rollout was aborted');
      await this.unlock(namespace, app);
      await this.finish(rollout, 'failed', reason, `revision ${to.revision} failed: ${reason}`);
      // Old workers drained during the rollout are replaced so the app is back to its size.
      await this.supervisor.reconcile(namespace, app).catch(() => {});
    } finally {
      unsubscribe();
    }
  }

  /**
   * A hot upgrade: each worker in turn loads the new release in place (UPGRADING while it swaps);
   * the first is a canary watched for `hot.canaryWindowMs` (crash, 5xx). If any worker fails, the
   * ones already upgraded go back with the `down` plan and the revision fails; its release is not
   * tried hot again until the user asks (`molt app update --retry`).
   */
  private async runHot(rollout: RolloutRow, to: RevisionRow, hot: HotRollout, resumed?: Resumed): Promise<void> {
    const { namespace, app } = rollout;
    const from = hot.from;
    const opts = { ...DEFAULT_HOT, ...to.spec.hot };
    const ev = (type: string, message: string, level: 'info' | 'warn' | 'error' = 'info', workerId: string | null = null) =>
      this.events.append({ namespace, app, rolloutId: rollout.id, workerId, type, message, level });
    // The order `worker list` shows: oldest first; the first is the canary.
    const workers = this.supervisor
      .workersOf(namespace, app)
      .sort((a, b) => (a.createdAt === b.createdAt ? (a.id < b.id ? -1 : 1) : a.createdAt < b.createdAt ? -1 : 1))
      .map((w) => w.id);
    // Workers already on the target's release: a resumed upgrade had upgraded them before the restart.
    const upgraded: string[] = this.supervisor.workersOf(namespace, app).filter((w) => w.revision === to.revision).map((w) => w.id);
    const overBudget: string[] = [];
    let crash: string | undefined = resumed?.crashed;
    const crashed = (id: string) => `worker ${id} crashed during the hot upgrade`;
    const unsubscribe = this.supervisor.onCrash((w) => {
      if (workers.includes(w.id)) crash = crashed(w.id);
    });
    const timeoutMs = opts.suspendTimeoutMs + 30_000;
    // An env change goes in place only through the entry's configChange (the plan checked it exists).
    const envChanged = !sameEnv(from.spec.env, to.spec.env);
    const envChange = envChanged ? { env: { from: from.spec.env, to: to.spec.env } } : {};
    const envBack = envChanged ? { env: { from: to.spec.env, to: from.spec.env } } : {};
    if (!resumed) {
      await ev(
        'rollout.started',
        `hot upgrade from revision ${from.revision} to ${to.revision} (release ${from.releaseId.slice(0, 12)} → ${to.releaseId.slice(0, 12)}): ${workers.length} worker(s), one at a time, ${hot.up.length} step(s)`,
      );
    }
    const progress = (canary?: Extract<RolloutProgress, { kind: 'hot' }>['canary']) =>
      this.store.setRolloutProgress(rollout.id, { kind: 'hot', up: hot.up, down: hot.down, direction: hot.direction, canary });
    /**
     * Watches the canary until its deadline, which is written first: a control plane that starts
     * again watches on to the same deadline, counting 5xx from the same start.
     */
    const watchCanary = async (id: string, watch?: { until: string; serverErrorsBefore: number }) => {
      const serverErrors = async () => (await this.dp.targetStats([id]).catch(() => ({}) as Record<string, { serverErrors: number }>))[id]?.serverErrors ?? 0;
      const w = watch ?? { until: new Date(Date.now() + opts.canaryWindowMs).toISOString(), serverErrorsBefore: await serverErrors() };
      if (!watch) {
        await progress({ workerId: id, ...w });
        await ev('worker.canary', `worker ${id} is the canary: its 5xx answers are watched until ${w.until}`, 'info', id);
      }
      const until = Date.parse(w.until);
      while (Date.now() < until && !crash) await sleep(Math.min(100, until - Date.now()));
      const now = await serverErrors();
      // A data plane that started again counts from zero.
      const errors = now >= w.serverErrorsBefore ? now - w.serverErrorsBefore : now;
      if (!crash && errors > 0) throw new Error(`canary worker ${id} answered ${errors} request(s) with a 5xx status within ${opts.canaryWindowMs} ms`);
      await progress({ workerId: id, ...w, done: true });
      if (!crash) await ev('worker.canary.passed', `canary worker ${id} answered no request with a 5xx status; the other workers follow`, 'info', id);
    };
    try {
      if (crash) throw new Error(crash);
      // Materialized before the first swap (usually at upload already), not during it.
      await this.supervisor.releaseDir(namespace, app, to.releaseId);
      const canary = resumed?.canary;
      if (canary && !canary.done && upgraded.includes(canary.workerId)) await watchCanary(canary.workerId, canary);
      else if (!canary && upgraded.length > 0 && opts.canaryWindowMs > 0) await watchCanary(upgraded[0]!);
      for (const id of workers) {
        if (upgraded.includes(id)) continue;
        const logged = ev('worker.upgrading', `worker ${id} upgrading in place${upgraded.length === 0 ? ' (canary)' : ''}`, 'info', id);
        const r = await this.supervisor.upgradeWorker(
          id,
          to.revision,
          { toRelease: to.releaseId, direction: hot.direction, instructions: hot.up, suspendTimeoutMs: opts.suspendTimeoutMs, ...envChange },
          timeoutMs,
          { fromRelease: from.releaseId, downInstructions: hot.down },
        );
        await logged;
        if (!r.ok) {
          // A worker that died under the upgrade (its exit comes from the data plane, maybe just after the answer): that is the reason.
          if (crash || (await this.supervisor.exitsWithin(id, 300))) throw new Error(crash ?? crashed(id));
          throw new Error(`worker ${id} could not upgrade: ${r.phase} failed${r.module ? ` in ${r.module}` : ''}: ${r.error}`);
        }
        upgraded.push(id);
        if (r.retainedModules > opts.maxRetainedModules) overBudget.push(id);
        const steps = r.phases ? `: loaded ${r.phases.loadMs} ms, suspended ${r.phases.suspendMs} ms, migrated ${r.phases.migrateMs} ms, swapped ${r.phases.swapMs} ms` : '';
        await ev('worker.upgraded', `worker ${id} runs release ${to.releaseId.slice(0, 12)} (swap ${r.durationMs.toFixed(1)} ms${steps})`, 'info', id);
        if (upgraded.length === 1 && opts.canaryWindowMs > 0) await watchCanary(id);
        if (crash) throw new Error(crash);
      }
      // The new revision serves; it becomes permanent (what restarting workers boot) once it has run
      // healthy to the end of its probation, a deadline kept in the store.
      const permanent = (await this.store.getApp(namespace, app))?.permanentRevision ?? from.revision;
      const probationUntil = new Date(Date.now() + opts.permanentAfterMs).toISOString();
      await this.unlock(namespace, app, { currentRevision: to.revision, permanentRevision: permanent, probationUntil });
      await this.store.setRevisionStatus(namespace, app, to.revision, 'active');
      if (from.revision > 0) await this.store.setRevisionStatus(namespace, app, from.revision, 'superseded');
      await this.finish(rollout, 'succeeded', null, `revision ${to.revision} serves all traffic (hot: no worker restarted)`);
      this.watchProbation(namespace, app, probationUntil);
      for (const id of overBudget) await this.queueRecycle(namespace, app, id, to, { message: `retains more than ${opts.maxRetainedModules} module versions`, reason: 'too many retained module versions' });
    } catch (err) {
      const reason = err instanceof Error ? err.message : String(err);
      await ev('rollout.aborting', `hot upgrade aborted: ${reason}; downgrading ${upgraded.length} upgraded worker(s) in place`, 'error');
      for (const id of [...upgraded].reverse()) {
        const r = await this.supervisor.upgradeWorker(
          id,
          from.revision,
          { toRelease: from.releaseId, direction: hot.direction === 'up' ? 'down' : 'up', instructions: hot.down, suspendTimeoutMs: opts.suspendTimeoutMs, ...envBack },
          timeoutMs,
          { fromRelease: to.releaseId, downInstructions: hot.up },
        );
        if (r.ok) await ev('worker.downgraded', `worker ${id} is back on release ${from.releaseId.slice(0, 12)}`, 'warn', id);
        else {
          await ev('worker.downgrade.failed', `worker ${id} could not downgrade (${r.phase}: ${r.error}); replacing it`, 'error', id);
          await this.supervisor.stopWorker(id, { drainTimeoutMs: to.spec.rollout.drainTimeoutMs, graceMs: to.spec.rollout.stopGraceMs, rolloutId: rollout.id, reason: 'downgrade failed' });
        }
      }
      await this.store.setRevisionStatus(namespace, app, to.revision, 'ghosted', reason);
      await this.unlock(namespace, app);
      await this.finish(rollout, 'failed', reason, `revision ${to.revision} failed: ${reason}; release ${to.releaseId.slice(0, 12)} is not tried hot again until \`molt app update --retry\``);
      await this.supervisor.reconcile(namespace, app).catch(() => {});
    } finally {
      unsubscribe();
    }
  }

  /** Ends the probation when its deadline comes (or at once if it has passed). */
  watchProbation(namespace: string, app: string, until: string): void {
    const key = `${namespace}/${app}`;
    clearTimeout(this.probationTimers.get(key));
    const timer = setTimeout(() => {
      this.probationTimers.delete(key);
      void this.endProbation(namespace, app).catch((err) => this.events.internalError(namespace, app, err));
    }, Math.max(0, Date.parse(until) - Date.now()));
    timer.unref();
    this.probationTimers.set(key, timer);
  }

  /**
   * OTP's current vs permanent: a hot-upgraded revision is permanent once it has run healthy to
   * the end of its probation (`hot.permanentAfterMs`). Called at the deadline; level-triggered:
   * it reads what the store says now.
   */
  async endProbation(namespace: string, app: string): Promise<void> {
    const row = await this.store.getApp(namespace, app);
    if (!row?.probationUntil) return;
    if (Date.parse(row.probationUntil) > Date.now()) return this.watchProbation(namespace, app, row.probationUntil);
    if (row.rolloutId) {
      // An update is under way: it decides (a hot one starts a new probation, a rolling one ends it).
      await this.finished(row.rolloutId, 500);
      return this.endProbation(namespace, app);
    }
    await this.store.updateApp(namespace, app, { permanentRevision: null, probationUntil: null });
    await this.events.append({ namespace, app, type: 'revision.permanent', message: `revision ${row.currentRevision} is permanent: it ran healthy to the end of its probation` });
  }

  /** A worker of an app on probation crashed: the upgraded revision did not hold, so the app goes back. */
  private async probationCrash(w: WorkerRow): Promise<void> {
    const row = await this.store.getApp(w.namespace, w.app);
    // Only a worker running the revision on probation speaks against it (not one of an update under way).
    if (!row?.probationUntil || row.permanentRevision === null || w.revision !== row.currentRevision) return;
    await this.revertProbation(w.namespace, w.app, `worker ${w.id} crashed during its probation`, 'ghosted');
  }

  /**
   * Ends a probation that did not hold: the app goes back to its permanent revision, as OTP boots
   * the permanent release. The upgraded revision is marked `status` with the reason; its workers go
   * back in place with the down plan (a worker that cannot is replaced); then the app is brought
   * back to its size on the permanent revision. Takes the rollout lock, waiting for an update under way.
   */
  async revertProbation(namespace: string, app: string, why: string, status: 'failed' | 'ghosted'): Promise<void> {
    const claimed = await this.claimWhenFree(namespace, app, (row) => !!row.probationUntil && row.permanentRevision !== null);
    if (!claimed) return;
    const { row, rolloutId } = claimed;
    const [current, permanent] = await Promise.all([
      this.store.getRevision(namespace, app, row.currentRevision),
      this.store.getRevision(namespace, app, row.permanentRevision!),
    ]);
    if (!current || !permanent) return this.unlock(namespace, app);
    const reason = `${why}; revision ${permanent.revision}, the permanent one, serves again`;
    await this.recordRollout(rolloutId, namespace, app, current.revision, permanent.revision, 'hot');
    const ev = (type: string, message: string, level: 'info' | 'warn' | 'error' = 'warn', workerId: string | null = null) =>
      this.events.append({ namespace, app, rolloutId, workerId, type, message, level });
    await ev('revision.not-permanent', `revision ${current.revision} is not made permanent: ${reason}`, 'error');
    // Unless a revert cut short by a restart already marked it. The permanent revision's own release is not ghosted by going back to it.
    if (current.status === 'active') await this.store.setRevisionStatus(namespace, app, current.revision, current.releaseId === permanent.releaseId ? 'failed' : status, reason);
    const [fromRelease, toRelease] = await Promise.all([this.store.getRelease(namespace, current.releaseId), this.store.getRelease(namespace, permanent.releaseId)]);
    const upgraded = this.supervisor.workersOf(namespace, app).filter((w) => w.revision !== permanent.revision);
    if (upgraded.length > 0 && fromRelease && toRelease) {
      const plan = generatePlan({ id: toRelease.id, manifest: toRelease.manifest, spec: permanent.spec }, { id: fromRelease.id, manifest: fromRelease.manifest, spec: current.spec });
      const opts = { ...DEFAULT_HOT, ...current.spec.hot };
      const env = sameEnv(current.spec.env, permanent.spec.env) ? {} : { env: { from: current.spec.env, to: permanent.spec.env } };
      await this.supervisor.releaseDir(namespace, app, permanent.releaseId);
      for (const w of upgraded) {
        const r = await this.supervisor.upgradeWorker(
          w.id,
          permanent.revision,
          { toRelease: permanent.releaseId, direction: 'down', instructions: plan.down, suspendTimeoutMs: opts.suspendTimeoutMs, ...env },
          opts.suspendTimeoutMs + 30_000,
          { fromRelease: current.releaseId, downInstructions: plan.up },
        );
        if (r.ok) await ev('worker.downgraded', `worker ${w.id} is back on revision ${permanent.revision} in place`, 'warn', w.id);
        else {
          await ev('worker.downgrade.failed', `worker ${w.id} could not go back in place (${r.phase}: ${r.error}); replacing it`, 'error', w.id);
          await this.supervisor.stopWorker(w.id, { drainTimeoutMs: permanent.spec.rollout.drainTimeoutMs, graceMs: permanent.spec.rollout.stopGraceMs, rolloutId, reason: 'could not go back to the permanent revision' });
        }
      }
    }
    if (permanent.status !== 'active') await this.store.setRevisionStatus(namespace, app, permanent.revision, 'active');
    await this.unlock(namespace, app, { currentRevision: permanent.revision, permanentRevision: null, probationUntil: null });
    await this.events.finishRollout(rolloutId, 'succeeded', reason, { namespace, app, type: 'rollout.succeeded', message: `revision ${permanent.revision} serves all traffic again` });
    await this.supervisor.reconcile(namespace, app).catch(() => {});
  }

  /**
   * Promises a recycle for later, durably: it waits for the app's lock (an update under way), and a
   * control plane that dies meanwhile leaves the promise to the next one.
   */
  async queueRecycle(namespace: string, app: string, workerId: string, rev: RevisionRow, why: RecycleReason): Promise<void> {
    await this.timers.set(`${RECYCLE}:${workerId}`, RECYCLE, { namespace, app }, new Date(), { workerId, revision: rev.revision, ...why });
  }

  /**
   * Replaces one worker by a fresh one of the same revision (started and ready first, then the old
   * one drained): a worker past its budget of retained module versions (Node never frees a loaded
   * module), or one started by an older molt's worker runtime. It holds the app's rollout lock
   * meanwhile, so no update runs beside it, and several recycles of one app go one at a time.
   */
  async recycle(namespace: string, app: string, workerId: string, rev: RevisionRow, why: RecycleReason): Promise<void> {
    // After an update that held the app, only if the worker still runs this revision.
    const claimed = await this.claimWhenFree(namespace, app, (row) => row.currentRevision === rev.revision && this.supervisor.workersOf(namespace, app).some((w) => w.id === workerId));
    if (!claimed) return;
    const { rolloutId } = claimed;
    await this.track(rolloutId, this.replaceWorker(namespace, app, workerId, rev, why, rolloutId));
  }

  /**
   * The recycle's fresh worker starts, then the old one drains. Resumed after a restart, it starts
   * none if the app already has its fresh one beside the old (one more worker than it wants).
   */
  private async replaceWorker(namespace: string, app: string, workerId: string, rev: RevisionRow, why: RecycleReason, rolloutId: string, resumed = false): Promise<void> {
    try {
      if (!resumed) {
        await this.recordRollout(rolloutId, namespace, app, rev.revision, rev.revision, 'rolling');
        await this.store.setRolloutProgress(rolloutId, { kind: 'recycle', workerId, message: why.message, reason: why.reason });
        await this.events.append({ namespace, app, workerId, rolloutId, level: 'warn', type: 'worker.recycling', message: `worker ${workerId} ${why.message}: replacing it with a fresh worker` });
      }
      const mine = this.supervisor.workersOf(namespace, app);
      const stillThere = mine.some((w) => w.id === workerId);
      if (stillThere && !(resumed && mine.length > rev.spec.workers)) await this.supervisor.startWorker(rev, rolloutId);
      await this.supervisor.stopWorker(workerId, { drainTimeoutMs: rev.spec.rollout.drainTimeoutMs, graceMs: rev.spec.rollout.stopGraceMs, rolloutId, reason: `recycled: ${why.reason}` });
      await this.events.finishRollout(rolloutId, 'succeeded', `recycled worker ${workerId}`, { namespace, app, workerId, type: 'worker.recycled', message: `worker ${workerId} replaced (${why.reason})` });
    } catch (err) {
      const message = `could not recycle worker ${workerId}: ${err instanceof Error ? err.message : String(err)}`;
      const failed = { namespace, app, workerId, level: 'error' as const, type: 'worker.recycle.failed', message };
      // A rollout that had already ended (the error came after) still gets the event.
      await this.events.finishRollout(rolloutId, 'failed', message, failed).catch(() => this.events.append({ ...failed, rolloutId }));
    } finally {
      await this.unlock(namespace, app);
    }
  }
}
