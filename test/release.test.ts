import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { appRun, copyExample, molt, ServerProcess, simpleApp, sleep, tempDir, waitFor, writeApp, freePort } from './helpers.js';

describe('releases', () => {
  const server = new ServerProcess(tempDir());
  beforeAll(() => server.start());
  afterAll(() => server.stop());

  it('builds a content-addressed release that keeps the module graph', async () => {
    const dir = copyExample();
    const a = JSON.parse((await molt(['release', 'build', '--json'], { cwd: dir })).stdout);
    const b = JSON.parse((await molt(['release', 'build', '--json'], { cwd: dir })).stdout);
    expect(a.id).toMatch(/^[0-9a-f]{64}$/);
    expect(b.id).toBe(a.id);
    expect(a.manifest).toMatchObject({ app: 'get-start', version: '1.0.0', node: process.versions.node, entry: 'app.js' });
    expect(a.manifest.dependencyHash).toMatch(/^[0-9a-f]{64}$/);
    expect(a.manifest.configHash).toMatch(/^[0-9a-f]{64}$/);
    expect(a.manifest.modules).toEqual([
      { path: 'app.js', source: 'app.ts', hash: expect.stringMatching(/^[0-9a-f]{64}$/), imports: ['greeting.js'], processes: [], codeChange: false, configChange: false },
      { path: 'greeting.js', source: 'greeting.ts', hash: expect.stringMatching(/^[0-9a-f]{64}$/), imports: [], processes: [], codeChange: false, configChange: false },
    ]);
    // Compiled one by one: app.js imports greeting.js instead of inlining it.
    expect(readFileSync(join(a.dir, 'app.js'), 'utf8')).toContain('from "./greeting.js"');
    writeFileSync(join(dir, 'greeting.ts'), "export const greeting = 'changed';\n");
    const c = JSON.parse((await molt(['release', 'build', '--json'], { cwd: dir })).stdout);
    expect(c.id).not.toBe(a.id);
    expect(c.manifest.modules[0].hash).toBe(a.manifest.modules[0].hash);
    expect(c.manifest.modules[1].hash).not.toBe(a.manifest.modules[1].hash);
  });

  it('uploads only the blobs the server lacks: a second build with one changed file sends that module, its map and the manifest', async () => {
    const dir = copyExample('hono-hello');
    const first = await server.molt(['release', 'build', '--push'], { cwd: dir });
    expect(first.code, first.stderr).toBe(0);
    const [, firstFiles, firstBytes] = /uploading (\d+) new file\(s\) \((\d+) B\)/.exec(first.stderr)!;
    expect(Number(firstFiles)).toBeGreaterThan(100); // hono's files
    writeFileSync(join(dir, 'index.ts'), readFileSync(join(dir, 'index.ts'), 'utf8').replace('hello from hono', 'hello again from hono'));
    const second = await server.molt(['release', 'build', '--push'], { cwd: dir });
    const [, files, bytes] = /uploading (\d+) new file\(s\) \((\d+) B\)/.exec(second.stderr)!;
    // index.js changed, its source map, and the manifest that records its hash.
    expect(Number(files)).toBe(3);
    expect(Number(bytes)).toBeLessThan(Number(firstBytes) / 50);
    const list = JSON.parse((await server.molt(['release', 'list', '--json'])).stdout);
    expect(list).toHaveLength(2);
  });

  it('runs a Hono app unchanged', async () => {
    const dir = copyExample('hono-hello');
    expect((await server.molt(['app', 'create'], { cwd: dir })).code).toBe(0);
    const auth = { authorization: `Bearer ${server.adminToken}` };
    expect(await (await fetch(server.route('default', 'hono-hello', '/'), { headers: auth })).text()).toBe('hello from hono');
    expect(await (await fetch(server.route('default', 'hono-hello', '/json/molt'), { headers: auth })).json()).toEqual({ hello: 'molt' });
    const echo = await fetch(server.route('default', 'hono-hello', '/echo'), { method: 'POST', headers: { ...auth, 'content-type': 'application/json' }, body: '{"a":[1,2]}' });
    expect(await echo.json()).toEqual({ a: [1, 2] });
  });

  it("serves @molt/app from the runtime's own copy, whatever copy the app bundled", async () => {
    const dir = writeApp(join(tempDir(), 'own-copy'), {
      'molt.config.json': JSON.stringify({ name: 'own-copy', entry: 'index.ts' }),
      'package.json': JSON.stringify({ name: 'own-copy', version: '2.0.0', type: 'module', dependencies: { '@molt/app': '*' } }),
      // A stale copy of @molt/app inside the app: the runtime must not use it.
      'node_modules/@molt/app/package.json': JSON.stringify({ name: '@molt/app', version: '0.0.1', type: 'module', main: 'index.js' }),
      'node_modules/@molt/app/index.js': 'export const runtime = { info: { workerId: "stale copy" } };',
      'index.ts': "import { runtime } from '@molt/app';\nexport default { fetch: () => new Response(runtime.info.workerId + ' rev ' + runtime.info.revision) };",
    });
    expect((await server.molt(['app', 'create'], { cwd: dir })).code).toBe(0);
    const text = await (await fetch(server.route('default', 'own-copy', '/'), { headers: { authorization: `Bearer ${server.adminToken}` } })).text();
    expect(text).toMatch(/^\w{22} rev 1$/);
  });

  it('molt app run serves the app locally, hot-swaps a changed module (same process) and restarts on a config change', async () => {
    const dir = simpleApp(join(tempDir(), 'local'), { name: 'local', body: 'first' });
    const port = await freePort();
    const { child, output } = appRun(dir, port);
    try {
      const get = () => fetch(`http://127.0.0.1:${port}/`).then((r) => r.text(), () => undefined);
      expect(await waitFor(get, 15_000, 'local app')).toBe('first');
      const pid = await fetch(`http://127.0.0.1:${port}/pid`).then((r) => r.text());
      await sleep(300);
      writeFileSync(join(dir, 'index.ts'), readFileSync(join(dir, 'index.ts'), 'utf8').replace('"first"', '"second"'));
      expect(await waitFor(async () => ((await get()) === 'second' ? 'second' : undefined), 15_000, 'hot swap')).toBe('second');
      expect(output()).toMatch(/index\.ts changed; hot-swapped in [\d.]+ ms \(state kept\)/);
      expect(await fetch(`http://127.0.0.1:${port}/pid`).then((r) => r.text())).toBe(pid);
      await sleep(300);
      simpleApp(dir, { name: 'local', body: 'third', config: { env: { MODE: 'x' } } });
      expect(await waitFor(async () => ((await get()) === 'third' ? 'third' : undefined), 15_000, 'restart')).toBe('third');
      expect(output()).toMatch(/changed; restarting \(hot is unsafe: the runtime config changed \(env\)/);
      expect(await fetch(`http://127.0.0.1:${port}/pid`).then((r) => r.text())).not.toBe(pid);
      // Ctrl-C stops the worker and molt app run itself.
      const exited = new Promise((r) => child.once('exit', r));
      child.kill('SIGINT');
      expect(await Promise.race([exited.then(() => 'exited'), sleep(5000).then(() => 'still running')])).toBe('exited');
      expect(await get()).toBeUndefined();
    } finally {
      child.kill('SIGINT');
    }
  });
});
