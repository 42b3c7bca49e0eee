import type { AppSpec } from '../config/app-spec.js';
import { MoltError } from '../errors.js';
import type { Store } from '../store/store.js';
import type { NamespaceQuota } from '../store/types.js';

/** What workers hold, in the units quotas count. */
export interface WorkerUsage {
  workers: number;
  cpu: number;
  memoryMb: number;
  gpus: number;
}

/** Everything a namespace's quota counts. */
export interface NamespaceUsage extends WorkerUsage {
  volumeBytes: number;
  releases: number;
}

const ZERO: WorkerUsage = { workers: 0, cpu: 0, memoryMb: 0, gpus: 0 };
/** Every field a quota may set. */
export const QUOTA_FIELDS = ['workers', 'cpu', 'memoryMb', 'gpus', 'volumeBytes', 'releases'] as const;
const WORKER_FIELDS = ['workers', 'cpu', 'memoryMb', 'gpus'] as const;

/** How each quota field reads in messages, with the `molt namespace quota` flag that sets it. */
const FIELD: Record<keyof NamespaceQuota, { noun: string; flag: string }> = {
  workers: { noun: 'workers', flag: '--workers' },
  cpu: { noun: 'CPU', flag: '--cpu' },
  memoryMb: { noun: 'MiB of memory', flag: '--memory-mb' },
  gpus: { noun: 'GPUs', flag: '--gpus' },
  volumeBytes: { noun: 'bytes of volumes', flag: '--volume-bytes' },
  releases: { noun: 'releases', flag: '--releases' },
};

const round = (n: number) => Math.round(n * 1000) / 1000;

/** What `spec` holds with `workers` workers. */
export function workerNeed(spec: AppSpec, workers = spec.workers): WorkerUsage {
  const r = spec.resources;
  return { workers, cpu: workers * (r.cpu ?? 0), memoryMb: workers * (r.memoryMb ?? 0), gpus: workers * (r.gpu ?? 0) };
}

function add(a: WorkerUsage, b: WorkerUsage): WorkerUsage {
  return { workers: a.workers + b.workers, cpu: round(a.cpu + b.cpu), memoryMb: a.memoryMb + b.memoryMb, gpus: a.gpus + b.gpus };
}

function max(a: WorkerUsage, b: WorkerUsage): WorkerUsage {
  return { workers: Math.max(a.workers, b.workers), cpu: Math.max(a.cpu, b.cpu), memoryMb: Math.max(a.memoryMb, b.memoryMb), gpus: Math.max(a.gpus, b.gpus) };
}

function exceeded(namespace: string, field: keyof NamespaceQuota, limit: number, held: number, wanted: string, fix: string): MoltError {
  const { noun, flag } = FIELD[field];
  return new MoltError(
    'MOLT_ERR_QUOTA_EXCEEDED',
    `namespace ${namespace}'s quota allows ${limit} ${noun}; it holds ${round(held)} and ${wanted}; ${fix}, or ask the server admin to raise it (\`molt namespace quota ${namespace} ${flag} N\`)`,
  );
}

/**
 * Per-namespace quotas, in the manner of Kubernetes' ResourceQuota: every change is checked against
 * them up front (dry runs included), before anything is allocated, and refused with 403 naming the
 * quota, what the namespace holds and what the change needs.
 */
export class Quotas {
  /** The tail of each namespace's queue of admitted changes. */
  private readonly queues = new Map<string, Promise<void>>();

  constructor(private readonly store: Store) {}

  /**
   * Runs a quota `check` and, if it passes, the change it allows (`act`), alone among the namespace's
   * admitted changes: two changes cannot both pass a check that only one of them fits. (Within this
   * server: SQLite's queries never interleave, PostgreSQL's do; several control planes on one store
   * would need the store to hold the lock.)
   */
  async admit<T>(namespace: string, check: () => Promise<void>, act: () => Promise<T>): Promise<T> {
    const before = this.queues.get(namespace) ?? Promise.resolve();
    let done!: () => void;
    const mine = before.then(() => new Promise<void>((r) => (done = r)));
    this.queues.set(namespace, mine);
    await before;
    try {
      await check();
      return await act();
    } finally {
      done();
      if (this.queues.get(namespace) === mine) this.queues.delete(namespace);
    }
  }

