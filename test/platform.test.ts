import { appendFileSync, chmodSync, cpSync, readFileSync, symlinkSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { runLoad } from './load.js';
import { alive, processes, ROOT, ServerProcess, simpleApp, sleep, tempDir, waitFor } from './helpers.js';

/** The processes whose title starts with `molt: `, as `ps` shows them: pid and title. */
function moltProcesses(): { pid: number; title: string }[] {
  return processes()
    .map((p) => ({ pid: p.pid, title: p.argv[0]! }))
    .filter((p) => p.title.startsWith('molt: '));
}

/** The control plane process of a data dir. */
function controlPlaneOf(dataDir: string): { pid: number; title: string } | undefined {
  return moltProcesses().find((p) => p.title === `molt: control-plane ${dataDir}`);
}

describe('the data plane and the control plane', () => {
  const dataDir = tempDir();
  const server = new ServerProcess(dataDir, ['--api-wait-ms', '20000']);
  beforeAll(() => server.start());
  afterAll(() => server.stop());

  const workersOf = async (app: string) => (await server.api('GET', `/api/v1/namespaces/default/apps/${app}/workers`)).body.workers as { id: string; pid: number; status: string }[];
  const controlPlane = () => controlPlaneOf(dataDir);

  it('runs as processes titled by role and data dir, as nginx does', async () => {
    const dir = simpleApp(tempDir(), { name: 'titled' });
    expect((await server.molt(['app', 'create'], { cwd: dir })).code).toBe(0);
    const [w] = await workersOf('titled');
    const titles = moltProcesses().map((p) => p.title);
    expect(titles).toContain(`molt: gateway ${dataDir}`);
    expect(titles).toContain(`molt: control-plane ${dataDir}`);
    expect(titles).toContain(`molt: worker ${w!.id} default/titled`);
    expect(moltProcesses().find((p) => p.title === `molt: gateway ${dataDir}`)!.pid).toBe(server.child.pid);
  });

  it('kill -9 of the control plane under load: 0 failed requests, no worker restarted, the API answers again', async () => {
    const dir = simpleApp(tempDir(), { name: 'steady', config: { workers: 2 } });
    expect((await server.molt(['app', 'create'], { cwd: dir })).code).toBe(0);
    const before = await workersOf('steady');
    const pidsBefore = await Promise.all(before.map((w) => server.callWorker({ id: w.id, port: null }, '/pid')));
    const load = runLoad(server.route('default', 'steady', '/'), { concurrency: 8, headers: { authorization: `Bearer ${server.adminToken}` }, maxMs: 30_000 });
    await sleep(300);
    const cp = controlPlane()!;
    process.kill(cp.pid, 'SIGKILL');
    const killedAt = Date.now();
    // An API request sent while it is down waits for the next one and is answered.
    const waited = await server.api('GET', '/api/v1/namespaces/default/apps/steady');
    const answeredAfterMs = Date.now() - killedAt;
    await sleep(500);
    const result = await load.stop();
    expect(waited.status).toBe(200);
    expect(answeredAfterMs).toBeLessThan(10_000);
    expect(result.errors).toEqual([]);
    expect(result.requests).toBeGreaterThan(200);
    const next = controlPlane()!;
    expect(next.pid).not.toBe(cp.pid);
    expect(alive(cp.pid)).toBe(false);
    // The same workers, the same processes: adopted, not restarted.
    const after = await workersOf('steady');
    expect(after.map((w) => [w.id, w.pid, w.status])).toEqual(before.map((w) => [w.id, w.pid, 'RUNNING']));
    expect(await Promise.all(after.map((w) => server.callWorker({ id: w.id, port: null }, '/pid')))).toEqual(pidsBefore);
    expect(server.output).toMatch(/the control plane exited \(killed by SIGKILL\); apps keep serving; restarting it/);
    // The adopted workers are managed as before: a rolling update replaces them.
    simpleApp(dir, { name: 'steady', body: 'hello again', config: { workers: 2 } });
    const update = await server.molt(['app', 'update', '--strategy', 'rolling'], { cwd: dir });
    expect(update.code, update.stderr).toBe(0);
    expect(await (await fetch(server.route('default', 'steady', '/'), { headers: { authorization: `Bearer ${server.adminToken}` } })).text()).toBe('hello again');
    expect(before.every((w) => !alive(w.pid))).toBe(true);
  });

  it('a worker that crashes while the control plane is down is recorded and replaced when it is back', async () => {
    const dir = simpleApp(tempDir(), { name: 'lonely' });
    expect((await server.molt(['app', 'create'], { cwd: dir })).code).toBe(0);
    const [w] = await workersOf('lonely');
    const cp = controlPlane()!;
    process.kill(cp.pid, 'SIGSTOP');
    try {
      process.kill(w!.pid, 'SIGKILL');
      await sleep(300);
      process.kill(cp.pid, 'SIGKILL');
    } finally {
      try {
        process.kill(cp.pid, 'SIGCONT');
      } catch {
        // killed
      }
    }
    const running = await waitFor(async () => {
      const ws = (await server.api('GET', '/api/v1/namespaces/default/apps/lonely/workers?all=true')).body.workers as { id: string; status: string; detail: string | null }[];
      return ws.length === 2 && ws.some((x) => x.status === 'RUNNING' && x.id !== w!.id) ? ws : undefined;
    }, 20_000, 'a replacement worker');
    expect(running.find((x) => x.id === w!.id)).toMatchObject({ status: 'ERROR', detail: 'exited while the control plane was down (killed by SIGKILL)' });
  });
});

describe('while the control plane stays down', () => {
  const server = new ServerProcess(tempDir(), ['--api-wait-ms', '1']);
  beforeAll(() => server.start());
  afterAll(() => server.stop());

  it('API requests past the wait get 503 with Retry-After; gateway requests are served', async () => {
    const dir = simpleApp(tempDir(), { name: 'served' });
    expect((await server.molt(['app', 'create'], { cwd: dir })).code).toBe(0);
    const cp = controlPlaneOf(server.dataDir)!;
    process.kill(cp.pid, 'SIGKILL');
    await waitFor(() => !alive(cp.pid), 5000, 'the control plane to die');
    const res = await fetch(`${server.url}/api/v1/namespaces/default/apps`, { headers: { authorization: `Bearer ${server.adminToken}` } });
    expect(res.status).toBe(503);
    expect(res.headers.get('retry-after')).toBe('1');
    expect(((await res.json()) as { error: { code: string } }).error.code).toBe('MOLT_ERR_CONTROL_PLANE_DOWN');
    const app = await fetch(server.route('default', 'served', '/'), { headers: { authorization: `Bearer ${server.adminToken}` } });
    expect(await app.text()).toBe('hello');
    // The CLI reads through the restart: it asks again after each Retry-After until the API is back.
    const listed = await server.molt(['app', 'list']);
    expect(listed.code, listed.stderr).toBe(0);
    expect(listed.stdout).toContain('served');
    await waitFor(async () => (await server.api('GET', '/api/v1/namespaces/default/apps')).status === 200, 15_000, 'the API to answer again');
  });
});

describe('workers outlive molt', () => {
  const auth = (s: ServerProcess) => ({ headers: { authorization: `Bearer ${s.adminToken}` } });
  const workersOf = async (s: ServerProcess, app: string) => (await s.api('GET', `/api/v1/namespaces/default/apps/${app}/workers`)).body.workers as { id: string; pid: number; status: string }[];

  /** Kills workers a failed test left without a server (a passing one leaves none). */
  const stray = (workers: { pid: number }[]) => workers.filter((w) => alive(w.pid)).forEach((w) => process.kill(w.pid, 'SIGKILL'));

  /** kill -9 of the data plane and the control plane of a server, not of its workers. */
  async function killMolt(s: ServerProcess): Promise<void> {
    const cp = controlPlaneOf(s.dataDir)!;
    await s.stop('SIGKILL');
    process.kill(cp.pid, 'SIGKILL');
    await waitFor(() => !alive(cp.pid), 5000, 'the control plane to die');
  }

  it('kill -9 of every molt process: the workers keep serving, and the next molt server adopts them (same pids, no duplicates, no restarts)', async () => {
    const server = new ServerProcess(tempDir());
    await server.start();
    let before: { id: string; pid: number }[] = [];
    try {
      const dir = simpleApp(tempDir(), { name: 'kept', config: { workers: 2 } });
      expect((await server.molt(['app', 'create'], { cwd: dir })).code).toBe(0);
      before = await workersOf(server, 'kept');
      const identities = await Promise.all(before.map((w) => server.callWorker({ id: w.id, port: null }, '/pid')));

      await killMolt(server);
      expect(moltProcesses().filter((p) => p.title.endsWith(server.dataDir))).toEqual([]);
      // Alone, they keep serving whoever reaches them.
      expect(before.every((w) => alive(w.pid))).toBe(true);
      for (let i = 0; i < 20; i++) expect(await Promise.all(before.map((w) => server.callWorker({ id: w.id, port: null }, '/pid')))).toEqual(identities);
      // What they print meanwhile waits in their pipes for the next server.
      await server.callWorker({ id: before[0]!.id, port: null }, '/log?line=written-while-molt-was-down');

      await server.start();
      expect(server.output).toMatch(/adopted 2 running workers of the previous molt server/);
      const after = await workersOf(server, 'kept');
      expect(after.map((w) => [w.id, w.pid, w.status])).toEqual(before.map((w) => [w.id, w.pid, 'RUNNING']));
      expect(await Promise.all(after.map((w) => server.callWorker({ id: w.id, port: null }, '/pid')))).toEqual(identities);
      for (const w of before) expect(moltProcesses().filter((p) => p.title === `molt: worker ${w.id} default/kept`).map((p) => p.pid)).toEqual([w.pid]);
      // Through the gateway, both serve again; their output reaches the logs as before.
      const seen = new Set<string>();
      for (let i = 0; i < 40; i++) seen.add(await (await fetch(server.route('default', 'kept', '/pid'), auth(server))).text());
      expect([...seen].sort()).toEqual([...identities].sort());
      await fetch(server.route('default', 'kept', '/log?line=written-after-adoption'), auth(server));
      await waitFor(async () => {
        const logs = (await server.molt(['app', 'logs', '--app', 'kept'])).stdout;
        return logs.includes('written-while-molt-was-down') && logs.includes('written-after-adoption');
      }, 10_000, 'both log lines');
      // Adopted once, adoptable again.
      await killMolt(server);
      await server.start();
      expect((await workersOf(server, 'kept')).map((w) => [w.id, w.pid, w.status])).toEqual(before.map((w) => [w.id, w.pid, 'RUNNING']));
      // Adopted workers are managed as any: a rolling update replaces them.
      simpleApp(dir, { name: 'kept', body: 'replaced', config: { workers: 2 } });
      const update = await server.molt(['app', 'update', '--strategy', 'rolling'], { cwd: dir });
      expect(update.code, update.stderr).toBe(0);
      expect(await (await fetch(server.route('default', 'kept', '/'), auth(server))).text()).toBe('replaced');
      expect(before.every((w) => !alive(w.pid))).toBe(true);
    } finally {
      await server.stop();
      stray(before);
    }
  });

  it('a worker whose molt server does not come back within the grace period stops by itself', async () => {
    const server = new ServerProcess(tempDir(), ['--adopt-grace-ms', '4000']);
    await server.start();
    try {
      const dir = simpleApp(tempDir(), { name: 'abandoned' });
      expect((await server.molt(['app', 'create'], { cwd: dir })).code).toBe(0);
      const [w] = await workersOf(server, 'abandoned');
      await killMolt(server);
      expect(await server.callWorker({ id: w!.id, port: null }, '/')).toBe('hello');
      await waitFor(() => !alive(w!.pid), 15_000, 'the abandoned worker to stop');
      // The next server finds it gone, records it and starts another.
      await server.start();
      const res = await waitFor(async () => {
        const r = await fetch(server.route('default', 'abandoned', '/'), auth(server));
        return r.status === 200 ? r : undefined;
      }, 20_000, 'a new worker');
      expect(await res.text()).toBe('hello');
      const all = (await server.api('GET', '/api/v1/namespaces/default/apps/abandoned/workers?all=true')).body.workers as { id: string; status: string; detail: string | null }[];
      expect(all.find((x) => x.id === w!.id)?.status).not.toBe('RUNNING');
      expect(all.filter((x) => x.status === 'RUNNING')).toHaveLength(1);
    } finally {
      await server.stop();
    }
  });

  it('a clean stop stops the workers; with --keep-workers they stay running for the next server', async () => {
    const dataDir = tempDir();
    const server = new ServerProcess(dataDir);
    await server.start();
    const dir = simpleApp(tempDir(), { name: 'tidy' });
    expect((await server.molt(['app', 'create'], { cwd: dir })).code).toBe(0);
    const [first] = await workersOf(server, 'tidy');
    await server.stop();
    expect(alive(first!.pid)).toBe(false);

    const keeping = new ServerProcess(dataDir, ['--keep-workers']);
    await keeping.start();
    const [second] = await workersOf(keeping, 'tidy');
    expect(second!.id).not.toBe(first!.id);
    await keeping.stop();
    expect(keeping.output).toContain('its workers keep running for the next server to adopt');
    expect(alive(second!.pid)).toBe(true);
    expect(await keeping.callWorker({ id: second!.id, port: null }, '/')).toBe('hello');

    const next = new ServerProcess(dataDir);
    await next.start();
    try {
      expect((await workersOf(next, 'tidy')).map((w) => [w.id, w.pid, w.status])).toEqual([[second!.id, second!.pid, 'RUNNING']]);
      expect(await (await fetch(next.route('default', 'tidy', '/'), auth(next))).text()).toBe('hello');
    } finally {
      await next.stop();
    }
    expect(alive(second!.pid)).toBe(false);
  });
});

describe('molt server --takeover', () => {
  const auth = (s: ServerProcess) => ({ headers: { authorization: `Bearer ${s.adminToken}` } });
  const gatewayOf = (dataDir: string) => moltProcesses().find((p) => p.title === `molt: gateway ${dataDir}`);

  /** Stops the server that serves after takeovers (started by the old one, not the test), then the test's own. */
  async function stopAfterTakeovers(server: ServerProcess, serving: number | undefined): Promise<void> {
    if (serving && alive(serving)) {
      process.kill(serving, 'SIGTERM');
      await waitFor(() => !alive(serving), 30_000, 'the new server to stop');
    }
    await server.stop();
  }

  /** Reads an event stream to its end: the data of each event. */
  async function readEvents(res: Response): Promise<string[]> {
    const text = await res.text();
    return text.split('\n').filter((l) => l.startsWith('data: ')).map((l) => l.slice(6));
  }

  it('hands the port and the workers to a new molt server under load: 0 failed, same worker pids, an open event stream gets every event', async () => {
    const server = new ServerProcess(tempDir());
    await server.start();
    let next: number | undefined;
    try {
      const dir = simpleApp(tempDir(), { name: 'handed', config: { workers: 2 } });
      expect((await server.molt(['app', 'create'], { cwd: dir })).code).toBe(0);
      const before = (await server.api('GET', '/api/v1/namespaces/default/apps/handed/workers')).body.workers as { id: string; pid: number }[];
      const old = server.child.pid!;
      const load = runLoad(server.route('default', 'handed', '/'), { concurrency: 8, headers: auth(server).headers, maxMs: 60_000 });
      const stream = fetch(server.route('default', 'handed', '/sse?n=30&ms=100'), auth(server)).then(readEvents);
      await sleep(300);

      const takeover = await server.molt(['server', '--takeover', '--data-dir', server.dataDir, '--port', '0']);
      expect(takeover.code, takeover.stderr).toBe(0);
      expect(takeover.stdout + takeover.stderr).toMatch(/takeover: done; molt server pid \d+ serves/);
      next = moltProcesses().find((p) => p.title === `molt: gateway ${server.dataDir}` && p.pid !== old)?.pid;
      expect(next).toBeDefined();
      expect(readFileSync(join(server.dataDir, 'server.pid.main'), 'utf8').trim()).toBe(String(next));
      // The old one drains (the stream ends on it) and exits by itself.
      await waitFor(() => server.child.exitCode !== null, 40_000, 'the old data plane to exit');
      expect(server.child.exitCode).toBe(0);
      await sleep(500);
      const result = await load.stop();
      expect(result.errors).toEqual([]);
      expect(result.requests).toBeGreaterThan(200);
      expect(await stream).toEqual(Array.from({ length: 30 }, (_, i) => `event ${i}`));

      const after = (await server.api('GET', '/api/v1/namespaces/default/apps/handed/workers')).body.workers as { id: string; pid: number; status: string }[];
      expect(after.map((w) => [w.id, w.pid, w.status])).toEqual(before.map((w) => [w.id, w.pid, 'RUNNING']));
      expect(await (await fetch(server.route('default', 'handed', '/'), auth(server))).text()).toBe('hello');
      // The new server is managed as any: an update goes through.
      simpleApp(dir, { name: 'handed', body: 'after the takeover', config: { workers: 2 } });
      const update = await server.molt(['app', 'update'], { cwd: dir });
      expect(update.code, update.stderr).toBe(0);
      expect(await (await fetch(server.route('default', 'handed', '/'), auth(server))).text()).toBe('after the takeover');
      // The new server can be taken over in turn.
      const again = await server.molt(['server', '--takeover', '--data-dir', server.dataDir, '--port', '0']);
      expect(again.code, again.stderr).toBe(0);
      const third = Number(readFileSync(join(server.dataDir, 'server.pid.main'), 'utf8'));
      expect(third).not.toBe(next);
      await waitFor(() => !alive(next!), 40_000, 'the second data plane to exit');
      next = third;
      expect(await (await fetch(server.route('default', 'handed', '/'), auth(server))).text()).toBe('after the takeover');
    } finally {
      await stopAfterTakeovers(server, next);
    }
  });

  it('a newer molt whose worker runtime changed says so and replaces each worker, one at a time, with no failed request', async () => {
    // A newer molt: this one copied, with its worker runtime changed (its dependencies are this checkout's).
    const newer = tempDir();
    chmodSync(newer, 0o755);
    for (const part of ['bin', 'dist', 'package.json']) cpSync(join(ROOT, 'packages/molt', part), join(newer, part), { recursive: true });
    symlinkSync(join(ROOT, 'node_modules'), join(newer, 'node_modules'));
    appendFileSync(join(newer, 'dist/runtime/serve-fetch.js'), '\n// a newer worker runtime\n');
    const server = new ServerProcess(tempDir());
    await server.start();
    let next: number | undefined;
    try {
      const dir = simpleApp(tempDir(), { name: 'renewed', config: { workers: 2 } });
      expect((await server.molt(['app', 'create'], { cwd: dir })).code).toBe(0);
      const workers = async () => (await server.api('GET', '/api/v1/namespaces/default/apps/renewed/workers')).body.workers as { id: string; pid: number; status: string }[];
      const before = await workers();
      const load = runLoad(server.route('default', 'renewed', '/'), { concurrency: 4, headers: auth(server).headers, maxMs: 90_000 });
      await sleep(300);
      const takeover = await server.molt(['server', '--takeover', '--data-dir', server.dataDir, '--port', '0'], { bin: join(newer, 'bin/molt.js') });
      expect(takeover.code, takeover.stderr).toBe(0);
      next = Number(readFileSync(join(server.dataDir, 'server.pid.main'), 'utf8'));
      // It says why, then replaces both workers: fresh ids and pids, the old processes gone.
      const events = async () => {
        const text = await (await fetch(`${server.url}/api/v1/namespaces/default/apps/renewed/events`, auth(server))).text();
        return text.split('\n').filter(Boolean).map((l) => JSON.parse(l) as { type: string; message: string });
      };
      await waitFor(async () => (await events()).filter((e) => e.type === 'worker.recycled').length === 2, 60_000, 'both workers to be replaced');
      const said = await events();
      expect(said.find((e) => e.type === 'runtime.changed')?.message).toMatch(/^the worker runtime changed \([0-9a-f]{12} → [0-9a-f]{12}\): replacing 2 worker\(s\) one at a time$/);
      // One at a time: the second replacement starts after the first ended.
      const order = said.filter((e) => e.type === 'worker.recycling' || e.type === 'worker.recycled').map((e) => e.type);
      expect(order).toEqual(['worker.recycling', 'worker.recycled', 'worker.recycling', 'worker.recycled']);
      const after = await workers();
      expect(after).toHaveLength(2);
      expect(after.every((w) => w.status === 'RUNNING' && !before.some((b) => b.id === w.id || b.pid === w.pid))).toBe(true);
      expect(before.some((b) => alive(b.pid))).toBe(false);
      await sleep(300);
      const result = await load.stop();
      expect(result.errors).toEqual([]);
      expect(result.requests).toBeGreaterThan(100);
      // Taken over again by the same molt: the runtime is the same, nothing is replaced.
      const again = await server.molt(['server', '--takeover', '--data-dir', server.dataDir, '--port', '0'], { bin: join(newer, 'bin/molt.js') });
      expect(again.code, again.stderr).toBe(0);
      const third = Number(readFileSync(join(server.dataDir, 'server.pid.main'), 'utf8'));
      await waitFor(() => !alive(next!), 40_000, 'the second data plane to exit');
      next = third;
      await sleep(1000);
      expect((await workers()).map((w) => w.pid)).toEqual(after.map((w) => w.pid));
      expect((await events()).filter((e) => e.type === 'runtime.changed')).toHaveLength(1);
    } finally {
      await stopAfterTakeovers(server, next);
    }
  });

  it('a takeover whose new server fails to start changes nothing: the old one takes everything back', async () => {
    const server = new ServerProcess(tempDir());
    await server.start();
    try {
      const dir = simpleApp(tempDir(), { name: 'stays' });
      expect((await server.molt(['app', 'create'], { cwd: dir })).code).toBe(0);
      const before = (await server.api('GET', '/api/v1/namespaces/default/apps/stays/workers')).body.workers as { id: string; pid: number }[];
      // Refused by the new server's own checks, after the old one let go of everything.
      const takeover = await server.molt(['server', '--takeover', '--data-dir', server.dataDir, '--port', '0', '--worker-uids', '5-1']);
      expect(takeover.code).toBe(1);
      expect(takeover.stderr).toMatch(/MOLT_ERR_TAKEOVER_FAILED.*the new data plane exited before it was ready .*; the old server \(pid \d+\) serves on/);
      expect(gatewayOf(server.dataDir)?.pid).toBe(server.child.pid);
      const after = (await server.api('GET', '/api/v1/namespaces/default/apps/stays/workers')).body.workers as { id: string; pid: number; status: string }[];
      expect(after.map((w) => [w.id, w.pid, w.status])).toEqual(before.map((w) => [w.id, w.pid, 'RUNNING']));
      expect(await (await fetch(server.route('default', 'stays', '/'), auth(server))).text()).toBe('hello');
    } finally {
      await server.stop();
    }
  });

  it('--takeover with no server on the data dir says so and starts nothing', async () => {
    const dataDir = tempDir();
    const res = await new ServerProcess(dataDir).molt(['server', '--takeover', '--data-dir', dataDir, '--port', '0']);
    expect(res.code).toBe(1);
    expect(res.stderr).toContain(`no molt server to take over on data dir ${dataDir} (none is running); start one without --takeover`);
  });
});
