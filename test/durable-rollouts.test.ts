import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { runLoad } from './load.js';
import { alive, processes, ServerProcess, simpleApp, sleep, tempDir, waitFor, writeApp } from './helpers.js';

/**
 * Every piece of a rollout's state is durable: a kill -9 of the control plane in the middle of a
 * rolling update, a hot upgrade's canary watch, a crash backoff, a volume roll waiting for an
 * update or a PENDING placement loses none of it; the next control plane goes on from the store.
 */
describe('rollout state survives a kill -9 of the control plane', () => {
  const dataDir = tempDir();
  const server = new ServerProcess(dataDir, ['--api-wait-ms', '20000', '--memory-mb', '512']);
  beforeAll(() => server.start());
  afterAll(() => server.stop());

  const auth = () => ({ authorization: `Bearer ${server.adminToken}` });
  type Worker = { id: string; pid: number; status: string; revision: number; createdAt: string; detail: string | null };
  const workersOf = async (app: string, all = false) => (await server.api('GET', `/api/v1/namespaces/default/apps/${app}/workers${all ? '?all=1' : ''}`)).body.workers as Worker[];
  const history = async (app: string) => JSON.parse((await server.molt(['app', 'history', '--json', '--app', app])).stdout) as { current: number; revisions: { revision: number; status: string; reason: string | null }[] };
  const killControlPlane = async () => {
    const cp = processes().find((p) => p.argv[0] === `molt: control-plane ${dataDir}`)!;
    process.kill(cp.pid, 'SIGKILL');
    await waitFor(() => !alive(cp.pid), 5000, 'the control plane to die');
    return cp.pid;
  };

  it('a rolling update goes on from its last step: ready new workers are kept, 0 failed requests', async () => {
    const rollout = { maxSurge: 1, maxUnavailable: 0, drainTimeoutMs: 2000, stopGraceMs: 1000 };
    const dir = simpleApp(tempDir(), { name: 'rolling', body: 'v1', config: { workers: 2, rollout } });
    expect((await server.molt(['app', 'create'], { cwd: dir })).code).toBe(0);
    const load = runLoad(server.route('default', 'rolling', '/'), { concurrency: 6, headers: auth(), maxMs: 60_000 });
    // Each new worker takes 1.5 s to load: the kill comes after the first is ready, before the second is.
    simpleApp(dir, { name: 'rolling', body: 'v2', config: { workers: 2, rollout }, extra: 'await new Promise((r) => setTimeout(r, 1500));' });
    const update = server.molt(['app', 'update', '--strategy', 'rolling'], { cwd: dir });
    const first = await waitFor(async () => (await workersOf('rolling')).find((w) => w.revision === 2 && w.status === 'RUNNING'), 20_000, 'a new worker ready');
    const killed = await killControlPlane();
    const done = await waitFor(async () => ((await history('rolling')).current === 2 ? true : undefined), 30_000, 'revision 2 to serve');
    await update;
    await sleep(300);
    const result = await load.stop();
    expect(done).toBe(true);
    expect(result.errors).toEqual([]);
    expect(result.requests).toBeGreaterThan(100);
    expect([...result.statuses.keys()]).toEqual([200]);
    const events = await server.events('rolling');
    // One old worker may have been draining already: the data plane finishes its drain, then it stops.
    expect(events.find((e) => e.type === 'rollout.resumed')?.message).toMatch(
      /^the control plane restarted during the rollout: resuming the rolling update to revision 2: 1 of 2 new worker\(s\) ready, [12] old to replace$/,
    );
    // The worker ready before the kill is one of the two that serve: the same process, not started again.
    const after = await workersOf('rolling');
    expect(after.map((w) => w.revision)).toEqual([2, 2]);
    expect(after.find((w) => w.id === first.id)?.pid).toBe(first.pid);
    expect(alive(first.pid)).toBe(true);
    expect((await history('rolling')).revisions.map((r) => r.status)).toEqual(['superseded', 'active']);
    expect(events.filter((e) => e.type === 'rollout.succeeded')).toHaveLength(2);
    expect(killed).toBeGreaterThan(0);
  });

  it('a hot upgrade goes on: the canary is watched to the deadline it wrote, no worker upgrades twice, state is kept', async () => {
    const process = (v: number) => `
import { defineProcess } from '@molt/app';
export const counter = defineProcess({
  name: 'counter',
  init: () => ({ count: 0, upgrades: 0 }),
  handlers: {
    add: (s: any) => ({ state: { ...s, count: s.count + 1 }, reply: s.count + 1 }),
    get: (s: any) => ({ reply: 'v${v} count=' + s.count + ' upgrades=' + s.upgrades }),
  },
  ${v > 1 ? "codeChange: (old: any) => ({ ...old, upgrades: old.upgrades + 1 })," : ''}
});
`;
    const index = `
import { counter } from './counter.ts';
export default {
  async fetch(req: Request) {
    const url = new URL(req.url);
    if (url.pathname === '/healthz') return new Response('ok');
    if (url.pathname === '/add') return new Response(String(await counter.call('add')));
    if (url.pathname === '/pid') return new Response((globalThis as any).processId ??= crypto.randomUUID());
    return new Response(String(await counter.call('get')));
  },
};
`;
    const dir = writeApp(join(tempDir(), 'canary'), {
      'molt.config.json': JSON.stringify({ name: 'canary', entry: 'index.ts', workers: 2, readiness: { path: '/healthz' }, hot: { canaryWindowMs: 4000 }, rollout: { drainTimeoutMs: 1000, stopGraceMs: 1000 } }),
      'counter.ts': process(1),
      'index.ts': index,
    });
    expect((await server.molt(['app', 'create'], { cwd: dir })).code).toBe(0);
    const before = await workersOf('canary');
    const load = runLoad(server.route('default', 'canary', '/'), { concurrency: 4, headers: auth(), maxMs: 60_000 });
    writeFileSync(join(dir, 'counter.ts'), process(2));
    const update = server.molt(['app', 'update'], { cwd: dir });
    const upgraded = await waitFor(async () => (await server.events('canary')).find((e) => e.type === 'worker.upgraded'), 20_000, 'the canary to upgrade');
    await killControlPlane();
    await waitFor(async () => ((await history('canary')).current === 2 ? true : undefined), 30_000, 'revision 2 to serve');
    await update;
    const result = await load.stop();
    expect(result.errors).toEqual([]);
    expect([...result.statuses.keys()]).toEqual([200]);
    const events = await server.events('canary');
    expect(events.find((e) => e.type === 'rollout.resumed')?.message).toBe('the control plane restarted during the rollout: resuming the hot upgrade to revision 2: 1 of 2 worker(s) upgraded');
    // One swap per worker, the canary's before the kill; the second only after the canary's deadline.
    const swaps = events.filter((e) => e.type === 'worker.upgraded');
    expect(swaps.map((e) => e.workerId).sort()).toEqual(before.map((w) => w.id).sort());
    expect(swaps[0]!.workerId).toBe(upgraded.workerId);
    const second = events.find((e) => e.type === 'worker.upgrading' && e.workerId !== upgraded.workerId)!;
    expect(Date.parse(second.ts)).toBeGreaterThanOrEqual(Date.parse(upgraded.ts) + 4000);
    // Same workers, same processes, each migrated once.
    const after = await workersOf('canary');
    expect(after.map((w) => [w.id, w.pid, w.revision]).sort()).toEqual(before.map((w) => [w.id, w.pid, 2]).sort());
    for (const w of after) expect(await server.callWorker({ id: w.id, port: null }, '/')).toMatch(/^v2 count=\d+ upgrades=1$/);
  });

  it('a crash backoff is kept: the replacement starts no sooner than the deadline the crashed control plane wrote', async () => {
    const dir = simpleApp(tempDir(), { name: 'crashloop' });
    expect((await server.molt(['app', 'create'], { cwd: dir })).code).toBe(0);
    // Three crashes within a minute: the third replacement waits 4 s.
    for (let i = 0; i < 3; i++) {
      const w = await waitFor(async () => (await workersOf('crashloop')).find((x) => x.status === 'RUNNING'), 20_000, 'a running worker');
      await fetch(server.route('default', 'crashloop', '/crash'), { headers: auth() });
      await waitFor(async () => (await workersOf('crashloop', true)).find((x) => x.id === w.id)?.status === 'ERROR', 10_000, 'the crash to be recorded');
    }
    const timer = await waitFor(async () => (await server.sql(`SELECT "dueAt", payload FROM timers WHERE key = ?`, ['replace:default/crashloop']))[0], 5000, 'the backoff timer');
    expect(JSON.parse(String(timer.payload))).toEqual({ failures: 3 });
    await killControlPlane();
    const replacement = await waitFor(async () => (await workersOf('crashloop')).find((x) => x.status === 'RUNNING'), 30_000, 'the replacement');
    expect(Date.parse(replacement.createdAt)).toBeGreaterThanOrEqual(Date.parse(String(timer.dueAt)));
    expect(await server.sql(`SELECT key FROM timers WHERE key = ?`, ['replace:default/crashloop'])).toEqual([]);
  });

  it('a volume roll promised while an update ran is made after it, by the next control plane', async () => {
    const volumeDir = writeApp(join(tempDir(), 'vol'), { 'a.txt': 'first' });
    expect((await server.molt(['volume', 'create', 'data'])).code).toBe(0);
    expect((await server.molt(['volume', 'push', 'data', volumeDir])).code).toBe(0);
    const config = { workers: 1, volumes: [{ name: 'data' }] };
    const dir = simpleApp(tempDir(), { name: 'follower', body: 'v1', config });
    expect((await server.molt(['app', 'create'], { cwd: dir })).code).toBe(0);
    // A slow update holds the app; a push meanwhile can only be promised.
    simpleApp(dir, { name: 'follower', body: 'v2', config, extra: 'await new Promise((r) => setTimeout(r, 2500));' });
    const update = server.molt(['app', 'update', '--strategy', 'rolling'], { cwd: dir });
    await waitFor(async () => (await server.api('GET', '/api/v1/namespaces/default/apps/follower')).body.app.rolloutId, 10_000, 'the update to start');
    writeFileSync(join(volumeDir, 'a.txt'), 'second');
    const push = await server.molt(['volume', 'push', 'data', volumeDir, '--json']);
    expect(push.code, push.stderr).toBe(0);
    expect(JSON.parse(push.stdout).rolling).toEqual(['default/follower']);
    expect(await server.sql(`SELECT kind FROM timers WHERE key = ?`, ['volume-roll:default/follower'])).toEqual([{ kind: 'volume-roll' }]);
    await killControlPlane();
    await update;
    // The update goes on to revision 2, then the promised roll makes revision 3 with the volume's second revision.
    const h = await waitFor(async () => {
      const x = await history('follower');
      return x.current === 3 && x.revisions.every((r) => r.status !== 'deploying') ? x : undefined;
    }, 40_000, 'the volume roll');
    expect(h.revisions.map((r) => r.status)).toEqual(['superseded', 'superseded', 'active']);
    const [w] = await workersOf('follower');
    expect(await server.callWorker({ id: w!.id, port: null }, '/')).toBe('v2');
    expect(await server.sql(`SELECT key FROM timers WHERE key = ?`, ['volume-roll:default/follower'])).toEqual([]);
  });

  it('a PENDING worker keeps its id and deadline across the restart and is placed once capacity frees', async () => {
    const filler = simpleApp(tempDir(), { name: 'filler', config: { resources: { memoryMb: 400 } } });
    expect((await server.molt(['app', 'create'], { cwd: filler })).code).toBe(0);
    const dir = simpleApp(tempDir(), { name: 'waiter', config: { resources: { memoryMb: 300 }, readiness: { path: '/healthz', timeoutMs: 30_000 } } });
    const create = server.molt(['app', 'create'], { cwd: dir });
    const pending = await waitFor(async () => ((await server.api('GET', '/api/v1/namespaces/default/apps/waiter/workers')).body?.workers ?? []).find((w: Worker) => w.status === 'PENDING') as Worker | undefined, 15_000, 'a PENDING worker');
    await killControlPlane();
    await create;
    // Still the same PENDING worker after the restart, waiting for the same reason.
    const again = await waitFor(async () => (await workersOf('waiter')).find((w) => w.status === 'PENDING' && w.detail?.startsWith('waiting for capacity')), 15_000, 'the PENDING worker again');
    expect(again.id).toBe(pending.id);
    expect(again.createdAt).toBe(pending.createdAt);
    expect((await server.molt(['app', 'delete', '--app', 'filler'])).code).toBe(0);
    const placed = await waitFor(async () => (await workersOf('waiter')).find((w) => w.status === 'RUNNING'), 20_000, 'the worker placed');
    expect(placed.id).toBe(pending.id);
    expect((await history('waiter')).revisions.map((r) => r.status)).toEqual(['active']);
    const events = await server.events('waiter');
    expect(events.some((e) => e.type === 'worker.pending' && e.message.startsWith(`worker ${pending.id} still PENDING after the control plane restarted`))).toBe(true);
  });

  it('an update cut short before its rollout was recorded fails its revision with the reason, and can be run again', async () => {
    const dir = simpleApp(tempDir(), { name: 'unstarted', body: 'v1' });
    expect((await server.molt(['app', 'create'], { cwd: dir })).code).toBe(0);
    // What a control plane killed between taking the app's lock and recording the rollout leaves behind.
    await server.stop('SIGKILL');
    await server.sql(
      `INSERT INTO revisions (namespace, app, revision, "releaseId", spec, status, reason, cause, "createdAt", volumes)
       SELECT namespace, app, 2, "releaseId", spec, 'pending', NULL, 'update', "createdAt", volumes FROM revisions WHERE app = ? AND revision = 1`,
      ['unstarted'],
    );
    await server.sql(`UPDATE apps SET "rolloutId" = ? WHERE name = ?`, ['never-recorded', 'unstarted']);
    await server.start();
    const cut = await history('unstarted');
    expect(cut.current).toBe(1);
    expect(cut.revisions.map((r) => r.status)).toEqual(['active', 'failed']);
    expect(cut.revisions[1]!.reason).toBe('the server stopped before its rollout started; run the update again');
    simpleApp(dir, { name: 'unstarted', body: 'v3' });
    const again = await server.molt(['app', 'update'], { cwd: dir });
    expect(again.code, again.stderr).toBe(0);
    expect((await history('unstarted')).revisions.map((r) => r.status)).toEqual(['superseded', 'failed', 'active']);
    expect(await (await fetch(server.route('default', 'unstarted', '/'), { headers: auth() })).text()).toBe('v3');
  });
});