  /** `admit` for a change of app `name` from `current` to `next` (see `checkApp`). */
  admitApp<T>(namespace: string, name: string, next: AppSpec, current: AppSpec | undefined, rolling: boolean, act: () => Promise<T>): Promise<T> {
    return this.admit(namespace, () => this.checkApp(namespace, name, next, current, rolling), act);
  }

  /**
   * What the namespace's apps hold, but `except`: each app's desired workers (paused ones too, so
   * that resuming never needs a check), at the larger of its current revision and the one a rollout
   * is taking it to.
   */
  async workerUsage(namespace: string, except?: string): Promise<WorkerUsage> {
    let total = ZERO;
    for (const app of await this.store.listApps(namespace)) {
      if (app.name === except) continue;
      const current = app.currentRevision ? await this.store.getRevision(namespace, app.name, app.currentRevision) : undefined;
      const rollout = app.rolloutId ? await this.store.getRollout(app.rolloutId) : undefined;
      const target = rollout ? await this.store.getRevision(namespace, app.name, rollout.toRevision) : undefined;
      const held = max(current ? workerNeed(current.spec) : ZERO, target ? workerNeed(target.spec) : ZERO);
      total = add(total, held);
    }
    return total;
  }

  async usage(namespace: string): Promise<NamespaceUsage> {
    return { ...(await this.workerUsage(namespace)), volumeBytes: await this.store.volumeBytes(namespace), releases: await this.store.countReleases(namespace) };
  }

  /**
   * Refuses a change of app `name` from `current` to `next` whose peak would pass a quota: during a
   * rolling update the surge workers run beside the others, so they count too.
   */
  async checkApp(namespace: string, name: string, next: AppSpec, current: AppSpec | undefined, rolling: boolean): Promise<void> {
    const quota = (await this.store.getNamespace(namespace))?.quota;
    if (!quota || !WORKER_FIELDS.some((f) => quota[f] !== undefined)) return;
    const surge = current && rolling ? Math.min(next.rollout.maxSurge, next.workers) : 0;
    const peak = add(max(current ? workerNeed(current) : ZERO, workerNeed(next)), workerNeed(next, surge));
    const others = await this.workerUsage(namespace, name);
    for (const field of WORKER_FIELDS) {
      const limit = quota[field];
      if (limit === undefined || others[field] + peak[field] <= limit) continue;
      const surgeNote = surge > 0 && others[field] + peak[field] - workerNeed(next, surge)[field] <= limit ? ` (with ${surge} surge worker(s) during the rolling update)` : '';
      const fix = surgeNote ? 'set rollout: { maxSurge: 0, maxUnavailable: 1 } to replace workers in place' : `lower workers or resources of ${name}, or scale down other apps`;
      throw exceeded(namespace, field, limit, others[field], `app ${name} needs ${round(peak[field])}${surgeNote}`, fix);
    }
  }

  /** Refuses a volume push that adds `addedBytes` past the namespace's volume quota. */
  async checkVolumeBytes(namespace: string, volume: string, addedBytes: number): Promise<void> {
    const limit = (await this.store.getNamespace(namespace))?.quota?.volumeBytes;
    if (limit === undefined) return;
    const held = await this.store.volumeBytes(namespace);
    if (held + addedBytes > limit) throw exceeded(namespace, 'volumeBytes', limit, held, `this push to volume ${volume} adds ${addedBytes}`, 'push less or delete volumes');
  }

  /** Refuses a new release past the namespace's release quota. */
  async checkRelease(namespace: string): Promise<void> {
    const limit = (await this.store.getNamespace(namespace))?.quota?.releases;
    if (limit === undefined) return;
    const held = await this.store.countReleases(namespace);
    if (held + 1 > limit) throw exceeded(namespace, 'releases', limit, held, 'this upload is a new one', 'delete releases no app uses (`molt release delete ID`)');
  }
}
