import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { runLoad } from './load.js';
import { alive, processes, ServerProcess, simpleApp, sleep, tempDir, waitFor } from './helpers.js';

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
    await waitFor(async () => (await server.api('GET', '/api/v1/namespaces/default/apps')).status === 200, 15_000, 'the API to answer again');
  });
});
