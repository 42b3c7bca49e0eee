import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ServerProcess, simpleApp, tempDir, writeApp } from '../helpers.js';
import { record } from './report.js';

const boundary = 'limits and quotas';
const rss = (pid: number) => Number(/VmRSS:\s+(\d+)/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))![1]) * 1024;

describe('every request is bounded before anything is allocated for it', () => {
  const server = new ServerProcess(tempDir(), ['--max-workers-per-app', '4', '--max-upload-files', '100']);
  let releaseId = '';
  const apps = async (ns = 'default') => (await server.api('GET', `/api/v1/namespaces/${ns}/apps`)).body.apps as { name: string }[];
  const workers = async (ns: string, app: string) => (await server.api('GET', `/api/v1/namespaces/${ns}/apps/${app}/workers`)).body.workers as unknown[];

  beforeAll(async () => {
    await server.start();
    const dir = simpleApp(join(tempDir(), 'base'), { name: 'base' });
    expect((await server.molt(['app', 'create'], { cwd: dir })).code).toBe(0);
    releaseId = (await server.api('GET', '/api/v1/namespaces/default/apps/base')).body.app.release;
  });
  afterAll(() => server.stop());

  it('refuses workers: 1000000000 in a create, an update and a dry run, naming the limit, and stays small', async () => {
    const config = { name: 'greedy', entry: 'index.ts', workers: 1_000_000_000 };
    const create = await server.api('POST', '/api/v1/namespaces/default/apps', { config, releaseId });
    expect(create.status).toBe(400);
    expect(create.body.error.message).toContain('`workers` must be an integer from 0 to 4, the server\'s limit per app (--max-workers-per-app) (got 1000000000)');
    for (const dryRun of [false, true]) {
      const update = await server.api('POST', '/api/v1/namespaces/default/apps/base/update', { config: { ...config, name: 'base' }, dryRun });
      expect(update.status).toBe(400);
      expect(update.body.error.code).toBe('MOLT_ERR_INVALID_CONFIG');
    }
    const cli = await server.molt(['app', 'update', '--dry-run'], { cwd: simpleApp(join(tempDir(), 'base'), { name: 'base', config: { workers: 5 } }) });
    expect(cli.code).toBe(1);
    expect(cli.stderr).toContain('from 0 to 4');
    expect((await apps()).map((a) => a.name)).toEqual(['base']);
    expect(await workers('default', 'base')).toHaveLength(1);
    const memory = rss(server.child.pid!);
    expect(memory).toBeLessThan(400 * 1024 * 1024);
    record({ boundary, attack: 'workers: 1000000000 in create, update and --dry-run', expected: '400 naming the limit (--max-workers-per-app); nothing allocated', observed: `${create.status} MOLT_ERR_INVALID_CONFIG "from 0 to 4"; 1 app, 1 worker; server RSS ${(memory / 1024 / 1024).toFixed(0)} MiB`, refused: true });
  });

  it('refuses oversized env, too many volumes and out-of-range waits, each naming its limit', async () => {
    const env = Object.fromEntries(Array.from({ length: 300 }, (_, i) => [`V${i}`, 'x']));
    const cases: [string, Record<string, unknown>, string][] = [
      ['300 env variables', { env }, '`env` has 300 variables, over the limit of 256'],
      ['a 100 KiB env value', { env: { BIG: 'x'.repeat(100 * 1024) } }, '`env` holds 102405 bytes, over the limit of 65536'],
      ['33 volumes', { volumes: Array.from({ length: 33 }, (_, i) => ({ name: `v${i}` })) }, '`volumes` lists 33 volumes, over the limit of 32'],
      ['a drain of 10 days', { rollout: { drainTimeoutMs: 864_000_000 } }, '`rollout.drainTimeoutMs` must be an integer from 0 to 3600000'],
      ['a 2 GB readiness path', { readiness: { path: `/${'a'.repeat(2000)}` } }, '`readiness.path` must start with "/", hold no spaces and be at most 1024 characters'],
      ['cpu: 1e9', { resources: { cpu: 1e9 } }, '`resources.cpu` must be a number of cores above 0 and at most 1024'],
    ];
    for (const [what, extra, message] of cases) {
      const res = await server.api('POST', '/api/v1/namespaces/default/apps', { config: { name: 'big', entry: 'index.ts', ...extra }, releaseId });
      expect(res.status, what).toBe(400);
      expect(res.body.error.message).toContain(message);
      record({ boundary, attack: `app config with ${what}`, expected: '400 naming the limit', observed: `${res.status} ${res.body.error.code}: ${message}`, refused: true });
    }
    expect((await apps()).map((a) => a.name)).toEqual(['base']);
  });

  it('refuses a blobs/missing question longer than the file limit', async () => {
    const hashes = Array.from({ length: 101 }, (_, i) => i.toString(16).padStart(64, '0'));
    const res = await server.api('POST', '/api/v1/namespaces/default/blobs/missing', { hashes });
    expect(res.status).toBe(413);
    expect(res.body.error.message).toBe('the tree has 101 files, over the limit of 100; raise --max-upload-files on the server or upload fewer files');
    record({ boundary, attack: 'blobs/missing with more hashes than --max-upload-files', expected: '413 naming the limit', observed: `${res.status} ${res.body.error.code}`, refused: true });
  });
});

