import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ServerProcess, simpleApp, tempDir, waitFor } from './helpers.js';

describe('update policies', () => {
  const server = new ServerProcess(tempDir());
  beforeAll(() => server.start());
  afterAll(() => server.stop());

  const call = async (app: string, path = '/') => (await fetch(server.route('default', app, path), { headers: { authorization: `Bearer ${server.adminToken}` } })).text();

  it('refuses to update or roll back an immutable app, says how to proceed, and changes nothing', async () => {
    const dir = simpleApp(join(tempDir(), 'frozen'), { name: 'frozen', body: 'v1' });
    expect((await server.molt(['app', 'create', '--immutable'], { cwd: dir })).code).toBe(0);
    simpleApp(dir, { name: 'frozen', body: 'v2' });
    const update = await server.molt(['app', 'update'], { cwd: dir });
    expect(update.code).toBe(1);
    expect(update.stderr).toContain('error [MOLT_ERR_APP_IMMUTABLE]');
    expect(update.stderr).toContain('delete it and create it again');
    const rollback = await server.molt(['app', 'rollback', '--app', 'frozen']);
    expect(rollback.stderr).toContain('MOLT_ERR_APP_IMMUTABLE');
    expect(await call('frozen')).toBe('v1');
    expect((await server.api('GET', '/api/v1/namespaces/default/apps/frozen/history')).body.revisions).toHaveLength(1);

    // `updatable: false` in the config means the same.
    const config = simpleApp(join(tempDir(), 'fixed'), { name: 'fixed', config: { updatable: false } });
    expect((await server.molt(['app', 'create'], { cwd: config })).code).toBe(0);
    expect((await server.molt(['app', 'update'], { cwd: simpleApp(config, { name: 'fixed', body: 'other', config: { updatable: false } }) })).stderr).toContain('MOLT_ERR_APP_IMMUTABLE');
  });

  it('an immutable app that follows a volume still gets its new revisions (its code stays)', async () => {
    await server.molt(['volume', 'create', 'feed']);
    const data = tempDir();
    writeFileSync(join(data, 'a.txt'), 'first');
    await server.molt(['volume', 'push', 'feed', data]);
    const dir = simpleApp(join(tempDir(), 'reader'), {
      name: 'reader',
      config: { volumes: [{ name: 'feed' }] },
      extra: "import { readFileSync } from 'node:fs';\nconst read = () => readFileSync(process.env.MOLT_VOLUME_FEED + '/a.txt', 'utf8');",
    });
    writeFileSync(join(dir, 'index.ts'), (await import('node:fs')).readFileSync(join(dir, 'index.ts'), 'utf8').replace("return new Response(\"hello\");", 'return new Response(read());'));
    expect((await server.molt(['app', 'create', '--immutable'], { cwd: dir })).code).toBe(0);
    expect(await call('reader')).toBe('first');
    writeFileSync(join(data, 'a.txt'), 'second');
    await server.molt(['volume', 'push', 'feed', data]);
    await waitFor(async () => (await call('reader')) === 'second', 20_000, 'the new volume revision');
  });

  it('app update --dry-run prints what would change and the strategy, and changes nothing', async () => {
    const dir = simpleApp(join(tempDir(), 'dry'), { name: 'dry', body: 'before' });
    expect((await server.molt(['app', 'create'], { cwd: dir })).code).toBe(0);
    const workers = (await server.api('GET', '/api/v1/namespaces/default/apps/dry/workers')).body.workers.map((w: { id: string }) => w.id);
    simpleApp(dir, { name: 'dry', body: 'after', config: { env: { MODE: 'fast' }, workers: 2, resources: { cpu: 0.5 } } });
    const dry = await server.molt(['app', 'update', '--dry-run'], { cwd: dir });
    expect(dry.code, dry.stderr).toBe(0);
    expect(dry.stdout).toMatch(/code: release \w{12} → \w{12}/);
    expect(dry.stdout).toContain('env: {} → {"MODE":"fast"}');
    expect(dry.stdout).toContain('workers: 1 → 2');
    expect(dry.stdout).toContain('resources: {} → {"cpu":0.5}');
    expect(dry.stdout).toContain('strategy: rolling (the runtime config changed (env, resources); the worker count changes: workers are replaced one by one)');
    expect(dry.stdout).toContain('dry run: nothing was changed');
    expect(await call('dry')).toBe('before');
    expect((await server.api('GET', '/api/v1/namespaces/default/apps/dry/history')).body.revisions).toHaveLength(1);
    expect((await server.api('GET', '/api/v1/namespaces/default/apps/dry/workers')).body.workers.map((w: { id: string }) => w.id)).toEqual(workers);
  });
});
