import { readdirSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { ServerProcess, simpleApp, tempDir } from '../helpers.js';
import { record } from './report.js';

describe('one server per data dir', () => {
  it('a second molt server on a data dir in use exits at once, naming the process that holds it, and changes nothing', async () => {
    const dataDir = tempDir();
    const first = new ServerProcess(dataDir);
    await first.start();
    try {
      const dir = simpleApp(join(tempDir(), 'app'), { name: 'app', config: { workers: 2 } });
      expect((await first.molt(['app', 'create'], { cwd: dir })).code).toBe(0);
      const before = (await first.api('GET', '/api/v1/namespaces/default/apps/app/workers?all=1')).body.workers as { id: string; pid: number; status: string }[];
      const files = readdirSync(dataDir).sort();

      const second = new ServerProcess(dataDir);
      const started = Date.now();
      const error = await second.start().then(
        () => undefined,
        (err: Error) => err.message,
      );
      await second.stop();
      expect(Date.now() - started).toBeLessThan(10_000);
      expect(second.child.exitCode).toBe(1);
      expect(error).toContain(`MOLT_ERR_DATA_DIR_IN_USE]: data dir ${dataDir} is in use by process ${first.child.pid}`);
      expect(error).toContain(`(molt: gateway ${dataDir})`);

      // The first server and its workers are as they were: same workers, same pids, no duplicates.
      const after = (await first.api('GET', '/api/v1/namespaces/default/apps/app/workers?all=1')).body.workers as { id: string; pid: number; status: string }[];
      expect(after).toEqual(before);
      expect(after.filter((w) => w.status === 'RUNNING')).toHaveLength(2);
      expect(readdirSync(dataDir).sort()).toEqual(files);
      const res = await fetch(first.route('default', 'app', '/'), { headers: { authorization: `Bearer ${first.adminToken}` } });
      expect(await res.text()).toBe('hello');
      record({ boundary: 'data dir', attack: 'a second molt server on a data dir in use', expected: 'exits non-zero at once naming the holder; the first keeps its workers', observed: `exit ${second.child.exitCode} in ${Date.now() - started} ms naming pid ${first.child.pid}; workers and pids unchanged`, refused: true });

      // The lock is the OS's: it goes with the process, however that ends.
      await first.stop('SIGKILL');
      const third = new ServerProcess(dataDir);
      await third.start();
      await third.stop();
    } finally {
      await first.stop();
    }
  });
});
