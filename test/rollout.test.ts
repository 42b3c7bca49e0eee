import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ServerProcess, simpleApp, sleep, tempDir, waitFor } from './helpers.js';
import { runLoad } from './load.js';

const setConfig = (dir: string, patch: Record<string, unknown>) => {
  const file = join(dir, 'molt.config.json');
  writeFileSync(file, JSON.stringify({ ...JSON.parse(readFileSync(file, 'utf8')), ...patch }));
};

describe('rolling updates', () => {
  const server = new ServerProcess(tempDir());
  beforeAll(() => server.start());
  afterAll(() => server.stop());

  it('aborts when a new worker fails readiness: new workers removed, old ones keep serving, exit non-zero, history records the failure', async () => {
    const dir = simpleApp(join(tempDir(), 'app'), { name: 'abort-me', body: 'v1' });
    expect((await server.molt(['app', 'create'], { cwd: dir })).code).toBe(0);
    const before = (await server.api('GET', '/api/v1/namespaces/default/apps/abort-me/workers')).body.workers;

    // v2 never becomes ready: its readiness path answers 503.
    simpleApp(dir, { name: 'abort-me', body: 'v2', config: { readiness: { path: '/unready', timeoutMs: 1500 } } });
    const load = runLoad(server.route('default', 'abort-me', '/'), { concurrency: 4, headers: { authorization: `Bearer ${server.adminToken}` } });
    const update = await server.molt(['app', 'update', '--strategy', 'rolling'], { cwd: dir });
    const result = await load.stop();

    expect(update.code).toBe(1);
    expect(update.stderr).toMatch(/readiness GET \/unready did not succeed|not ready within/);
    // What the readiness path last answered is in the message.
    expect(update.stderr).toContain('last answer: HTTP 503: "not ready"');
    expect(update.stderr).toContain('revision 1 keeps serving');
    expect(result.errors).toEqual([]);
    expect([...result.bodies.keys()]).toEqual(['v1']);

    const workers = (await server.api('GET', '/api/v1/namespaces/default/apps/abort-me/workers?all=1')).body.workers;
    const live = workers.filter((w: any) => w.status === 'RUNNING');
    expect(live.map((w: any) => w.id)).toEqual(before.map((w: any) => w.id));
    const failed = workers.find((w: any) => w.revision === 2);
    expect(failed.status).toBe('ERROR');
    expect(failed.detail).toMatch(/readiness/);

    const history = JSON.parse((await server.molt(['app', 'history', '--json', '--app', 'abort-me'])).stdout);
    expect(history.current).toBe(1);
    expect(history.revisions[1]).toMatchObject({ revision: 2, status: 'failed' });
    expect(history.revisions[1].reason).toMatch(/readiness|not ready/);
  });

  it('aborts when the new code crashes at load, and says why', async () => {
    const dir = simpleApp(join(tempDir(), 'app'), { name: 'crash-load' });
    expect((await server.molt(['app', 'create'], { cwd: dir })).code).toBe(0);
    simpleApp(dir, { name: 'crash-load', extra: "throw new Error('boom at load');" });
    const update = await server.molt(['app', 'update', '--strategy', 'rolling'], { cwd: dir });
    expect(update.code).toBe(1);
    expect(update.stderr).toContain('boom at load');
    const res = await fetch(server.route('default', 'crash-load', '/'), { headers: { authorization: `Bearer ${server.adminToken}` } });
    expect(await res.text()).toBe('hello');
    const logs = await server.molt(['app', 'logs', '--app', 'crash-load']);
    expect(logs.stdout).toContain('boom at load');
  });

  it('answers a second update of an app that is mid-update with 409 and changes nothing', async () => {
    const dir = simpleApp(join(tempDir(), 'app'), { name: 'busy', config: { readiness: { path: '/healthz', timeoutMs: 10_000 } } });
    expect((await server.molt(['app', 'create'], { cwd: dir })).code).toBe(0);
    // A slow-starting v2 keeps the first update busy.
    simpleApp(dir, { name: 'busy', body: 'v2', extra: 'await new Promise((r) => setTimeout(r, 2000));' });
    const first = server.molt(['app', 'update', '--strategy', 'rolling'], { cwd: dir });
    await waitFor(async () => (await server.api('GET', '/api/v1/namespaces/default/apps/busy')).body.app.rolloutId, 10_000, 'rollout to start');
    simpleApp(dir, { name: 'busy', body: 'v3' });
    const second = await server.molt(['app', 'update', '--strategy', 'rolling'], { cwd: dir });
    expect(second.code).toBe(1);
    expect(second.stderr).toContain('MOLT_ERR_ROLLOUT_IN_PROGRESS');
    expect(second.stderr).toMatch(/is being updated/);
    expect((await first).code).toBe(0);
    const history = JSON.parse((await server.molt(['app', 'history', '--json', '--app', 'busy'])).stdout);
    expect(history.revisions.map((r: any) => r.revision)).toEqual([1, 2]);
    const res = await fetch(server.route('default', 'busy', '/'), { headers: { authorization: `Bearer ${server.adminToken}` } });
    expect(await res.text()).toBe('v2');
  });

  it('rolls back to the previous revision (in place when the plan allows), as a new revision', async () => {
    const dir = simpleApp(join(tempDir(), 'app'), { name: 'roll', body: 'one' });
    expect((await server.molt(['app', 'create'], { cwd: dir })).code).toBe(0);
    simpleApp(dir, { name: 'roll', body: 'two' });
    expect((await server.molt(['app', 'update', '--strategy', 'rolling'], { cwd: dir })).code).toBe(0);
    const rollback = await server.molt(['app', 'rollback', '--app', 'roll']);
    expect(rollback.code, rollback.stderr).toBe(0);
    const res = await fetch(server.route('default', 'roll', '/'), { headers: { authorization: `Bearer ${server.adminToken}` } });
    expect(await res.text()).toBe('one');
    const history = JSON.parse((await server.molt(['app', 'history', '--json', '--app', 'roll'])).stdout);
    expect(history.current).toBe(3);
    expect(history.revisions.map((r: any) => [r.revision, r.status, r.cause])).toEqual([
      [1, 'superseded', 'create'],
      [2, 'superseded', 'update'],
      [3, 'active', 'hot rollback to 1'],
    ]);
    const to2 = await server.molt(['app', 'rollback', '--app', 'roll', '--to', '2']);
    expect(to2.code).toBe(0);
    expect(await (await fetch(server.route('default', 'roll', '/'), { headers: { authorization: `Bearer ${server.adminToken}` } })).text()).toBe('two');
  });

  it('changes env and worker count with a rolling update and never has fewer ready workers than before', async () => {
    const dir = simpleApp(join(tempDir(), 'app'), { name: 'scale', config: { workers: 2 } });
    expect((await server.molt(['app', 'create'], { cwd: dir })).code).toBe(0);
    setConfig(dir, { workers: 3, env: { COLOR: 'blue' } });
    const counts: number[] = [];
    let running = true;
    const watch = (async () => {
      while (running) {
        const w = (await server.api('GET', '/api/v1/namespaces/default/apps/scale/workers')).body.workers;
        counts.push(w.filter((x: any) => x.status === 'RUNNING').length);
        await sleep(20);
      }
    })();
    const dry = await server.molt(['app', 'update', '--dry-run'], { cwd: dir });
    const update = await server.molt(['app', 'update', '--strategy', 'rolling'], { cwd: dir }).finally(() => (running = false));
    await watch;
    expect(dry.code, dry.stderr).toBe(0);
    expect(dry.stdout).toContain('workers: 2 → 3');
    expect(dry.stdout).toContain('env: {} → {"COLOR":"blue"}');
    expect(dry.stdout).toContain('strategy: rolling');
    expect(dry.stdout).toContain('dry run: nothing was changed');
    expect(update.code, update.stderr).toBe(0);
    expect(Math.min(...counts)).toBeGreaterThanOrEqual(2);
    const workers = (await server.api('GET', '/api/v1/namespaces/default/apps/scale/workers')).body.workers;
    expect(workers.filter((w: any) => w.status === 'RUNNING' && w.revision === 2)).toHaveLength(3);
  });

  it('replaces a crashed worker, and the crash shows in worker list -a and app logs', async () => {
    const dir = simpleApp(join(tempDir(), 'app'), { name: 'crashy' });
    expect((await server.molt(['app', 'create'], { cwd: dir })).code).toBe(0);
    const auth = { authorization: `Bearer ${server.adminToken}` };
    await fetch(server.route('default', 'crashy', '/crash'), { headers: auth });
    const list = await waitFor(async () => {
      const r = await server.molt(['worker', 'list', '-a', '--app', 'crashy']);
      return /ERROR.*crashed \(exit code 3\)/.test(r.stdout) && /RUNNING/.test(r.stdout) ? r.stdout : undefined;
    }, 20_000, 'a replacement worker');
    expect(list).toMatch(/ERROR\s+\S+\s+\S+\s+1\s+[0-9a-f]{12}\s+crashed \(exit code 3\)/);
    expect((await fetch(server.route('default', 'crashy', '/'), { headers: auth })).status).toBe(200);
    expect((await server.molt(['app', 'logs', '--app', 'crashy'])).stdout).toContain('worker crashed (exit code 3)');
  });

  it('pause stops the workers and answers 503; resume brings them back', async () => {
    const dir = simpleApp(join(tempDir(), 'app'), { name: 'pauser' });
    expect((await server.molt(['app', 'create'], { cwd: dir })).code).toBe(0);
    const auth = { authorization: `Bearer ${server.adminToken}` };
    expect((await server.molt(['app', 'pause', '--app', 'pauser'])).code).toBe(0);
    const paused = await fetch(server.route('default', 'pauser', '/'), { headers: auth });
    expect(paused.status).toBe(503);
    expect((await paused.json()).error.message).toContain('paused');
    expect((await server.molt(['app', 'resume', '--app', 'pauser'])).code).toBe(0);
    expect(await (await fetch(server.route('default', 'pauser', '/'), { headers: auth })).text()).toBe('hello');
    expect((await server.molt(['app', 'delete', '--app', 'pauser'])).code).toBe(0);
    expect((await fetch(server.route('default', 'pauser', '/'), { headers: auth })).status).toBe(404);
  });

  it('drains in-flight requests before the old worker is stopped', async () => {
    const dir = simpleApp(join(tempDir(), 'app'), { name: 'drainer', body: 'v1' });
    expect((await server.molt(['app', 'create'], { cwd: dir })).code).toBe(0);
    const auth = { authorization: `Bearer ${server.adminToken}` };
    const slow = fetch(server.route('default', 'drainer', '/slow?ms=2500'), { headers: auth }).then(async (r) => [r.status, await r.text()]);
    await sleep(200);
    simpleApp(dir, { name: 'drainer', body: 'v2' });
    const update = await server.molt(['app', 'update', '--strategy', 'rolling'], { cwd: dir });
    expect(update.code).toBe(0);
    expect(await slow).toEqual([200, 'slow done']);
  });
});

