import { MoltError } from '../errors.js';
import { newId } from '../ids.js';
import type { Store } from '../store/store.js';
import type { AppRow, RevisionRow, RolloutRow } from '../store/types.js';
import type { EventLog } from './event-log.js';
import type { Supervisor } from './supervisor.js';

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
export class RolloutEngine {
  private readonly running = new Map<string, Promise<void>>();

  constructor(
    private readonly store: Store,
    private readonly supervisor: Supervisor,
    private readonly events: EventLog,
  ) {}

  /** Takes the app's rollout lock or throws 409 naming the rollout in progress. */
  async claim(app: AppRow): Promise<string> {
    const id = newId();
    if (!(await this.store.claimRollout(app.namespace, app.name, id))) {
      const current = await this.store.getApp(app.namespace, app.name);
      throw new MoltError(
        'MOLT_ERR_ROLLOUT_IN_PROGRESS',
        `app ${app.namespace}/${app.name} is being updated (rollout ${current?.rolloutId ?? 'unknown'}); wait for it to finish, then retry`,
      );
    }
    return id;
  }

  /** Releases a claimed lock when the update is refused before its rollout starts. */
  async release(app: AppRow): Promise<void> {
    await this.store.updateApp(app.namespace, app.name, { rolloutId: null });
  }

  /** Records the rollout (lock already held) and runs it in the background. */
  async start(rolloutId: string, app: AppRow, to: RevisionRow): Promise<RolloutRow> {
    const rollout: RolloutRow = {
      id: rolloutId,
      namespace: app.namespace,
      app: app.name,
      fromRevision: app.currentRevision,
      toRevision: to.revision,
      strategy: 'rolling',
      phase: 'running',
      reason: null,
      createdAt: new Date().toISOString(),
      finishedAt: null,
    };
    await this.store.insertRollout(rollout);
    const run = this.run(rollout, to).finally(() => this.running.delete(rollout.id));
    this.running.set(rollout.id, run);
    return rollout;
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

  private async run(rollout: RolloutRow, to: RevisionRow): Promise<void> {
    const { namespace, app } = rollout;
    const ev = (type: string, message: string, level: 'info' | 'warn' | 'error' = 'info') =>
      this.events.append({ namespace, app, rolloutId: rollout.id, type, message, level });
    const { workers: desired } = to.spec;
    const { maxSurge, maxUnavailable, drainTimeoutMs, stopGraceMs } = to.spec.rollout;
    const olds = this.supervisor.workersOf(namespace, app).map((w) => w.id);
    const news: string[] = [];
    const stops: Promise<void>[] = [];
    let crash: string | undefined;
    const unsubscribe = this.supervisor.onCrash((w) => {
      if (news.includes(w.id)) crash = `new worker ${w.id} crashed after it became ready`;
    });

    await this.store.setRevisionStatus(namespace, app, to.revision, 'deploying');
    await ev(
      'rollout.started',
      rollout.fromRevision === 0
        ? `deploying revision ${to.revision}: ${desired} worker(s)`
        : `rolling update from revision ${rollout.fromRevision} to ${to.revision}: ${olds.length} → ${desired} worker(s), surge ${maxSurge}, max unavailable ${maxUnavailable}`,
    );
    try {
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
      await this.store.updateApp(namespace, app, { currentRevision: to.revision, rolloutId: null });
      await this.store.setRevisionStatus(namespace, app, to.revision, 'active');
      if (previous > 0) await this.store.setRevisionStatus(namespace, app, previous, 'superseded');
      await this.store.updateRollout(rollout.id, { phase: 'succeeded', finishedAt: new Date().toISOString() });
      await ev('rollout.succeeded', `revision ${to.revision} serves all traffic`);
    } catch (err) {
      const reason = err instanceof Error ? err.message : String(err);
      await ev('rollout.aborting', `rollout aborted: ${reason}; removing new workers, the previous revision keeps serving`, 'error');
      await Promise.all(news.map((id) => this.supervisor.stopWorker(id, { drainTimeoutMs, graceMs: stopGraceMs, rolloutId: rollout.id, reason: 'rollout aborted' })));
      await Promise.all(stops);
      await this.store.setRevisionStatus(namespace, app, to.revision, 'failed', reason);
      await this.store.updateRollout(rollout.id, { phase: 'failed', reason, finishedAt: new Date().toISOString() });
      await this.store.updateApp(namespace, app, { rolloutId: null });
      await ev('rollout.failed', `revision ${to.revision} failed: ${reason}`, 'error');
      // Old workers drained during the rollout are replaced so the app is back to its size.
      await this.supervisor.reconcile(namespace, app).catch(() => {});
    } finally {
      unsubscribe();
    }
  }
}
