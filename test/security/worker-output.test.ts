import { readdirSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ServerProcess, tempDir, waitFor } from '../helpers.js';
import { probeApp } from './probe-app.js';
import { record } from './report.js';

const boundary = 'worker output and control';
const rss = (pid: number) => Number(/VmRSS:\s+(\d+)/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))![1]) * 1024;

describe('what app code writes to molt is bounded', () => {
  const server = new ServerProcess(tempDir(), ['--max-log-mb', '1']);
  const logDir = () => join(server.dataDir, 'logs', 'default', 'noisy');
  const probe = (body: Record<string, unknown>) => fetch(server.route('default', 'noisy', '/probe'), { method: 'POST', headers: { authorization: `Bearer ${server.adminToken}` }, body: JSON.stringify(body) });
  /** The app's log files as they are now (a part rotated away while reading is skipped). */
  const logFiles = () =>
    readdirSync(logDir()).flatMap((f) => {
      try {
        return [{ size: statSync(join(logDir(), f)).size, text: readFileSync(join(logDir(), f), 'utf8') }];
      } catch {
        return [];
      }
    });
  const logBytes = () => logFiles().reduce((n, f) => n + f.size, 0);

  beforeAll(async () => {
    await server.start();
    expect((await server.molt(['app', 'create'], { cwd: probeApp(join(tempDir(), 'noisy'), 'noisy') })).code).toBe(0);
  });
  afterAll(() => server.stop());

  it('cuts lines, keeps a worker\'s log to two parts and the server\'s memory bounded while it prints 80 MB', async () => {
    for (const data of ['one line', 'lines']) {
      const res = await probe({ op: 'print', mb: 40, data });
      expect(res.status).toBe(200);
    }
    const memory = rss(server.child.pid!);
    expect(memory).toBeLessThan(400 * 1024 * 1024);
    // 80 MB printed; once the server has taken it all, at most two parts of 1 MiB are kept.
    let last = -1;
    await waitFor(async () => {
      const now = logBytes();
      const settled = now === last;
      last = now;
      await new Promise((r) => setTimeout(r, 200));
      return settled || undefined;
    }, 20_000, 'the log to settle');
    expect(logBytes()).toBeLessThan(2.2 * 1024 * 1024);
    const longest = Math.max(...logFiles().flatMap((f) => f.text.split('\n').filter(Boolean).map((l) => (JSON.parse(l) as { line: string }).line.length)));
    expect(longest).toBeLessThanOrEqual(16 * 1024);
    expect(await (await probe({ op: 'info' })).json()).toMatchObject({ ok: true });
    record({ boundary, attack: 'app code prints 80 MB, half of it without a newline', expected: 'lines cut at 16 KiB; log kept to two 1 MiB parts; server memory bounded', observed: `log ${(logBytes() / 1024 / 1024).toFixed(1)} MiB on disk, longest line ${longest} B, server RSS ${(memory / 1024 / 1024).toFixed(0)} MiB`, refused: true });
  });

  it('cuts off and replaces a worker that floods its control channel', async () => {
    const before = (await server.api('GET', '/api/v1/namespaces/default/apps/noisy/workers')).body.workers[0].id as string;
    // The worker finds its channel closed (EPIPE) if it answers at all before it is killed.
    const res = await probe({ op: 'control', mb: 200 });
    const answer = res.status === 200 ? ((await res.json()) as { code?: string }).code : String(res.status);
    expect(['EPIPE', '502']).toContain(answer);
    const memory = rss(server.child.pid!);
    expect(memory).toBeLessThan(400 * 1024 * 1024);
    const logs = await server.molt(['app', 'logs', '--app', 'noisy']);
    expect(logs.stdout).toContain('worker cut off: it sent a control message longer than 1048576 characters');
    // Replaced like any crash.
    await waitFor(async () => {
      const w = (await server.api('GET', '/api/v1/namespaces/default/apps/noisy/workers')).body.workers as { id: string; status: string }[];
      return w.length === 1 && w[0]!.id !== before && w[0]!.status === 'RUNNING';
    }, 20_000, 'a new worker');
    record({ boundary, attack: 'app code writes 200 MB with no newline to its control channel', expected: 'cut off at 1 MiB and replaced; server memory bounded', observed: `request got ${answer}; "worker cut off" in app logs; new worker RUNNING; server RSS ${(memory / 1024 / 1024).toFixed(0)} MiB`, refused: true });
  });
});
