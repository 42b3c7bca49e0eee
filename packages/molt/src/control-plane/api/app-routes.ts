import type { FastifyInstance } from 'fastify';
import { MoltError } from '../../errors.js';
import type { EventRow } from '../../store/types.js';
import type { MetricPoint } from '../../data-plane/metrics.js';
import { READ_RIGHT, requireRole } from '../auth.js';
import { type ApiContext, ndjson, principal } from './context.js';
import type { PlanOverride, StrategyRequest } from '../app-service.js';

type AppParams = { ns: string; app: string };
const FINAL_EVENTS = new Set(['rollout.succeeded', 'rollout.failed']);

export function appRoutes(api: FastifyInstance, { cp, apps }: ApiContext): void {
  /** Figures of the namespace's apps; none (rather than an error) while the data plane cannot say. */
  const figuresOf = (ns: string) => cp.dp.latestMetrics(ns).catch(() => ({}) as Record<string, MetricPoint>);
  const summary = async (ns: string, name: string, figures?: Record<string, MetricPoint>) => {
    const app = await apps.get(ns, name);
    const rev = app.currentRevision ? await cp.store.getRevision(ns, name, app.currentRevision) : undefined;
    const workers = await cp.store.listWorkers(ns, name);
    const last = (figures ?? (await figuresOf(ns)))[name];
    return {
      ...app,
      lastRollout: (await cp.store.lastRollout(ns, name)) ?? null,
      figures: last ? { rps: last.rps, errorsPerSec: last.errorsPerSec, p50Ms: last.p50Ms, p99Ms: last.p99Ms, at: last.t } : null,
      release: rev?.releaseId ?? null,
      spec: rev?.spec ?? (await cp.store.listRevisions(ns, name)).at(-1)?.spec ?? null,
      workers: { running: workers.filter((w) => w.status === 'RUNNING').length, total: workers.length },
      volumes: rev?.volumes ?? [],
      // How the running workers hold their resources (enforced or not, and why), and how they are sandboxed.
      limits: [...new Set(workers.filter((w) => w.limits).map((w) => w.limits!))],
      isolation: [...new Set(workers.filter((w) => w.isolation).map((w) => w.isolation!))],
      route: `/api/routes/v1/${ns}/${name}/`,
    };
  };

  api.get<{ Params: { ns: string } }>('/namespaces/:ns/apps', async (req) => {
    requireRole(principal(req), req.params.ns, 'deployer', READ_RIGHT);
    const rows = await cp.store.listApps(req.params.ns);
    const figures = await figuresOf(req.params.ns);
    return { apps: await Promise.all(rows.map((a) => summary(a.namespace, a.name, figures))) };
  });

  api.post<{ Params: { ns: string }; Body: { config: unknown; releaseId: string; immutable?: boolean } }>(
    '/namespaces/:ns/apps',
    { schema: { body: { type: 'object', required: ['config', 'releaseId'], properties: { releaseId: { type: 'string' }, immutable: { type: 'boolean' } } } } },
    async (req, reply) => {
      requireRole(principal(req), req.params.ns, 'deployer');
      reply.code(202);
      return apps.create(req.params.ns, req.body);
    },
  );

  api.get<{ Params: AppParams }>('/namespaces/:ns/apps/:app', async (req) => {
    requireRole(principal(req), req.params.ns, 'deployer', READ_RIGHT);
    return { app: await summary(req.params.ns, req.params.app) };
  });

  api.post<{ Params: AppParams; Body: { config?: unknown; releaseId?: string; dryRun?: boolean; strategy?: StrategyRequest; plan?: PlanOverride; retry?: boolean } }>(
    '/namespaces/:ns/apps/:app/update',
    {
      schema: {
        body: {
          type: 'object',
          properties: {
            releaseId: { type: 'string' },
            dryRun: { type: 'boolean' },
            strategy: { type: 'string', enum: ['auto', 'hot', 'rolling'] },
            plan: { type: 'object', required: ['up', 'down'], properties: { up: { type: 'array', maxItems: 100_000 }, down: { type: 'array', maxItems: 100_000 }, source: { type: 'string', maxLength: 1024 } } },
            retry: { type: 'boolean' },
          },
        },
      },
    },
    async (req, reply) => {
      requireRole(principal(req), req.params.ns, 'deployer');
      const result = await apps.update(req.params.ns, req.params.app, req.body ?? {});
      if (result.rollout) reply.code(202);
      return result;
    },
  );

  api.post<{ Params: AppParams; Body: { to?: number } }>(
    '/namespaces/:ns/apps/:app/rollback',
    { schema: { body: { type: 'object', properties: { to: { type: 'integer', minimum: 1 } } } } },
    async (req, reply) => {
      requireRole(principal(req), req.params.ns, 'deployer');
      reply.code(202);
      return apps.rollback(req.params.ns, req.params.app, req.body?.to);
    },
  );

  api.post<{ Params: AppParams }>('/namespaces/:ns/apps/:app/pause', async (req) => {
    requireRole(principal(req), req.params.ns, 'deployer');
    return { app: await apps.pause(req.params.ns, req.params.app) };
  });

  api.post<{ Params: AppParams }>('/namespaces/:ns/apps/:app/resume', async (req) => {
    requireRole(principal(req), req.params.ns, 'deployer');
    return { app: await apps.resume(req.params.ns, req.params.app) };
  });

  api.delete<{ Params: AppParams }>('/namespaces/:ns/apps/:app', async (req) => {
    requireRole(principal(req), req.params.ns, 'deployer');
    await apps.delete(req.params.ns, req.params.app);
    return { deleted: req.params.app };
  });

  api.get<{ Params: AppParams }>('/namespaces/:ns/apps/:app/history', async (req) => {
    requireRole(principal(req), req.params.ns, 'deployer', READ_RIGHT);
    const app = await apps.get(req.params.ns, req.params.app);
    const revisions = await cp.store.listRevisions(req.params.ns, req.params.app);
    return { current: app.currentRevision, revisions };
  });

  api.get<{ Params: AppParams; Querystring: { all?: string } }>('/namespaces/:ns/apps/:app/workers', async (req) => {
    requireRole(principal(req), req.params.ns, 'deployer', READ_RIGHT);
    await apps.get(req.params.ns, req.params.app);
    const rows = await cp.store.listWorkers(req.params.ns, req.params.app, req.query.all === '1' || req.query.all === 'true');
    // Each worker's release: the one of the revision it runs (a hot upgrade moves it).
    const releases = new Map((await cp.store.listRevisions(req.params.ns, req.params.app)).map((r) => [r.revision, r.releaseId]));
    const details = await cp.supervisor.detailsOf(rows);
    return { workers: rows.map((w, i) => ({ ...w, detailStatus: details[i] ?? null, release: releases.get(w.revision) ?? null })) };
  });

  api.get<{ Params: AppParams; Querystring: { worker?: string; follow?: string; tail?: string } }>('/namespaces/:ns/apps/:app/logs', async (req, reply) => {
    requireRole(principal(req), req.params.ns, 'deployer', READ_RIGHT);
    const { ns, app } = req.params;
    await apps.get(ns, app);
    const out = ndjson(reply);
    const matches = (workerId: string) => !req.query.worker || workerId === req.query.worker;
    if (req.query.follow === '1') {
      const stop = cp.logs.follow(ns, app, (l) => matches(l.workerId) && out.write(l));
      reply.raw.on('close', stop);
    }
    await cp.logs.flush();
    for (const l of cp.logs.read(ns, app, { workerId: req.query.worker, tail: Number(req.query.tail ?? 0) || undefined })) out.write(l);
    if (req.query.follow !== '1') out.end();
  });

  /**
   * The app's events as NDJSON. With `rollout`, the stream ends after that rollout's final event;
   * with `follow=1`, it stays open. Subscribes before reading stored events so none is missed.
   */
  api.get<{ Params: AppParams; Querystring: { rollout?: string; after?: string; follow?: string } }>('/namespaces/:ns/apps/:app/events', async (req, reply) => {
    requireRole(principal(req), req.params.ns, 'deployer', READ_RIGHT);
    const { ns, app } = req.params;
    await apps.get(ns, app);
    const { rollout } = req.query;
    const known = rollout ? await cp.store.getRollout(rollout) : undefined;
    if (rollout && (!known || known.namespace !== ns || known.app !== app)) throw new MoltError('MOLT_ERR_NOT_FOUND', `no rollout ${rollout} of app ${app}`);
    const out = ndjson(reply);
    let last = Number(req.query.after ?? 0);
    let backlogDone = false;
    const queued: EventRow[] = [];
    const emit = (e: EventRow): boolean => {
      if (e.id <= last) return false;
      last = e.id;
      out.write(e);
      return rollout !== undefined && e.rolloutId === rollout && FINAL_EVENTS.has(e.type);
    };
    const follow = req.query.follow === '1' || rollout !== undefined;
    let unsubscribe = () => {};
    if (follow) {
      unsubscribe = cp.events.subscribe((e) => {
        if (e.namespace !== ns || e.app !== app || (rollout && e.rolloutId !== rollout)) return;
        if (!backlogDone) queued.push(e);
        else if (emit(e)) finish();
      });
      reply.raw.on('close', () => unsubscribe());
    }
    let ended = false;
    const finish = () => {
      if (ended) return;
      ended = true;
      unsubscribe();
      out.end();
    };
    const stored = await cp.store.listEvents({ namespace: ns, app, rolloutId: rollout, afterId: last, limit: 10_000 });
    let done = false;
    for (const e of [...stored, ...queued]) done = emit(e) || done;
    backlogDone = true;
    if (rollout && !done && !ended && (await cp.store.getRollout(rollout))?.phase !== 'running') {
      // It ended after the backlog was read: its final event was written with its end, so it is in
      // the store now (or is a recycle's, which has no rollout.* event), and the stream ends.
      const rest = await cp.store.listEvents({ namespace: ns, app, rolloutId: rollout, afterId: last, limit: 10_000 });
      for (const e of rest) emit(e);
      done = true;
    }
    if (done || !follow) finish();
  });

  /** The app's figures as the data plane reads them every few seconds, kept for an hour: after `since` (ms since the epoch). */
  api.get<{ Params: AppParams; Querystring: { since?: string } }>('/namespaces/:ns/apps/:app/metrics', async (req) => {
    requireRole(principal(req), req.params.ns, 'deployer', READ_RIGHT);
    await apps.get(req.params.ns, req.params.app);
    return cp.dp.metricPoints(req.params.ns, req.params.app, Number(req.query.since ?? 0) || 0);
  });

  api.get<{ Params: { ns: string; id: string } }>('/namespaces/:ns/rollouts/:id', async (req) => {
    requireRole(principal(req), req.params.ns, 'deployer', READ_RIGHT);
    const r = await cp.store.getRollout(req.params.id);
    if (!r || r.namespace !== req.params.ns) throw new MoltError('MOLT_ERR_NOT_FOUND', `no rollout ${req.params.id} in namespace ${req.params.ns}`);
    return { rollout: r };
  });
}