describe('a server restart', () => {
  it('loses nothing: apps, revisions, tokens and workers come back, and a rollout cut short by a restart goes on', async () => {
    const dataDir = tempDir();
    const server = await new ServerProcess(dataDir).start();
    const dir = simpleApp(join(tempDir(), 'app'), { name: 'durable', body: 'one' });
    expect((await server.molt(['app', 'create'], { cwd: dir })).code).toBe(0);
    simpleApp(dir, { name: 'durable', body: 'two' });
    expect((await server.molt(['app', 'update', '--strategy', 'rolling'], { cwd: dir })).code).toBe(0);
    const invoker = await server.createToken('default', 'invoker');
    // Start an update that is slow to become ready, and kill the server in the middle of it.
    simpleApp(dir, { name: 'durable', body: 'three', extra: 'await new Promise((r) => setTimeout(r, 5000));' });
    let ended: { code: number; stdout: string; stderr: string } | undefined;
    const pending = server.molt(['app', 'update', '--strategy', 'rolling'], { cwd: dir }).then((r) => (ended = r));
    // The build and upload come first; on a loaded machine they take a while.
    await waitFor(async () => {
      if (ended) throw new Error(`the update ended before its rollout was seen (exit ${ended.code}): ${ended.stdout}${ended.stderr}`);
      return (await server.api('GET', '/api/v1/namespaces/default/apps/durable')).body.app.rolloutId;
    }, 30_000, 'the rollout of revision 3 to start');
    await server.stop('SIGKILL');
    await pending;

    const again = await new ServerProcess(dataDir).start();
    try {
      expect(again.output).not.toContain('admin token (shown once');
      // The rollout goes on from where it was (its new worker died with the server, as one still loading does): revision 3 serves.
      const history = await waitFor(async () => {
        const h = JSON.parse((await again.molt(['app', 'history', '--json', '--app', 'durable'])).stdout);
        return h.current === 3 ? h : undefined;
      }, 30_000);
      expect(history.revisions.map((r: any) => r.status)).toEqual(['superseded', 'superseded', 'active']);
      const res = await fetch(again.route('default', 'durable', '/'), { headers: { authorization: `Bearer ${invoker}` } });
      expect(await res.text()).toBe('three');
      const events = await again.events('durable');
      expect(events.find((e) => e.type === 'rollout.resumed')?.message).toMatch(/^the server restarted during the rollout: resuming the rolling update to revision 3: 0 of 1 new worker\(s\) ready, 1 old to replace$/);
      const workers = (await again.api('GET', '/api/v1/namespaces/default/apps/durable/workers?all=1')).body.workers;
      expect(workers.filter((w: any) => w.status === 'RUNNING')).toHaveLength(1);
      // The app can be updated again: the lock of the interrupted rollout was released.
      simpleApp(dir, { name: 'durable', body: 'four' });
      expect((await again.molt(['app', 'update', '--strategy', 'rolling'], { cwd: dir })).code).toBe(0);
    } finally {
      await again.stop();
    }
  });
});