describe('per-namespace quotas, set by the server admin, refuse an update up front', () => {
  const server = new ServerProcess(tempDir());
  let admin = '';
  let deployer = '';
  const dir = (config: Record<string, unknown> = {}, name = 'web') => simpleApp(join(tempDir(), name), { name, config });

  beforeAll(async () => {
    await server.start();
    expect((await server.molt(['namespace', 'create', 'team'])).code).toBe(0);
    admin = await server.createToken('team', 'admin');
    deployer = await server.createToken('team', 'deployer');
  });
  afterAll(() => server.stop());

  it('is set by `molt namespace quota` (server admin only) and shown by `namespace list`', async () => {
    const refused = await server.molt(['namespace', 'quota', 'team', '--workers', '99'], { token: admin });
    expect(refused.code).toBe(1);
    expect(refused.stderr).toContain("only the server's admin token can do this");
    record({ boundary, attack: "a namespace admin raises its own namespace's quota", expected: '403', observed: 'MOLT_ERR_FORBIDDEN', refused: true });
    const set = await server.molt(['namespace', 'quota', 'team', '--workers', '3', '--memory-mb', '512', '--cpu', '1.5', '--volume-bytes', '100', '--releases', '30']);
    expect(set.code, set.stderr).toBe(0);
    const list = await server.molt(['namespace', 'list']);
    expect(list.stdout).toMatch(/team\s+0\/3\s+0\/1\.5\s+0\/512\s+0\s+0\/100\s+0\/30\s+\d+/);
    const bad = await server.molt(['namespace', 'quota', 'team', '--workers', '-1']);
    expect(bad.code).toBe(1);
    expect(bad.stderr).toContain('--workers must be a whole number of at least 0, or none');
  });

  it('refuses apps past the worker, memory and CPU quota (dry runs too), counting a rolling update\'s surge, and creates nothing', async () => {
    const first = await server.molt(['app', 'create', '-n', 'team'], { cwd: dir({ workers: 2, resources: { memoryMb: 128 } }), token: deployer });
    expect(first.code, first.stderr).toBe(0);
    // 2 running + 2 of a second app = 4 > 3.
    const second = await server.molt(['app', 'create', '-n', 'team'], { cwd: dir({ workers: 2 }, 'api'), token: deployer });
    expect(second.code).toBe(1);
    expect(second.stderr).toContain("MOLT_ERR_QUOTA_EXCEEDED]: namespace team's quota allows 3 workers; it holds 2 and app api needs 2");
    expect((await server.api('GET', '/api/v1/namespaces/team/apps')).body.apps).toHaveLength(1);
    record({ boundary, attack: 'a second app past the namespace worker quota', expected: '403 naming the quota, what it holds and needs; no app made', observed: 'MOLT_ERR_QUOTA_EXCEEDED "allows 3 workers; it holds 2 and app api needs 2"; 1 app', refused: true });
    // A rolling update's surge worker counts: 2 + 1 surge fits 3; memory 3 × 256 does not fit 512.
    const memory = await server.molt(['app', 'update', '-n', 'team', '--dry-run'], { cwd: dir({ workers: 2, resources: { memoryMb: 256 } }), token: deployer });
    expect(memory.code).toBe(1);
    expect(memory.stderr).toContain("quota allows 512 MiB of memory; it holds 0 and app web needs 768 (with 1 surge worker(s) during the rolling update)");
    expect(memory.stderr).toContain('set rollout: { maxSurge: 0, maxUnavailable: 1 }');
    const inPlace = await server.molt(['app', 'update', '-n', 'team', '--dry-run'], { cwd: dir({ workers: 2, resources: { memoryMb: 256 }, rollout: { maxSurge: 0, maxUnavailable: 1 } }), token: deployer });
    expect(inPlace.code, inPlace.stderr).toBe(0);
    const cpu = await server.molt(['app', 'update', '-n', 'team', '--dry-run'], { cwd: dir({ workers: 2, resources: { memoryMb: 128, cpu: 1 } }), token: deployer });
    expect(cpu.code).toBe(1);
    expect(cpu.stderr).toContain('quota allows 1.5 CPU');
    record({ boundary, attack: 'an update whose rolling surge passes the memory quota (--dry-run)', expected: '403 naming the surge and maxSurge: 0 as a fix', observed: 'MOLT_ERR_QUOTA_EXCEEDED "… needs 768 (with 1 surge worker(s) …)"', refused: true });
  });

  it('admits only what fits of many creates sent at once, each of which would fit alone', async () => {
    expect((await server.molt(['namespace', 'create', 'race'])).code).toBe(0);
    expect((await server.molt(['namespace', 'quota', 'race', '--workers', '2'])).code).toBe(0);
    const releaseId = await server.molt(['release', 'build', '--push', '-n', 'race'], { cwd: dir({}, 'twin') }).then((r) => r.stdout.trim());
    const create = (name: string) => server.api('POST', '/api/v1/namespaces/race/apps', { config: { name, entry: 'index.ts', workers: 1, readiness: { path: '/healthz' } }, releaseId });
    const results = await Promise.all(Array.from({ length: 8 }, (_, i) => create(`twin-${i}`)));
    const statuses = results.map((r) => r.status);
    expect(statuses.filter((s) => s === 202)).toHaveLength(2);
    expect(statuses.filter((s) => s === 403)).toHaveLength(6);
    expect((await server.api('GET', '/api/v1/namespaces/race/apps')).body.apps).toHaveLength(2);
    record({ boundary, attack: '8 app creates of 1 worker at once against a quota of 2 workers', expected: '2 admitted, 6 refused with 403', observed: `${statuses.filter((s) => s === 202).length} × 202, ${statuses.filter((s) => s === 403).length} × 403; 2 apps`, refused: true });
  });

  it('refuses a volume push past its volume bytes and a release past its release count', async () => {
    expect((await server.molt(['volume', 'create', 'data', '-n', 'team'], { token: deployer })).code).toBe(0);
    const small = writeApp(join(tempDir(), 'small'), { 'a.txt': 'x'.repeat(60) });
    expect((await server.molt(['volume', 'push', 'data', small, '-n', 'team'], { token: deployer })).code).toBe(0);
    const more = writeApp(join(tempDir(), 'more'), { 'a.txt': 'x'.repeat(60), 'b.txt': 'y'.repeat(60) });
    const push = await server.molt(['volume', 'push', 'data', more, '-n', 'team'], { token: deployer });
    expect(push.code).toBe(1);
    expect(push.stderr).toContain("namespace team's quota allows 100 bytes of volumes; it holds 60 and this push to volume data adds 60");
    record({ boundary, attack: 'a volume push past the namespace volume bytes quota', expected: '403; no revision', observed: 'MOLT_ERR_QUOTA_EXCEEDED "allows 100 bytes of volumes; it holds 60 and this push … adds 60"', refused: true });
    // Room for one more release: it fits, the next does not.
    const held = (await server.api('GET', '/api/v1/namespaces/team/releases')).body.releases.length as number;
    expect((await server.molt(['namespace', 'quota', 'team', '--releases', String(held + 1)])).code).toBe(0);
    const build = (body: string) => server.molt(['release', 'build', '--push', '-n', 'team'], { cwd: simpleApp(join(tempDir(), body), { name: 'web', body }), token: deployer });
    expect((await build('fits')).code).toBe(0);
    const over = await build('over');
    expect(over.code).toBe(1);
    expect(over.stderr).toContain(`namespace team's quota allows ${held + 1} releases; it holds ${held + 1}`);
    expect((await server.api('GET', '/api/v1/namespaces/team/releases')).body.releases).toHaveLength(held + 1);
    expect(over.stderr).toContain('delete releases no app uses (`molt release delete ID`)');
    record({ boundary, attack: 'a release upload past the namespace release quota', expected: '403; no release stored', observed: `MOLT_ERR_QUOTA_EXCEEDED "allows ${held + 1} releases; it holds ${held + 1}"; no release added`, refused: true });
    // The release web runs cannot go; an unused one can, which makes room.
    const running = (await server.api('GET', '/api/v1/namespaces/team/apps/web')).body.app.release as string;
    const inUse = await server.molt(['release', 'delete', running.slice(0, 12), '-n', 'team'], { token: deployer });
    expect(inUse.code).toBe(1);
    expect(inUse.stderr).toContain(`release ${running.slice(0, 12)} is in use by app(s) web`);
    const unused = ((await server.api('GET', '/api/v1/namespaces/team/releases')).body.releases as { id: string }[]).find((r) => r.id !== running)!.id;
    expect((await server.molt(['release', 'delete', unused.slice(0, 12), '-n', 'team'], { token: deployer })).code).toBe(0);
    expect((await build('over')).code).toBe(0);
  });
});
