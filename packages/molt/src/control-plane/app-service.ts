import type { AppSpec } from '../config/app-spec.js';
import { validateAppConfig } from '../config/validate-config.js';
import { MoltError } from '../errors.js';
import { newId } from '../ids.js';
import type { AppRow, ResolvedVolume, RevisionRow, RolloutRow, VolumeRevisionRow, VolumeRow } from '../store/types.js';
import type { ControlPlane } from './control-plane.js';
import type { HotRollout } from './rollout-engine.js';
import { generatePlan, type UpgradePlan, validatePlan } from '../release/upgrade-plan.js';
import type { UpgradeInstruction } from '../runtime/control-messages.js';

export interface Change {
  field: 'code' | 'env' | 'workers' | 'resources' | 'volumes' | 'readiness' | 'rollout' | 'public' | 'domains' | 'entry' | 'updatable';
  from: unknown;
  to: unknown;
}

export interface UpdatePlan {
  changes: Change[];
  strategy: 'rolling' | 'hot' | 'none';
  reason: string;
  /** The in-place plan between the two releases (shown by dry runs; used when hot). */
  upgrade?: UpgradePlan;
}

/** How an update may be carried out: chosen by molt (`auto`) or asked for. */
export type StrategyRequest = 'auto' | 'hot' | 'rolling';

/** A hand-written or transformed plan sent with an update (`rel/plans/<from>-<to>.json`). */
export interface PlanOverride {
  up: UpgradeInstruction[];
  down: UpgradeInstruction[];
  source?: string;
}

export interface UpdateResult extends UpdatePlan {
  app: string;
  revision?: number;
  rollout?: RolloutRow;
  dryRun: boolean;
}

const same = (a: unknown, b: unknown) => JSON.stringify(a) === JSON.stringify(b);

/** `ref@revision` for each volume, the form in which changes are shown. */
const volumeLabels = (volumes: ResolvedVolume[]) => volumes.map((v) => `${v.ref}@${v.revision}${v.useLatest ? '' : ' (pinned)'}`);

/** What differs between the running revision and a proposed one. */
export function diffRevision(
  from: { releaseId: string; spec: AppSpec; volumes: ResolvedVolume[] } | undefined,
  releaseId: string,
  spec: AppSpec,
  volumes: ResolvedVolume[],
): Change[] {
  if (!from) return [{ field: 'code', from: null, to: releaseId }];
  const changes: Change[] = [];
  if (from.releaseId !== releaseId) changes.push({ field: 'code', from: from.releaseId, to: releaseId });
  for (const field of ['entry', 'env', 'workers', 'resources', 'readiness', 'rollout', 'public', 'updatable'] as const) {
    if (!same(from.spec[field], spec[field])) changes.push({ field, from: from.spec[field], to: spec[field] });
  }
  if (!same(from.spec.domains ?? [], spec.domains ?? [])) changes.push({ field: 'domains', from: from.spec.domains ?? [], to: spec.domains ?? [] });
  if (!same(volumeLabels(from.volumes), volumeLabels(volumes))) changes.push({ field: 'volumes', from: volumeLabels(from.volumes), to: volumeLabels(volumes) });
  return changes;
}

export function planUpdate(changes: Change[]): UpdatePlan {
  if (changes.length === 0) return { changes, strategy: 'none', reason: 'nothing changed' };
  const fields = changes.map((c) => (c.field === 'code' ? 'code (new release)' : c.field));
  return { changes, strategy: 'rolling', reason: `${fields.join(', ')} changed: workers are replaced one by one` };
}

/** Create, update, roll back, pause, resume and delete apps: each change is a revision and a rollout. */
/** The timer kind of a volume roll an app owes: written before it waits, so a restart does not lose it. */
const VOLUME_ROLL = 'volume-roll';
const volumeRollKey = (namespace: string, app: string) => `${VOLUME_ROLL}:${namespace}/${app}`;

export class AppService {
  constructor(private readonly cp: ControlPlane) {
    cp.timers.on(VOLUME_ROLL, async (t) => {
      // Roll after the update under way, to whatever is latest then.
      for (let row = await cp.store.getApp(t.namespace, t.app); row?.rolloutId; row = await cp.store.getApp(t.namespace, t.app)) await cp.rollouts.finished(row.rolloutId, 500);
      await this.rollToLatestVolumes(t.namespace, t.app, String(t.payload.cause));
    });
  }

