import { rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { buildRelease } from '../packages/molt/src/release/build-release.js';
import { ServerProcess, tempDir, writeApp } from './helpers.js';
import { compatApp } from './compat/compat-apps.js';

// Builds redo only what changed, and always end where a clean build would.
describe('incremental builds', () => {
  const app = () =>
    compatApp(
      'shop',
      {
        'index.ts': `import { Hono } from 'hono';\nimport { price } from './lib/price.ts';\nimport { label } from './lib/label.ts';\nconst app = new Hono();\napp.get('/', (c) => c.text(label(price(2))));\nexport default app;\n`,
        'lib/price.ts': `import rates from '../rates.json';\nexport const price = (n: number) => n * rates.unit;\n`,
        'lib/label.ts': `export const label = (p: number) => \`costs \${p}\`;\n`,
        'rates.json': '{ "unit": 3 }',
      },
      { dependencies: ['hono'] },
    );
  /** What a build from nothing makes of the same files. */
  const clean = async (dir: string) => (await buildRelease(dir, { outDir: join(tempDir(), 'clean') })).id;

  it('compiles what changed, reuses the rest, and ends with the id a clean build gives', async () => {
    const dir = app();
    const cold = await buildRelease(dir);
    expect(cold).toMatchObject({ cached: false, work: { compiled: 3, dependenciesCopied: true } });

    const again = await buildRelease(dir);
    expect(again).toMatchObject({ id: cold.id, cached: true, work: { compiled: 0, dependenciesCopied: false } });

    writeFileSync(join(dir, 'lib/label.ts'), 'export const label = (p: number) => `now ${p}`;\n');
    const one = await buildRelease(dir);
    expect(one).toMatchObject({ cached: false, work: { compiled: 1, dependenciesCopied: false } });
    expect(one.id).not.toBe(cold.id);
    expect(one.id).toBe(await clean(dir));

    // A data file a module bundles: every module is compiled again, and the new value is in.
    writeFileSync(join(dir, 'rates.json'), '{ "unit": 5 }');
    const data = await buildRelease(dir);
    expect(data.work.compiled).toBe(3);
    expect(data.id).toBe(await clean(dir));

    // A module added and another dropped from the graph.
    writeApp(dir, {
      'lib/label.ts': `export { label } from './format.ts';\n`,
      'lib/format.ts': 'export const label = (p: number) => `format ${p}`;\n',
    });
    const grown = await buildRelease(dir);
    expect(grown.manifest.modules.map((m) => m.source)).toEqual(['index.ts', 'lib/format.ts', 'lib/label.ts', 'lib/price.ts']);
    expect(grown.id).toBe(await clean(dir));
    writeFileSync(join(dir, 'index.ts'), `import { label } from './lib/format.ts';\nexport default { fetch: () => new Response(label(1)) };\n`);
    const shrunk = await buildRelease(dir);
    expect(shrunk.manifest.modules.map((m) => m.source)).toEqual(['index.ts', 'lib/format.ts']);
    expect(shrunk.id).toBe(await clean(dir));

    // Dependencies are copied again when package.json's dependencies change, not otherwise.
    writeFileSync(join(dir, 'package.json'), JSON.stringify({ name: 'shop', version: '1.0.0', type: 'module', dependencies: { hono: '*', 'itty-router': '*' } }));
    const deps = await buildRelease(dir);
    expect(deps.work.dependenciesCopied).toBe(true);
    expect(deps.manifest.dependencyHash).not.toBe(shrunk.manifest.dependencyHash);
    expect(deps.id).toBe(await clean(dir));
  });

  it('starts over when its output was removed or its cache is unreadable', async () => {
    const dir = app();
    const first = await buildRelease(dir);
    rmSync(join(dir, '.molt', 'build', 'lib', 'price.js'));
    const repaired = await buildRelease(dir);
    expect(repaired).toMatchObject({ id: first.id, cached: false });
    expect(repaired.work.compiled).toBe(1);
    writeFileSync(join(dir, '.molt', 'build.cache.json'), '{ not json');
    expect(await buildRelease(dir)).toMatchObject({ id: first.id, cached: false, work: { compiled: 3, dependenciesCopied: true } });
  });

  describe('through the CLI', () => {
    const server = new ServerProcess(tempDir());
    beforeAll(() => server.start());
    afterAll(() => server.stop());

    it('molt app update after molt release build --push builds nothing and uploads nothing', async () => {
      const dir = app();
      expect((await server.molt(['app', 'create'], { cwd: dir })).code).toBe(0);
      writeFileSync(join(dir, 'lib/label.ts'), 'export const label = (p: number) => `pushed ${p}`;\n');
      const push = await server.molt(['release', 'build', '--push'], { cwd: dir });
      expect(push.code, push.stderr).toBe(0);
      expect(push.stdout + push.stderr).toContain('1 module(s) compiled, dependencies reused');
      const update = await server.molt(['app', 'update'], { cwd: dir });
      expect(update.code, update.stderr).toBe(0);
      expect(update.stderr).toContain('unchanged: nothing compiled or copied');
      expect(update.stderr).toContain('is on the server already; nothing to upload');
      const res = await fetch(server.route('default', 'shop', '/'), { headers: { authorization: `Bearer ${server.adminToken}` } });
      expect(await res.text()).toBe('pushed 6');
    });
  });
});
