import type { AppSpec } from '../config/app-spec.js';
import { validateAppConfig } from '../config/validate-config.js';
import { MoltError } from '../errors.js';
import { newId } from '../ids.js';
import type { AppRow, RevisionRow, RolloutRow } from '../store/types.js';
import type { ControlPlane } from './control-plane.js';

export interface Change {
  field: 'code' | 'env' | 'workers' | 'resources' | 'volumes' | 'readiness' | 'rollout' | 'public' | 'entry' | 'updatable';
  from: unknown;
  to: unknown;
}

export interface UpdatePlan {
  changes: Change[];
  strategy: 'rolling' | 'none';
  reason: string;
}

export interface UpdateResult extends UpdatePlan {
  app: string;
  revision?: number;
  rollout?: RolloutRow;
  dryRun: boolean;
}

const same = (a: unknown, b: unknown) => JSON.stringify(a) === JSON.stringify(b);

/** What differs between the running revision and a proposed one. */
export function diffRevision(from: { releaseId: string; spec: AppSpec } | undefined, releaseId: string, spec: AppSpec): Change[] {
  if (!from) return [{ field: 'code', from: null, to: releaseId }];
  const changes: Change[] = [];
  if (from.releaseId !== releaseId) changes.push({ field: 'code', from: from.releaseId, to: releaseId });
  for (const field of ['entry', 'env', 'workers', 'resources', 'volumes', 'readiness', 'rollout', 'public', 'updatable'] as const) {
    if (!same(from.spec[field], spec[field])) changes.push({ field, from: from.spec[field], to: spec[field] });
  }
  return changes;
}

export function planUpdate(changes: Change[]): UpdatePlan {
  if (changes.length === 0) return { changes, strategy: 'none', reason: 'nothing changed' };
  const fields = changes.map((c) => (c.field === 'code' ? 'code (new release)' : c.field));
  return { changes, strategy: 'rolling', reason: `${fields.join(', ')} changed: workers are replaced one by one` };
}

/** Create, update, roll back, pause, resume and delete apps: each change is a revision and a rollout. */
export class AppService {
  constructor(private readonly cp: ControlPlane) {}

  async get(namespace: string, name: string): Promise<AppRow> {
    const app = await this.cp.store.getApp(namespace, name);
    if (!app) throw new MoltError('MOLT_ERR_APP_NOT_FOUND', `no app ${name} in namespace ${namespace}; see \`molt app list -n ${namespace}\``);
    return app;
  }

  private async requireRelease(namespace: string, releaseId: string): Promise<void> {
    if (!(await this.cp.store.getRelease(namespace, releaseId))) {
      throw new MoltError('MOLT_ERR_RELEASE_NOT_FOUND', `release ${releaseId.slice(0, 12)} is not in namespace ${namespace}; upload it with \`molt release build --push\``);
    }
  }

  async create(namespace: string, input: { config: unknown; releaseId: string; immutable?: boolean }): Promise<UpdateResult> {
    if (!(await this.cp.store.getNamespace(namespace))) {
      throw new MoltError('MOLT_ERR_NAMESPACE_NOT_FOUND', `namespace ${namespace} does not exist; create it with \`molt namespace create ${namespace}\``);
    }
    const spec = validateAppConfig(input.config);
    await this.requireRelease(namespace, input.releaseId);
    if (await this.cp.store.getApp(namespace, spec.name)) {
      throw new MoltError('MOLT_ERR_ALREADY_EXISTS', `app ${spec.name} already exists in namespace ${namespace}; use \`molt app update\` to change it`);
    }
    const now = new Date().toISOString();
    const app: AppRow = {
      namespace,
      name: spec.name,
      id: newId(),
      currentRevision: 0,
      immutable: input.immutable === true || spec.updatable === false,
      paused: false,
      rolloutId: null,
      createdAt: now,
      updatedAt: now,
    };
    await this.cp.store.insertApp(app);
    const rolloutId = await this.cp.rollouts.claim(app);
    const rev = await this.insertRevision(app, 1, input.releaseId, spec, 'create');
    await this.cp.syncRoutes(namespace, app.name);
    const rollout = await this.cp.rollouts.start(rolloutId, app, rev);
    return { app: app.name, revision: 1, rollout, dryRun: false, ...planUpdate(diffRevision(undefined, input.releaseId, spec)) };
  }

  private async insertRevision(app: AppRow, revision: number, releaseId: string, spec: AppSpec, cause: string): Promise<RevisionRow> {
    const rev: RevisionRow = {
      namespace: app.namespace,
      app: app.name,
      revision,
      releaseId,
      spec,
      status: 'pending',
      reason: null,
      cause,
      createdAt: new Date().toISOString(),
    };
    await this.cp.store.insertRevision(rev);
    return rev;
  }

  private async current(app: AppRow): Promise<RevisionRow | undefined> {
    return app.currentRevision ? this.cp.store.getRevision(app.namespace, app.name, app.currentRevision) : undefined;
  }

