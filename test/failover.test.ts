/**
 * Two molt servers on one PostgreSQL database (each its own data dir and port): one control plane
 * leads, the other stands by and takes the lead when the leader dies, running the apps from what
 * the database holds (state and blobs); neither undoes the other's work.
 */
import { randomUUID } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { alive, processes, ServerProcess, simpleApp, sleep, tempDir, waitFor } from './helpers.js';
import { databaseFor } from './postgres.js';

const controlPlaneOf = (dataDir: string) => processes().find((p) => p.argv[0] === `molt: control-plane ${dataDir}`)?.pid;

describe('two molt servers on one PostgreSQL database', () => {
  it('one leads, the other stands by, takes the lead within 10 s of the leader\'s death and runs its apps; the old leader comes back as a standby', async () => {
    const env = { MOLT_DATABASE_URL: await databaseFor(randomUUID()) };
    const a = new ServerProcess(tempDir(), [], env);
    await a.start();
    const b = new ServerProcess(tempDir(), [], env);
    const leftovers: number[] = [];
    try {
      const dir = simpleApp(tempDir(), { name: 'ha', config: { workers: 2 } });
      const created = await a.molt(['app', 'create'], { cwd: dir });
      expect(created.code, created.stderr).toBe(0);
      const workersOn = async (s: ServerProcess) => (await s.api('GET', '/api/v1/namespaces/default/apps/ha/workers')).body.workers as { id: string; pid: number; status: string }[];
      const onA = await workersOn(a);
      expect(onA.map((w) => w.status)).toEqual(['RUNNING', 'RUNNING']);

      // B stands by: it says who leads, its API refuses with where to go, and it runs nothing.
      await b.start();
      b.adminToken = a.adminToken;
      expect(b.output).toMatch(new RegExp(`standing by: the control plane of \\S+:${a.dataDir} \\(pid \\d+, ${a.url}\\) leads`));
      const refused = await fetch(`${b.url}/api/v1/namespaces/default/apps`, { headers: { authorization: `Bearer ${a.adminToken}` } });
      expect(refused.status).toBe(503);
      expect(refused.headers.get('retry-after')).toBe('5');
      expect((await refused.json()).error).toMatchObject({ code: 'MOLT_ERR_STANDBY', message: expect.stringContaining(`this molt server stands by: the control plane of`) });
      // An update on the leader meanwhile: the standby takes no part in it.
      simpleApp(dir, { name: 'ha', body: 'v2', config: { workers: 2 } });
      const update = await a.molt(['app', 'update', '--strategy', 'rolling'], { cwd: dir });
      expect(update.code, update.stderr).toBe(0);
      expect(await (await fetch(a.route('default', 'ha', '/'), { headers: { authorization: `Bearer ${a.adminToken}` } })).text()).toBe('v2');
      const updated = await workersOn(a);
      expect(b.output).not.toMatch(/deploying|created for revision|drains/);

      // The leader dies: its gateway and control plane, kill -9. (Its workers are left; they would serve its port.)
      leftovers.push(...updated.map((w) => w.pid));
      const killedAt = Date.now();
      a.child.kill('SIGKILL');
      process.kill(controlPlaneOf(a.dataDir)!, 'SIGKILL');
      await waitFor(async () => (await b.api('GET', '/api/v1/namespaces/default/apps/ha').catch(() => ({ status: 0 }))).status === 200, 15_000, 'the standby to take the lead');
      const tookMs = Date.now() - killedAt;
      expect(tookMs).toBeLessThan(10_000);
      console.log(`the standby leads ${tookMs} ms after the leader was killed`);
      expect(b.output).toContain("this server's control plane leads now");
      // It runs the app from the database: the release's blobs came from it, its data dir never had them.
      await waitFor(async () => (await workersOn(b)).filter((w) => w.status === 'RUNNING').length === 2, 30_000, 'the app to run on the new leader');
      const onB = await workersOn(b);
      expect(onB.some((w) => updated.some((u) => u.id === w.id))).toBe(false);
      expect(await (await fetch(b.route('default', 'ha', '/'), { headers: { authorization: `Bearer ${a.adminToken}` } })).text()).toBe('v2');
      // The history the old leader wrote is the new leader's.
      const history = await b.molt(['app', 'history', '--app', 'ha']);
      expect(history.stdout, history.stdout).toMatch(/^1\s+SUPERSEDED\s.*\n2\*\s+ACTIVE\s/m);

      // The old leader comes back: it stands by, stops what its data plane still ran, and changes nothing of B's.
      await a.start();
      expect(a.output).toMatch(new RegExp(`standing by: the control plane of \\S+:${b.dataDir} \\(pid \\d+, ${b.url}\\) leads`));
      await waitFor(() => updated.every((w) => !alive(w.pid)), 15_000, 'the old leader\'s workers to stop');
      await sleep(3000);
      expect((await workersOn(b)).map((w) => [w.id, w.pid, w.status])).toEqual(onB.map((w) => [w.id, w.pid, 'RUNNING']));
      expect((await fetch(`${a.url}/api/v1/namespaces/default/apps`, { headers: { authorization: `Bearer ${a.adminToken}` } })).status).toBe(503);

      // B stops cleanly: it gives the lease up and A leads at once.
      const stoppedAt = Date.now();
      await b.stop();
      await waitFor(async () => (await a.api('GET', '/api/v1/namespaces/default/apps/ha').catch(() => ({ status: 0 }))).status === 200, 10_000, 'the old leader to lead again');
      expect(Date.now() - stoppedAt).toBeLessThan(5000);
      await waitFor(async () => (await workersOn(a)).filter((w) => w.status === 'RUNNING').length === 2, 30_000, 'the app to run on A again');
    } finally {
      for (const pid of leftovers) if (alive(pid)) process.kill(pid, 'SIGKILL');
      await b.stop().catch(() => {});
      await a.stop();
    }
  });
});

describe('the database a data dir keeps its state in', () => {
  it('is remembered: a restart without --database-url uses it, one naming another is refused and changes nothing', async () => {
    const url = await databaseFor(randomUUID());
    const server = new ServerProcess(tempDir(), [], { MOLT_DATABASE_URL: url });
    await server.start();
    await server.stop();
    // Restarted with no database named (as a takeover or a service manager might): the same one.
    const again = new ServerProcess(server.dataDir, [], { MOLT_DATABASE_URL: '' });
    await again.start();
    again.adminToken = server.adminToken;
    expect((await again.api('GET', '/api/v1/namespaces')).status).toBe(200);
    await again.stop();
    const other = await new ServerProcess(server.dataDir).molt(['server', '--data-dir', server.dataDir, '--port', '0', '--database-url', `${url}_other`]);
    expect(other.code).toBe(1);
    expect(other.stderr).toContain(`MOLT_ERR_DATABASE_MISMATCH`);
    expect(other.stderr).toContain(`data dir ${server.dataDir} keeps its state in ${url}, not in ${url}_other`);
    // A data dir whose state is in its SQLite file is not moved to PostgreSQL by a flag.
    const sqlite = new ServerProcess(tempDir(), [], { MOLT_DATABASE_URL: '' });
    await sqlite.start();
    await sqlite.stop();
    const moved = await sqlite.molt(['server', '--data-dir', sqlite.dataDir, '--port', '0', '--database-url', url]);
    expect(moved.code).toBe(1);
    expect(moved.stderr).toContain(`keeps its state in SQLite (${sqlite.dataDir}/molt.db)`);
  });
});
