import { readFileSync, renameSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { appRun, freePort, molt, simpleApp, sleep, tempDir, waitFor } from './helpers.js';

describe('molt app run, as an editor saves files', () => {
  it('catches atomic saves (a temp file renamed over the real one), names the real file, and survives many builds in a row', async () => {
    const dir = simpleApp(join(tempDir(), 'editor'), { name: 'editor', body: 'v0' });
    const port = await freePort();
    const { child, output } = appRun(dir, port);
    const get = () => fetch(`http://127.0.0.1:${port}/`).then((r) => r.text(), () => undefined);
    try {
      expect(await waitFor(get, 15_000, 'local app')).toBe('v0');
      const source = () => readFileSync(join(dir, 'index.ts'), 'utf8');
      for (let i = 1; i <= 5; i++) {
        // As vim, VS Code and `sed -i` save: write a temp file beside it, then rename it over.
        const temp = join(dir, `.index.ts.${i}.swp`);
        writeFileSync(temp, source().replace(/"v\d+"/, `"v${i}"`));
        renameSync(temp, join(dir, 'index.ts'));
        expect(await waitFor(async () => ((await get()) === `v${i}` ? 'ok' : undefined), 15_000, `save ${i}`)).toBe('ok');
        await sleep(200);
      }
      expect(output()).toMatch(/molt: index\.ts changed; hot-swapped/);
      expect(output()).not.toMatch(/\.swp/);
      expect(output()).not.toMatch(/ENOENT|scandir/);
      // A file under .molt or node_modules changing is not a change of the app.
      const saves = (output().match(/ changed; /g) ?? []).length;
      writeFileSync(join(dir, '.molt', 'note.txt'), 'x');
      await sleep(800);
      expect((output().match(/ changed; /g) ?? []).length).toBe(saves);
      expect(child.exitCode).toBeNull();
    } finally {
      child.kill('SIGINT');
    }
  });

  it('says the port is in use and exits, rather than printing a stack and hanging', async () => {
    const dir = simpleApp(join(tempDir(), 'taken'), { name: 'taken' });
    const holder = createServer();
    const port = await new Promise<number>((r) => holder.listen(0, '127.0.0.1', () => r((holder.address() as { port: number }).port)));
    try {
      const t0 = Date.now();
      const res = await molt(['app', 'run', '--port', String(port)], { cwd: dir });
      expect(res.code).toBe(1);
      expect(res.stderr).toContain(`port ${port} is in use on 127.0.0.1; pass --port`);
      expect(res.stderr).not.toMatch(/\n\s+at /);
      expect(Date.now() - t0).toBeLessThan(10_000);
    } finally {
      holder.close();
    }
  });
});