  async update(namespace: string, name: string, input: { config?: unknown; releaseId?: string; dryRun?: boolean }): Promise<UpdateResult> {
    const app = await this.get(namespace, name);
    if (app.immutable) {
      throw new MoltError(
        'MOLT_ERR_APP_IMMUTABLE',
        `app ${namespace}/${name} is immutable (created with --immutable or updatable: false) and cannot be updated; delete it and create it again: \`molt app delete --app ${name}\` then \`molt app create\``,
      );
    }
    const current = await this.current(app);
    const spec = input.config !== undefined ? validateAppConfig(input.config) : current?.spec;
    if (!spec) throw new MoltError('MOLT_ERR_BAD_REQUEST', `app ${name} has no running revision; send its config`);
    if (spec.name !== name) {
      throw new MoltError('MOLT_ERR_INVALID_CONFIG', `the config names app ${spec.name}, not ${name}; run the update from ${name}'s directory or pass --app ${spec.name}`);
    }
    const releaseId = input.releaseId ?? current?.releaseId;
    if (!releaseId) throw new MoltError('MOLT_ERR_BAD_REQUEST', `app ${name} has no release; send a releaseId`);
    await this.requireRelease(namespace, releaseId);
    const plan = planUpdate(diffRevision(current, releaseId, spec));
    if (input.dryRun || plan.strategy === 'none') return { app: name, dryRun: !!input.dryRun, ...plan };
    return this.deploy(app, releaseId, spec, 'update', plan);
  }

  private async deploy(app: AppRow, releaseId: string, spec: AppSpec, cause: string, plan: UpdatePlan): Promise<UpdateResult> {
    const rolloutId = await this.cp.rollouts.claim(app);
    try {
      const revisions = await this.cp.store.listRevisions(app.namespace, app.name);
      const next = (revisions.at(-1)?.revision ?? 0) + 1;
      const rev = await this.insertRevision(app, next, releaseId, spec, cause);
      await this.cp.syncRoutes(app.namespace, app.name);
      const rollout = await this.cp.rollouts.start(rolloutId, app, rev);
      return { app: app.name, revision: next, rollout, dryRun: false, ...plan };
    } catch (err) {
      await this.cp.rollouts.release(app);
      throw err;
    }
  }

  /** Rolls back to `to` (default: the revision that served before the current one) as a new revision. */
  async rollback(namespace: string, name: string, to?: number): Promise<UpdateResult> {
    const app = await this.get(namespace, name);
    if (app.immutable) throw new MoltError('MOLT_ERR_APP_IMMUTABLE', `app ${namespace}/${name} is immutable and cannot be rolled back; delete it and create it again`);
    const revisions = await this.cp.store.listRevisions(namespace, name);
    const target =
      to !== undefined
        ? revisions.find((r) => r.revision === to)
        : [...revisions].reverse().find((r) => r.revision < app.currentRevision && (r.status === 'superseded' || r.status === 'active'));
    if (!target) {
      throw new MoltError(
        'MOLT_ERR_REVISION_NOT_FOUND',
        to !== undefined ? `app ${name} has no revision ${to}; see \`molt app history --app ${name}\`` : `app ${name} has no earlier revision that served; see \`molt app history --app ${name}\``,
      );
    }
    if (target.revision === app.currentRevision) throw new MoltError('MOLT_ERR_BAD_REQUEST', `revision ${to} is already serving`);
    const current = await this.current(app);
    const plan = planUpdate(diffRevision(current, target.releaseId, target.spec));
    return this.deploy(app, target.releaseId, target.spec, `rollback to ${target.revision}`, { ...plan, strategy: 'rolling' });
  }

  async pause(namespace: string, name: string): Promise<AppRow> {
    const app = await this.get(namespace, name);
    if (app.rolloutId) throw new MoltError('MOLT_ERR_ROLLOUT_IN_PROGRESS', `app ${name} is being updated; pause it when the rollout is done`);
    await this.cp.store.updateApp(namespace, name, { paused: true });
    await this.cp.syncRoutes(namespace, name);
    const rev = await this.current(app);
    await this.cp.supervisor.stopApp(namespace, name, 'app paused', rev?.spec.rollout.drainTimeoutMs, rev?.spec.rollout.stopGraceMs);
    await this.cp.events.append({ namespace, app: name, type: 'app.paused', message: `app ${name} paused: its workers are stopped` });
    return this.get(namespace, name);
  }

  async resume(namespace: string, name: string): Promise<AppRow> {
    await this.get(namespace, name);
    await this.cp.store.updateApp(namespace, name, { paused: false });
    await this.cp.syncRoutes(namespace, name);
    await this.cp.events.append({ namespace, app: name, type: 'app.resumed', message: `app ${name} resumed` });
    await this.cp.supervisor.reconcile(namespace, name);
    return this.get(namespace, name);
  }

  async delete(namespace: string, name: string): Promise<void> {
    const app = await this.get(namespace, name);
    if (app.rolloutId) throw new MoltError('MOLT_ERR_ROLLOUT_IN_PROGRESS', `app ${name} is being updated; delete it when the rollout is done`);
    await this.cp.store.updateApp(namespace, name, { paused: true });
    await this.cp.supervisor.stopApp(namespace, name, 'app deleted');
    await this.cp.store.deleteApp(namespace, name);
    this.cp.routes.deleteApp(namespace, name);
  }
}