  async get(namespace: string, name: string): Promise<AppRow> {
    const app = await this.cp.store.getApp(namespace, name);
    if (!app) throw new MoltError('MOLT_ERR_APP_NOT_FOUND', `no app ${name} in namespace ${namespace}; see \`molt app list -n ${namespace}\``);
    return app;
  }

  /**
   * The config checked against the server's limits and this node, before anything is allocated
   * for it: resources no node here could ever hold are refused at once, not after a wait.
   */
  private validate(config: unknown): AppSpec {
    const spec = validateAppConfig(config, 'app config', { maxWorkers: this.cp.opts.maxWorkersPerApp });
    const never = this.cp.supervisor.scheduler.fits(spec.resources);
    if (never) {
      throw new MoltError('MOLT_ERR_UNSCHEDULABLE', `app ${spec.name} cannot be placed: each worker ${never}; lower \`resources\` in the app config (see \`molt node list\`)`);
    }
    return spec;
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
    const spec = this.validate(input.config);
    await this.requireRelease(namespace, input.releaseId);
    const volumes = await this.cp.volumes.resolve(namespace, spec.volumes);
    return this.cp.quotas.admitApp(namespace, spec.name, spec, undefined, false, () => this.insertApp(namespace, spec, input, volumes));
  }

  /** Records a new app and starts its first rollout (admitted by the quotas, so alone in its namespace). */
  private async insertApp(namespace: string, spec: AppSpec, input: { releaseId: string; immutable?: boolean }, volumes: ResolvedVolume[]): Promise<UpdateResult> {
    if (await this.cp.store.getApp(namespace, spec.name)) {
      throw new MoltError('MOLT_ERR_ALREADY_EXISTS', `app ${spec.name} already exists in namespace ${namespace}; use \`molt app update\` to change it`);
    }
    await this.claimDomains(namespace, spec.name, spec);
    const now = new Date().toISOString();
    const app: AppRow = {
      namespace,
      name: spec.name,
      id: newId(),
      currentRevision: 0,
      permanentRevision: null,
      probationUntil: null,
      immutable: input.immutable === true || spec.updatable === false,
      paused: false,
      rolloutId: null,
      createdAt: now,
      updatedAt: now,
    };
    await this.cp.store.insertApp(app);
    const rolloutId = await this.cp.rollouts.claim(app);
    const rev = await this.insertRevision(app, 1, input.releaseId, spec, volumes, 'create');
    await this.cp.syncRoutes(namespace, app.name);
    const rollout = await this.cp.rollouts.start(rolloutId, app, rev);
    return { app: app.name, revision: 1, rollout, dryRun: false, ...planUpdate(diffRevision(undefined, input.releaseId, spec, volumes)) };
  }

  /**
   * Makes the spec's `domains` the app's hostnames (`dryRun`: only checks they are free). Refused
   * with 409 when another app holds one, and with 400 for a name under the server's own domains,
   * where every app already has `<app>.<namespace>.<D>`.
   */
  private async claimDomains(namespace: string, name: string, spec: AppSpec, dryRun = false): Promise<void> {
    const domains = spec.domains ?? [];
    for (const d of domains) {
      const base = this.cp.opts.domains.find((b) => d === b || d.endsWith(`.${b}`));
      if (base) {
        throw new MoltError('MOLT_ERR_INVALID_CONFIG', `domains: ${d} is under the server's domain ${base}, where apps are reached as <app>.<namespace>.${base} (this one as ${name}.${namespace}.${base}); list only hostnames outside ${base}`);
      }
    }
    const holder = await this.cp.store.claimDomains(namespace, name, domains, dryRun);
    if (holder) {
      const who = holder.namespace === namespace ? `app ${holder.app}` : 'an app of another namespace';
      throw new MoltError('MOLT_ERR_DOMAIN_TAKEN', `domain ${holder.domain} is already claimed by ${who}; remove it from \`domains\` here, or from that app's config first`);
    }
  }

