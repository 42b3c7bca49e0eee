import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { copyExample, ServerProcess, tempDir, waitFor } from './helpers.js';
import { runLoad } from './load.js';

describe('the seed "update image" flow with examples/get-start', () => {
  const server = new ServerProcess(tempDir());
  let app: string;
  let token: string;

  beforeAll(async () => {
    await server.start();
    app = copyExample('get-start', 100);
    const prepared = await server.molt(['app', 'prepare'], { cwd: app });
    expect(prepared.code, prepared.stderr).toBe(0);
    const created = await server.molt(['app', 'create'], { cwd: app });
    expect(created.code, created.stderr).toBe(0);
    token = await server.createToken('default', 'invoker');
  });
  afterAll(() => server.stop());

  it('serves /hello and streams /sse through the gateway with a bearer token', async () => {
    const hello = await fetch(server.route('default', 'get-start', '/hello'), { headers: { authorization: `Bearer ${token}` } });
    expect(hello.status).toBe(200);
    expect(await hello.text()).toBe('hello again\n');
    const sse = await fetch(server.route('default', 'get-start', '/sse'), { headers: { authorization: `Bearer ${token}` } });
    expect(sse.headers.get('content-type')).toBe('text/event-stream');
    const text = await sse.text();
    expect(text.split('\n\n').filter(Boolean)).toEqual(Array.from({ length: 10 }, (_, i) => `hello again ${i}`));
  });

  it('molt app update under load: 0 failed requests, the worker sequence of the seed, responses switch to the new text', async () => {
    const before = await server.molt(['worker', 'list'], { cwd: app });
    const [oldId] = before.stdout.split('\n').slice(2).map((l) => l.split(/\s+/)[0]);
    expect(before.stdout).toMatch(/^ID\s+STATUS\s+DETAIL_STATUS\s+CREATED_AT\s+DELETED_AT/);
    expect(before.stdout).toMatch(new RegExp(`${oldId}\\s+RUNNING\\s+FREE`));

    writeFileSync(join(app, 'greeting.ts'), readFileSync(join(app, 'greeting.ts'), 'utf8').replace('hello again', 'hello world again'));
    const load = runLoad(server.route('default', 'get-start', '/hello'), { concurrency: 8, headers: { authorization: `Bearer ${token}` }, maxMs: 60_000 });

    // Watch the worker list while the update runs, as the seed does with `worker list -a`.
    const snapshots: { id: string; status: string; detailStatus: string | null }[][] = [];
    let updating = true;
    const watcher = (async () => {
      while (updating) {
        const r = await server.api('GET', '/api/v1/namespaces/default/apps/get-start/workers?all=1');
        snapshots.push(r.body.workers);
        await new Promise((r) => setTimeout(r, 10));
      }
    })();
    const update = await server.molt(['app', 'update', '--strategy', 'rolling'], { cwd: app });
    updating = false;
    await watcher;
    // The watcher's last request may have left before the old worker's end was written: look once more.
    snapshots.push((await server.api('GET', '/api/v1/namespaces/default/apps/get-start/workers?all=1')).body.workers);
    // Keep the load on a little after the switch.
    await new Promise((r) => setTimeout(r, 500));
    const result = await load.stop();

    expect(update.code, update.stderr).toBe(0);
    expect(update.stderr).toContain('revision 2 serves all traffic');
    expect(result.errors).toEqual([]);
    expect(result.requests).toBeGreaterThan(100);
    const oldText = result.bodies.get('hello again\n');
    const newText = result.bodies.get('hello world again\n');
    expect(oldText?.count).toBeGreaterThan(0);
    expect(newText?.count).toBeGreaterThan(0);
    expect(newText!.last).toBeGreaterThanOrEqual(oldText!.last);
    expect([...result.bodies.keys()].sort()).toEqual(['hello again\n', 'hello world again\n']);

    const after = await server.molt(['worker', 'list', '-a'], { cwd: app });
    const rows = after.stdout.split('\n').slice(2).filter(Boolean);
    expect(rows).toHaveLength(2);
    expect(rows[0]).toMatch(new RegExp(`^${oldId}\\s+TERMINATED\\s+\\d{4}-\\d\\d-\\d\\dT[\\d:]+\\+0000\\s+\\d{4}-\\d\\d-\\d\\dT[\\d:]+\\+0000`));
    expect(rows[1]).toMatch(/^\w{22}\s+RUNNING\s+FREE\s+\S+\s+2\s+[0-9a-f]{12}$/);
    // The new worker was seen starting (CREATED or INITIALIZED, IN_FLIGHT) while the old one still ran.
    const states = (id: string) => [...new Set(snapshots.map((s) => s.find((w) => w.id === id)).filter(Boolean).map((w) => `${w!.status}/${w!.detailStatus ?? ''}`))];
    const newId = rows[1]!.split(/\s+/)[0]!;
    expect(snapshots.some((s) => s.some((w) => w.id === oldId && w.status === 'RUNNING') && s.some((w) => w.id === newId && w.detailStatus === 'IN_FLIGHT'))).toBe(true);
    // After its IN_FLIGHT start it runs: FREE, or BUSY while it serves the load.
    expect(states(newId).filter((s) => !s.endsWith('/IN_FLIGHT'))[0]).toMatch(/^RUNNING\/(FREE|BUSY)$/);
    expect(states(oldId).at(-1)).toBe('TERMINATED/');

    const sse = await fetch(server.route('default', 'get-start', '/sse'), { headers: { authorization: `Bearer ${token}` } });
    expect((await sse.text()).split('\n\n')[0]).toBe('hello world again 0');
  });

  it('streams SSE events one by one as they are written, not buffered', async () => {
    const res = await fetch(server.route('default', 'get-start', '/sse'), { headers: { authorization: `Bearer ${token}` } });
    const reader = res.body!.getReader();
    const decoder = new TextDecoder();
    const arrivals: number[] = [];
    let buffer = '';
    for (;;) {
      const { done, value } = await reader.read();
      if (done) break;
      buffer += decoder.decode(value);
      const events = buffer.split('\n\n');
      buffer = events.pop()!;
      for (const _ of events) arrivals.push(performance.now());
    }
    expect(arrivals).toHaveLength(10);
    // The app writes every 100 ms: event 9 arrives ~900 ms after event 0, not all at once at the end.
    expect(arrivals[9]! - arrivals[0]!).toBeGreaterThan(600);
    for (let i = 1; i < 10; i++) expect(arrivals[i]! - arrivals[i - 1]!).toBeGreaterThan(40);
  });

  it('keeps the history of both revisions', async () => {
    const history = await server.molt(['app', 'history', '--json'], { cwd: app });
    const { current, revisions } = JSON.parse(history.stdout);
    expect(current).toBe(2);
    expect(revisions.map((r: { revision: number; status: string }) => [r.revision, r.status])).toEqual([
      [1, 'superseded'],
      [2, 'active'],
    ]);
    await waitFor(async () => (await server.molt(['app', 'get', '--json'], { cwd: app })).stdout.includes('"running": 1'));
  });
});