  private async insertRevision(app: AppRow, revision: number, releaseId: string, spec: AppSpec, volumes: ResolvedVolume[], cause: string): Promise<RevisionRow> {
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
      volumes,
    };
    await this.cp.store.insertRevision(rev);
    return rev;
  }

  private async current(app: AppRow): Promise<RevisionRow | undefined> {
    return app.currentRevision ? this.cp.store.getRevision(app.namespace, app.name, app.currentRevision) : undefined;
  }

  /**
   * Hot or rolling, and why. Hot needs a hot-safe plan between the two releases and no change
   * that needs new processes (worker count, resources, volumes, readiness, …); `auto` takes hot
   * whenever it is safe. Asking for hot where it is unsafe is refused with the reason.
   */
  private async chooseStrategy(
    app: AppRow,
    current: RevisionRow,
    releaseId: string,
    spec: AppSpec,
    plan: UpdatePlan,
    requested: StrategyRequest,
    override: PlanOverride | undefined,
    retry: boolean,
  ): Promise<{ plan: UpdatePlan; hot?: { up: UpgradeInstruction[]; down: UpgradeInstruction[] } }> {
    const [fromRelease, toRelease] = await Promise.all([this.cp.store.getRelease(app.namespace, current.releaseId), this.cp.store.getRelease(app.namespace, releaseId)]);
    if (!fromRelease || !toRelease) return { plan };
    const upgrade = generatePlan({ id: fromRelease.id, manifest: fromRelease.manifest, spec: current.spec }, { id: toRelease.id, manifest: toRelease.manifest, spec });
    const blockers = plan.changes
      .filter((c) => !['code', 'env', 'rollout', 'updatable', 'public', 'domains', 'entry', 'resources', 'readiness'].includes(c.field))
      .map((c) => (c.field === 'workers' ? 'the worker count changes' : c.field === 'volumes' ? 'volumes changed (the app has no volume hook)' : `${c.field} changed`));
    blockers.unshift(...upgrade.blockers);
    if (!plan.changes.some((c) => c.field === 'code')) blockers.push('the code did not change');
    if (override) {
      const problems = validatePlan(override, fromRelease.manifest, toRelease.manifest);
      if (problems.length > 0) throw new MoltError('MOLT_ERR_BAD_PLAN', `the plan ${override.source ?? 'sent'} does not fit releases ${fromRelease.id.slice(0, 12)} → ${toRelease.id.slice(0, 12)}:\n  - ${problems.join('\n  - ')}`);
      upgrade.up = override.up;
      upgrade.down = override.down;
    }
    const hotSafe = blockers.length === 0;
    if (requested === 'hot' && !hotSafe) {
      throw new MoltError('MOLT_ERR_HOT_UNSAFE', `a hot upgrade of ${app.name} is unsafe: ${blockers.join('; ')}; update with --strategy rolling (or leave --strategy out)`);
    }
    const strategy = requested === 'rolling' || !hotSafe ? 'rolling' : 'hot';
    if (strategy === 'hot' && !retry) {
      const ghost = (await this.cp.store.listRevisions(app.namespace, app.name)).find((r) => r.releaseId === releaseId && r.status === 'ghosted');
      if (ghost) {
        throw new MoltError(
          'MOLT_ERR_RELEASE_GHOSTED',
          `release ${releaseId.slice(0, 12)} failed its hot upgrade as revision ${ghost.revision} (${ghost.reason ?? 'no reason recorded'}); it is not tried again until you say so: \`molt app update --retry\`, or fix it and build a new release`,
        );
      }
    }
    const reason =
      strategy === 'hot'
        ? `${upgrade.reason}; processes keep their state, no worker restarts${override ? ` (plan from ${override.source ?? 'the request'})` : ''}`
        : requested === 'rolling'
          ? `asked for (--strategy rolling); ${plan.reason}`
          : `${blockers.join('; ')}: workers are replaced one by one`;
    return { plan: { ...plan, strategy, reason, upgrade }, hot: strategy === 'hot' ? { up: upgrade.up, down: upgrade.down } : undefined };
  }

  async update(
    namespace: string,
    name: string,
    input: { config?: unknown; releaseId?: string; dryRun?: boolean; strategy?: StrategyRequest; plan?: PlanOverride; retry?: boolean },
  ): Promise<UpdateResult> {
    const app = await this.get(namespace, name);
    if (app.immutable) {
      throw new MoltError(
        'MOLT_ERR_APP_IMMUTABLE',
        `app ${namespace}/${name} is immutable (created with --immutable or updatable: false) and cannot be updated; delete it and create it again: \`molt app delete --app ${name}\` then \`molt app create\``,
      );
    }
    const current = await this.current(app);
    const spec = input.config !== undefined ? this.validate(input.config) : current?.spec;
    if (!spec) throw new MoltError('MOLT_ERR_BAD_REQUEST', `app ${name} has no running revision; send its config`);
    if (spec.name !== name) {
      throw new MoltError('MOLT_ERR_INVALID_CONFIG', `the config names app ${spec.name}, not ${name}; run the update from ${name}'s directory or pass --app ${spec.name}`);
    }
    const releaseId = input.releaseId ?? current?.releaseId;
    if (!releaseId) throw new MoltError('MOLT_ERR_BAD_REQUEST', `app ${name} has no release; send a releaseId`);
    await this.requireRelease(namespace, releaseId);
    const volumes = await this.cp.volumes.resolve(namespace, spec.volumes);
    const plan = planUpdate(diffRevision(current, releaseId, spec, volumes));
    if (app.rolloutId && !input.dryRun) {
      // Already rolling to exactly this (e.g. a volume push started it): follow that rollout.
      const rollout = await this.cp.store.getRollout(app.rolloutId);
      const target = rollout && (await this.cp.store.getRevision(namespace, name, rollout.toRevision));
      if (rollout && target && diffRevision(target, releaseId, spec, volumes).length === 0) {
        return { app: name, revision: target.revision, rollout, dryRun: false, ...plan, reason: `already rolling to revision ${target.revision} (${target.cause}); following it` };
      }
    }
    if (plan.strategy === 'none' && current) plan.reason = `revision ${current.revision} (${current.cause}) already runs this release, config and volume revisions`;
    if (plan.strategy === 'none') return { app: name, dryRun: !!input.dryRun, ...plan };
    const chosen = current ? await this.chooseStrategy(app, current, releaseId, spec, plan, input.strategy ?? 'auto', input.plan, input.retry === true) : { plan };
    const rolling = chosen.plan.strategy === 'rolling';
    if (input.dryRun) {
      await this.claimDomains(namespace, name, spec, true);
      await this.cp.quotas.checkApp(namespace, name, spec, current?.spec, rolling);
      return { app: name, dryRun: true, ...chosen.plan };
    }
    return this.cp.quotas.admitApp(namespace, name, spec, current?.spec, rolling, () =>
      this.deploy(app, releaseId, spec, volumes, chosen.hot ? 'hot update' : 'update', chosen.plan, chosen.hot && current ? { from: current, ...chosen.hot, direction: 'up' } : undefined),
    );
  }

  /**
   * A volume got a new revision: every app whose running revision follows that volume's latest
   * is rolled to it (pinned apps stay). Runs in the background; an app mid-update is rolled once
   * its rollout is over. Returns the apps it rolls, as `ns/app`.
   */
  async followVolume(volume: VolumeRow, rev: VolumeRevisionRow): Promise<string[]> {
    const followers: AppRow[] = [];
    for (const app of await this.cp.store.listApps()) {
      const current = await this.current(app);
      if (current?.volumes.some((v) => v.volumeId === volume.id && v.useLatest && v.revision !== rev.revision)) followers.push(app);
    }
    const cause = `volume ${volume.namespace}/${volume.name} ${rev.revision}`;
    // Each roll is promised in the store first; each has started (or, for an app mid-update, is queued) when this returns.
    const due = new Date();
    for (const app of followers) await this.cp.timers.set(volumeRollKey(app.namespace, app.name), VOLUME_ROLL, { namespace: app.namespace, app: app.name }, new Date(due.getTime() + 5000), { cause });
    await Promise.all(followers.map((app) => this.rollToLatestVolumes(app.namespace, app.name, cause)));
    return followers.map((a) => `${a.namespace}/${a.name}`);
  }

  /**
   * Rolls an app to the latest revisions of the volumes it follows. Its promise (a durable timer)
   * is kept while an update of the app is under way, armed to run after it, and cleared once the
   * roll has started (a rollout, durable in its turn) or is not needed.
   */
  private async rollToLatestVolumes(namespace: string, name: string, cause: string): Promise<void> {
    const key = volumeRollKey(namespace, name);
    for (let attempt = 0; ; attempt++) {
      const app = await this.cp.store.getApp(namespace, name);
      if (!app || app.paused) return this.cp.timers.clear(key);
      if (app.rolloutId) {
        // Someone else's update is running: the timer rolls after it, to whatever is latest then.
        return this.cp.timers.set(key, VOLUME_ROLL, { namespace, app: name }, new Date(), { cause });
      }
      await this.cp.timers.clear(key);
      const current = await this.current(app);
      if (!current) return;
      try {
        const volumes = await this.cp.volumes.resolve(namespace, current.spec.volumes);
        const plan = planUpdate(diffRevision(current, current.releaseId, current.spec, volumes));
        if (plan.strategy === 'none') return;
        await this.cp.quotas.admitApp(namespace, name, current.spec, current.spec, true, () =>
          this.deploy(app, current.releaseId, current.spec, volumes, cause, { ...plan, reason: `${cause}: ${plan.reason}` }),
        );
        return;
      } catch (err) {
        if (err instanceof MoltError && err.code === 'MOLT_ERR_ROLLOUT_IN_PROGRESS' && attempt < 3) continue;
        await this.cp.events.append({ namespace, app: name, level: 'error', type: 'volume.follow.failed', message: `could not roll ${name} to ${cause}: ${err instanceof Error ? err.message : String(err)}` });
        return;
      }
    }
  }

  private async deploy(app: AppRow, releaseId: string, spec: AppSpec, volumes: ResolvedVolume[], cause: string, plan: UpdatePlan, hot?: HotRollout): Promise<UpdateResult> {
    const rolloutId = await this.cp.rollouts.claim(app);
    let rev: RevisionRow | undefined;
    try {
      await this.claimDomains(app.namespace, app.name, spec);
      const revisions = await this.cp.store.listRevisions(app.namespace, app.name);
      const next = (revisions.at(-1)?.revision ?? 0) + 1;
      rev = await this.insertRevision(app, next, releaseId, spec, volumes, cause);
      await this.cp.syncRoutes(app.namespace, app.name);
      const rollout = await this.cp.rollouts.start(rolloutId, app, rev, hot);
      return { app: app.name, revision: next, rollout, dryRun: false, ...plan };
    } catch (err) {
      // Its rollout never started (start throws only before it runs): the revision will not run unless asked again.
      if (rev) await this.cp.store.setRevisionStatus(app.namespace, app.name, rev.revision, 'failed', `its rollout could not start: ${err instanceof Error ? err.message : String(err)}`).catch(() => {});
      await this.cp.rollouts.release(app);
      throw err;
    }
  }

  /**
   * Apps (of one namespace or all) with a live revision — current, permanent (what a
   * restarting worker boots), or being deployed — that `uses` holds for: what may not be deleted.
   */
  async usersOf(uses: (rev: RevisionRow) => boolean, namespace?: string): Promise<AppRow[]> {
    const users: AppRow[] = [];
    for (const app of await this.cp.store.listApps(namespace)) {
      const live = new Set([app.currentRevision, app.permanentRevision]);
      const revisions = await this.cp.store.listRevisions(app.namespace, app.name);
      if (revisions.some((r) => (live.has(r.revision) || r.status === 'pending' || r.status === 'deploying') && uses(r))) users.push(app);
    }
    return users;
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
    await this.requireRelease(namespace, target.releaseId);
    const current = await this.current(app);
    const plan = planUpdate(diffRevision(current, target.releaseId, target.spec, target.volumes));
    // In place when the plan back allows it (OTP's downgrade), else worker by worker.
    const chosen = current ? await this.chooseStrategy(app, current, target.releaseId, target.spec, plan, 'auto', undefined, true) : { plan };
    return this.cp.quotas.admitApp(namespace, name, target.spec, current?.spec, !chosen.hot, () =>
      chosen.hot && current
        ? this.deploy(app, target.releaseId, target.spec, target.volumes, `hot rollback to ${target.revision}`, chosen.plan, { from: current, ...chosen.hot, direction: 'down' })
        : this.deploy(app, target.releaseId, target.spec, target.volumes, `rollback to ${target.revision}`, { ...chosen.plan, strategy: 'rolling' }),
    );
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
    await this.cp.dp.deleteApp(namespace, name);
    this.cp.supervisor.removeAppFiles(namespace, name);
  }
}
