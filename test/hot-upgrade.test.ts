import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ServerProcess, tempDir, waitFor, writeApp } from './helpers.js';
import { runLoad } from './load.js';

const COUNTER_V1 = `
import { defineProcess } from '@molt/app';
export const counter = defineProcess({
  name: 'counter',
  init: () => ({ count: 0 }),
  handlers: {
    add: (s: { count: number }, n: number) => ({ state: { count: s.count + n }, reply: s.count + n }),
    get: (s: { count: number }) => ({ reply: 'v1 count=' + s.count }),
    slow: async (s: { count: number }) => { await new Promise((r) => setTimeout(r, 3000)); return { reply: 'slow done' }; },
  },
});
`;

/** Version 2 changes the state's shape; its codeChange carries the count over, and back when it is left. */
const COUNTER_V2 = (codeChange = "(old: any, change) => (change.direction === 'up' ? { total: old.count, version: 2 } : { count: old.total })") => `
import { defineProcess } from '@molt/app';
export const counter = defineProcess({
  name: 'counter',
  init: () => ({ total: 0, version: 2 }),
  handlers: {
    add: (s: { total: number; version: number }, n: number) => ({ state: { ...s, total: s.total + n }, reply: s.total + n }),
    get: (s: { total: number; version: number }) => ({ reply: 'v2 total=' + s.total + ' shape=' + Object.keys(s).join(',') }),
  },
  codeChange: ${codeChange},
});
`;

const INDEX = `
import { counter } from './counter.ts';
const enc = new TextEncoder();
export default {
  async fetch(req: Request) {
    const url = new URL(req.url);
    if (url.pathname === '/healthz') return new Response('ok');
    if (url.pathname === '/add') return new Response(String(await counter.call('add', 1)));
    // The process's identity (in a sandbox every worker is PID 1): kept on globalThis, a hot upgrade keeps it.
    if (url.pathname === '/pid') return new Response((globalThis as any).processId ??= crypto.randomUUID());
    if (url.pathname === '/slow') return new Response(String(await counter.call('slow')));
    if (url.pathname === '/sse') {
      let timer: ReturnType<typeof setInterval>;
      return new Response(new ReadableStream({
        start(c) { timer = setInterval(async () => c.enqueue(enc.encode('data: ' + (await counter.call('get')) + '\\n\\n')), 100); },
        cancel() { clearInterval(timer); },
      }), { headers: { 'content-type': 'text/event-stream' } });
    }
    return new Response(String(await counter.call('get')));
  },
};
`;

function counterApp(name: string, workers = 1): string {
  return writeApp(join(tempDir(), name), {
    'molt.config.json': JSON.stringify({ name, entry: 'index.ts', workers, readiness: { path: '/healthz' }, hot: { canaryWindowMs: 200 }, rollout: { drainTimeoutMs: 1000, stopGraceMs: 1000 } }),
    'counter.ts': COUNTER_V1,
    'index.ts': INDEX,
  });
}

describe('hot upgrades in place', () => {
  const server = new ServerProcess(tempDir());
  beforeAll(() => server.start());
  afterAll(() => server.stop());
  const call = async (app: string, path = '/') => (await fetch(server.route('default', app, path), { headers: { authorization: `Bearer ${server.adminToken}` } })).text();
  const workerIds = async (app: string) => (await server.api('GET', `/api/v1/namespaces/default/apps/${app}/workers`)).body.workers.map((w: { id: string }) => w.id).sort();

  it('keeps a process\'s count through an upgrade that changes its state shape, with no worker restart; rollback goes back in place', async () => {
    const dir = counterApp('counter');
    expect((await server.molt(['app', 'create'], { cwd: dir })).code).toBe(0);
    for (let i = 0; i < 3; i++) await call('counter', '/add');
    const pid = await call('counter', '/pid');
    const before = await workerIds('counter');
    writeFileSync(join(dir, 'counter.ts'), COUNTER_V2());
    // Built beforehand, so that the update's own build is a cache hit and its upload and plan fit in the 3 s below, however loaded the machine.
    const built = await server.molt(['release', 'build'], { cwd: dir });
    expect(built.code, built.stderr).toBe(0);
    // A message in progress (3 s: longer than the CLI takes to upload and plan): the process is suspended only once it is done, and the worker shows UPGRADING.
    const slow = call('counter', '/slow');
    await new Promise((r) => setTimeout(r, 100));
    let upgrading = false;
    let updating = true;
    const watching = (async () => {
      while (updating && !upgrading) {
        const ws = (await server.api('GET', '/api/v1/namespaces/default/apps/counter/workers')).body.workers;
        upgrading = ws.some((w: { status: string; detailStatus: string; revision: number }) => w.status === 'RUNNING' && w.detailStatus === 'UPGRADING' && w.revision === 1);
        await new Promise((r) => setTimeout(r, 20));
      }
    })();
    const update = await server.molt(['app', 'update'], { cwd: dir }).finally(() => (updating = false));
    expect(await slow).toBe('slow done');
    await watching;
    expect(upgrading).toBe(true);
    expect(update.code, update.stderr).toBe(0);
    expect(update.stdout).toMatch(/strategy: hot \(1 module\(s\) changed, 2 step\(s\) in place/);
    expect((await server.molt(['worker', 'list'], { cwd: dir })).stdout).toMatch(/RUNNING\s+FREE\s+\S+\s+2\s+[0-9a-f]{12}/);
    expect(update.stdout).toMatch(/1\. update counter\.js\s+\(changed; defines process counter\)/);
    expect(update.stdout).toMatch(/2\. load\s+index\.js\s+\(imports counter\.js, which changed\)/);
    expect(update.stderr).toContain('revision 2 serves all traffic (hot: no worker restarted)');
    expect(await call('counter')).toBe('v2 total=3 shape=total,version');
    expect(await call('counter', '/pid')).toBe(pid);
    expect(await workerIds('counter')).toEqual(before);

    const rollback = await server.molt(['app', 'rollback'], { cwd: dir });
    expect(rollback.code, rollback.stderr).toBe(0);
    expect(rollback.stderr).toContain('in place (down plan)');
    expect(await call('counter')).toBe('v1 count=3');
    expect(await call('counter', '/pid')).toBe(pid);
  });

  it('never runs codeChange for a process whose module is the same in both releases, up or down (an in-place rollback keeps its state)', async () => {
    // counter.ts has a non-identity migration; only greeting.ts changes between the releases.
    const dir = counterApp('steady');
    writeFileSync(join(dir, 'counter.ts'), COUNTER_V1.replace("handlers: {", "codeChange: (old: any, change) => { ((globalThis as any).ran ??= []).push(change.direction); return { count: change.direction === 'up' ? old.count * 10 : old.count / 10 }; },\n  handlers: {"));
    writeFileSync(join(dir, 'greeting.ts'), "export const greeting = 'hello';\n");
    writeFileSync(join(dir, 'index.ts'), INDEX.replace("import { counter } from './counter.ts';", "import { counter } from './counter.ts';\nimport { greeting } from './greeting.ts';").replace("if (url.pathname === '/pid')", "if (url.pathname === '/greeting') return new Response(greeting + ' ' + JSON.stringify((globalThis as any).ran ?? []));\n    if (url.pathname === '/pid')"));
    expect((await server.molt(['app', 'create'], { cwd: dir })).code).toBe(0);
    for (let i = 0; i < 3; i++) await call('steady', '/add');
    writeFileSync(join(dir, 'greeting.ts'), "export const greeting = 'bonjour';\n");
    const update = await server.molt(['app', 'update'], { cwd: dir });
    expect(update.code, update.stderr).toBe(0);
    expect(update.stdout).toContain('strategy: hot');
    expect(await call('steady', '/greeting')).toBe('bonjour []');
    expect(await call('steady')).toBe('v1 count=3');
    const rollback = await server.molt(['app', 'rollback'], { cwd: dir });
    expect(rollback.code, rollback.stderr).toBe(0);
    expect(rollback.stderr).toContain('in place (down plan)');
    expect(await call('steady', '/greeting')).toBe('hello []');
    expect(await call('steady')).toBe('v1 count=3');
    expect(await call('steady', '/add')).toBe('4');
  });

  it('leaves the old code and every state as they were when codeChange throws or a module throws on load', async () => {
    const dir = counterApp('sturdy');
    expect((await server.molt(['app', 'create'], { cwd: dir })).code).toBe(0);
    await call('sturdy', '/add');
    writeFileSync(join(dir, 'counter.ts'), COUNTER_V2("() => { throw new Error('cannot convert'); }"));
    const bad = await server.molt(['app', 'update'], { cwd: dir });
    expect(bad.code).toBe(1);
    expect(bad.stderr).toMatch(/codeChange failed in counter\.js: codeChange of process counter threw: cannot convert/);
    expect(await call('sturdy')).toBe('v1 count=1');
    await call('sturdy', '/add');
    expect(await call('sturdy')).toBe('v1 count=2');

    writeFileSync(join(dir, 'counter.ts'), `${COUNTER_V2()}\nthrow new Error('broken at load');\n`);
    const broken = await server.molt(['app', 'update'], { cwd: dir });
    expect(broken.code).toBe(1);
    expect(broken.stderr).toMatch(/load failed in counter\.js: broken at load/);
    expect(await call('sturdy')).toBe('v1 count=2');
    // A release whose hot upgrade failed is not tried again until asked.
    const ghost = await server.molt(['app', 'update'], { cwd: dir });
    expect(ghost.stderr).toContain('MOLT_ERR_RELEASE_GHOSTED');

    // New code that fails readiness goes back at once, state included.
    writeFileSync(join(dir, 'counter.ts'), COUNTER_V2());
    writeFileSync(join(dir, 'index.ts'), INDEX.replace("return new Response('ok')", "return new Response('sick', { status: 503 })"));
    const unready = await server.molt(['app', 'update'], { cwd: dir });
    expect(unready.code).toBe(1);
    expect(unready.stderr).toContain('the upgraded worker failed readiness (GET /healthz answered HTTP 503: "sick"); it went back to its release');
    expect(await call('sturdy')).toBe('v1 count=2');
  });

  it('keeps an SSE stream open through the upgrade; later events come from the new code', async () => {
    const dir = counterApp('stream');
    expect((await server.molt(['app', 'create'], { cwd: dir })).code).toBe(0);
    const res = await fetch(server.route('default', 'stream', '/sse'), { headers: { authorization: `Bearer ${server.adminToken}` } });
    const reader = res.body!.getReader();
    const events: string[] = [];
    const decoder = new TextDecoder();
    const reading = (async () => {
      for (;;) {
        const { done, value } = await reader.read();
        if (done) return;
        events.push(...decoder.decode(value).split('\n\n').filter(Boolean));
      }
    })();
    await waitFor(() => events.length >= 3, 5000, 'events before the upgrade');
    writeFileSync(join(dir, 'counter.ts'), COUNTER_V2());
    expect((await server.molt(['app', 'update'], { cwd: dir })).code).toBe(0);
    await waitFor(() => events.some((e) => e.includes('v2 total=')), 5000, 'events from the new code');
    await reader.cancel();
    await reading.catch(() => {});
    const firstNew = events.findIndex((e) => e.includes('v2'));
    expect(firstNew).toBeGreaterThan(2);
    expect(events.slice(0, firstNew).every((e) => e.includes('v1 count=0'))).toBe(true);
  });

  it('upgrades a chain of three processes in dependency order, and rolls back in reverse order with the code being left', async () => {
    const proc = (name: string, dep: string | undefined, version: string) => `
${dep ? `import { ${dep} } from './${dep}.ts';` : ''}
import { defineProcess } from '@molt/app';
export const ${name} = defineProcess({
  name: '${name}',
  init: () => ({ v: '${version}' }),
  handlers: { get: (s: { v: string }) => ({ reply: s.v }) },
  codeChange: (old: any, change) => { ((globalThis as any).order ??= []).push(change.direction + ':${name}@${version}'); return { v: change.direction === 'up' ? '${version}' : 'back from ${version}' }; },
});
${dep ? `export const uses${name} = ${dep};` : ''}
`;
    const files = (version: string) => ({ 'a.ts': proc('a', undefined, version), 'b.ts': proc('b', 'a', version), 'c.ts': proc('c', 'b', version) });
    const dir = writeApp(join(tempDir(), 'chain'), {
      'molt.config.json': JSON.stringify({ name: 'chain', entry: 'index.ts', readiness: { path: '/' }, hot: { canaryWindowMs: 0 } }),
      'index.ts': `import { c } from './c.ts';\nimport { b } from './b.ts';\nimport { a } from './a.ts';\nexport default { async fetch(req: Request) { return new URL(req.url).pathname === '/order' ? Response.json((globalThis as any).order ?? []) : new Response([await a.call('get'), await b.call('get'), await c.call('get')].join(',')); } };\n`,
      ...files('1'),
    });
    expect((await server.molt(['app', 'create'], { cwd: dir })).code).toBe(0);
    writeApp(dir, files('2'));
    const plan = await server.molt(['release', 'plan'], { cwd: dir });
    expect(plan.stdout).toMatch(/1\. update a\.js[^]*2\. update b\.js[^]*3\. update c\.js[^]*4\. load\s+index\.js/);
    expect((await server.molt(['app', 'update'], { cwd: dir })).code).toBe(0);
    expect(await call('chain')).toBe('2,2,2');
    // Each codeChange runs once, dependencies first: a → b → c, each the new version's.
    expect(JSON.parse(await call('chain', '/order'))).toEqual(['up:a@2', 'up:b@2', 'up:c@2']);
    // Back in place: dependents first, each with the code being left (version 2), once.
    const rollback = await server.molt(['app', 'rollback'], { cwd: dir });
    expect(rollback.code, rollback.stderr).toBe(0);
    expect(await call('chain')).toBe('back from 2,back from 2,back from 2');
    expect(JSON.parse(await call('chain', '/order'))).toEqual(['up:a@2', 'up:b@2', 'up:c@2', 'down:c@2', 'down:b@2', 'down:a@2']);
  });

  it('uses a plan written to rel/plans, refuses one that names a module the release lacks, and refuses hot when unsafe', async () => {
    const dir = counterApp('planned');
    expect((await server.molt(['app', 'create'], { cwd: dir })).code).toBe(0);
    writeFileSync(join(dir, 'counter.ts'), COUNTER_V2());
    const written = await server.molt(['release', 'plan', '--write'], { cwd: dir });
    expect(written.code, written.stderr).toBe(0);
    const file = /wrote (\S+);/.exec(written.stderr)![1]!;
    const plan = JSON.parse((await import('node:fs')).readFileSync(file, 'utf8'));
    writeFileSync(file, JSON.stringify({ ...plan, up: [...plan.up, { op: 'load', module: 'missing.js' }] }));
    const refused = await server.molt(['app', 'update'], { cwd: dir });
    expect(refused.code).toBe(1);
    expect(refused.stderr).toMatch(/MOLT_ERR_BAD_PLAN.*up\[2\]: load names module missing\.js, which the new release lacks/s);
    writeFileSync(file, JSON.stringify(plan));
    const used = await server.molt(['app', 'update'], { cwd: dir });
    expect(used.code, used.stderr).toBe(0);
    expect(used.stdout).toContain('(plan from rel/plans/');

    // An env change needs new processes (no configChange hook): auto picks rolling and says why; hot is refused.
    const config = JSON.parse((await import('node:fs')).readFileSync(join(dir, 'molt.config.json'), 'utf8'));
    writeFileSync(join(dir, 'molt.config.json'), JSON.stringify({ ...config, env: { MODE: 'x' } }));
    writeFileSync(join(dir, 'counter.ts'), COUNTER_V2().replace("'v2 total='", "'v2b total='"));
    const hot = await server.molt(['app', 'update', '--strategy', 'hot'], { cwd: dir });
    expect(hot.stderr).toMatch(/MOLT_ERR_HOT_UNSAFE.*the runtime config changed \(env\) and the entry exports no configChange hook/);
    const auto = await server.molt(['app', 'update', '--dry-run'], { cwd: dir });
    expect(auto.stdout).toMatch(/strategy: rolling \(the runtime config changed \(env\) and the entry exports no configChange hook: workers are replaced one by one\)/);
  });

  it("takes an env change in place when the entry exports configChange, and gives it the new env", async () => {
    const dir = counterApp('configured');
    const withHook = `${INDEX.replace("if (url.pathname === '/pid')", "if (url.pathname === '/mode') return new Response(process.env.MODE + ' ' + (globalThis as any).seen);\n    if (url.pathname === '/pid')")}
export function configChange({ env, previous }: { env: Record<string, string>; previous: Record<string, string> }) {
  (globalThis as any).seen = (previous.MODE ?? 'none') + '->' + env.MODE;
}
`;
    writeFileSync(join(dir, 'index.ts'), withHook);
    const config = JSON.parse(readFileSync(join(dir, 'molt.config.json'), 'utf8'));
    writeFileSync(join(dir, 'molt.config.json'), JSON.stringify({ ...config, env: { MODE: 'slow' } }));
    expect((await server.molt(['app', 'create'], { cwd: dir })).code).toBe(0);
    await call('configured', '/add');
    const pid = await call('configured', '/pid');
    writeFileSync(join(dir, 'molt.config.json'), JSON.stringify({ ...config, env: { MODE: 'fast' } }));
    writeFileSync(join(dir, 'counter.ts'), COUNTER_V2());
    const update = await server.molt(['app', 'update'], { cwd: dir });
    expect(update.code, update.stderr).toBe(0);
    expect(update.stdout).toContain('strategy: hot');
    expect(await call('configured', '/mode')).toBe('fast slow->fast');
    expect(await call('configured')).toBe('v2 total=1 shape=total,version');
    expect(await call('configured', '/pid')).toBe(pid);
  });

  it('downgrades the workers already upgraded when a later one fails, and leaves them all on the old code', async () => {
    const dir = counterApp('canary', 2);
    writeFileSync(join(dir, 'index.ts'), INDEX.replace("if (url.pathname === '/pid')", "if (url.pathname === '/arm') { (globalThis as any).refuse = true; return new Response('armed'); }\n    if (url.pathname === '/pid')"));
    expect((await server.molt(['app', 'create'], { cwd: dir })).code).toBe(0);
    const workers = (await server.api('GET', '/api/v1/namespaces/default/apps/canary/workers')).body.workers;
    // The second worker to be upgraded will refuse in its codeChange.
    await server.callWorker(workers[1], '/arm');
    writeFileSync(join(dir, 'counter.ts'), COUNTER_V2("(old: any, change) => { if (change.direction === 'down') return { count: old.total }; if ((globalThis as any).refuse) throw new Error('refused here'); return { total: old.count, version: 2 }; }"));
    const update = await server.molt(['app', 'update'], { cwd: dir });
    expect(update.code).toBe(1);
    expect(update.stderr).toContain(`worker ${workers[1].id} could not upgrade: codeChange failed in counter.js`);
    expect(update.stderr).toContain(`worker ${workers[0].id} is back on release`);
    for (const w of workers) expect(await server.callWorker(w, '/')).toBe('v1 count=0');
  });

  it('serves a two-worker app through a hot upgrade under load with 0 failed requests', async () => {
    const dir = counterApp('busy', 2);
    expect((await server.molt(['app', 'create'], { cwd: dir })).code).toBe(0);
    const load = runLoad(server.route('default', 'busy', '/'), { concurrency: 8, headers: { authorization: `Bearer ${server.adminToken}` }, maxMs: 60_000 });
    await new Promise((r) => setTimeout(r, 300));
    writeFileSync(join(dir, 'counter.ts'), COUNTER_V2());
    const update = await server.molt(['app', 'update'], { cwd: dir });
    await new Promise((r) => setTimeout(r, 300));
    const result = await load.stop();
    expect(update.code, update.stderr).toBe(0);
    expect(update.stdout).toContain('strategy: hot');
    expect(result.errors).toEqual([]);
    expect(result.requests).toBeGreaterThan(100);
    const bodies = [...result.bodies.keys()];
    expect(bodies.some((b) => b.startsWith('v1'))).toBe(true);
    expect(bodies.some((b) => b.startsWith('v2'))).toBe(true);
  });
});

describe('hot upgrades over time', () => {
  const server = new ServerProcess(tempDir());
  beforeAll(() => server.start());
  afterAll(() => server.stop());
  const call = async (app: string, path = '/') => (await fetch(server.route('default', app, path), { headers: { authorization: `Bearer ${server.adminToken}` } })).text();
  const withHot = (dir: string, hot: object) => {
    const config = JSON.parse(readFileSync(join(dir, 'molt.config.json'), 'utf8'));
    writeFileSync(join(dir, 'molt.config.json'), JSON.stringify({ ...config, hot: { ...config.hot, ...hot } }));
  };

  it('goes back to the permanent revision when a worker crashes during probation: survivors in place, the crashed one on the permanent code', async () => {
    const dir = counterApp('probation', 2);
    withHot(dir, { permanentAfterMs: 60_000, canaryWindowMs: 0 });
    writeFileSync(join(dir, 'index.ts'), INDEX.replace("if (url.pathname === '/pid')", "if (url.pathname === '/crash') { setTimeout(() => process.exit(3), 10); return new Response('bye'); }\n    if (url.pathname === '/pid')"));
    expect((await server.molt(['app', 'create'], { cwd: dir })).code).toBe(0);
    const workers = (await server.api('GET', '/api/v1/namespaces/default/apps/probation/workers')).body.workers;
    for (const w of workers) await server.callWorker(w, '/add');
    writeFileSync(join(dir, 'counter.ts'), COUNTER_V2());
    expect((await server.molt(['app', 'update'], { cwd: dir })).code).toBe(0);
    expect((await server.api('GET', '/api/v1/namespaces/default/apps/probation')).body.app).toMatchObject({ currentRevision: 2, permanentRevision: 1 });
    await server.callWorker(workers[0], '/crash');
    const app = await waitFor(async () => {
      const a = (await server.api('GET', '/api/v1/namespaces/default/apps/probation')).body.app;
      const ws = (await server.api('GET', '/api/v1/namespaces/default/apps/probation/workers')).body.workers;
      return a.currentRevision === 1 && !a.rolloutId && ws.length === 2 && ws.every((w: { status: string; revision: number }) => w.status === 'RUNNING' && w.revision === 1) ? a : undefined;
    }, 20_000, 'the app back on revision 1 with two workers');
    expect(app.permanentRevision).toBeNull();
    // The survivor went back in place (its count carried back by V2's down migration); the replacement starts afresh.
    expect(await server.callWorker(workers[1], '/')).toBe('v1 count=1');
    const history = (await server.api('GET', '/api/v1/namespaces/default/apps/probation/history')).body.revisions;
    expect(history.map((r: { status: string }) => r.status)).toEqual(['active', 'ghosted']);
    expect(history[1].reason).toContain(`worker ${workers[0].id} crashed during its probation`);
    // Its release is not tried hot again until asked.
    expect((await server.molt(['app', 'update'], { cwd: dir })).stderr).toContain('MOLT_ERR_RELEASE_GHOSTED');
  });

  it('fails the canary that answers 5xx within its window, and the one that crashes, going back with no state lost', async () => {
    const dir = counterApp('watched', 2);
    withHot(dir, { canaryWindowMs: 1500 });
    expect((await server.molt(['app', 'create'], { cwd: dir })).code).toBe(0);
    for (let i = 0; i < 2; i++) await call('watched', '/add');
    const before = await call('watched');
    // Release 2 answers 500 on /: traffic during the canary window sees it.
    writeFileSync(join(dir, 'index.ts'), INDEX.replace("return new Response(String(await counter.call('get')));", "return new Response('broken', { status: 500 });"));
    writeFileSync(join(dir, 'counter.ts'), COUNTER_V2());
    let updating = true;
    const update = server.molt(['app', 'update'], { cwd: dir }).finally(() => (updating = false));
    const traffic = (async () => {
      while (updating) {
        await call('watched');
        await new Promise((r) => setTimeout(r, 50));
      }
    })();
    const failed = await update;
    await traffic;
    expect(failed.code).toBe(1);
    expect(failed.stderr).toMatch(/canary worker \S+ answered \d+ request\(s\) with a 5xx status within 1500 ms/);
    expect(await call('watched')).toBe(before);

    // Release 3 crashes when called during the window.
    writeFileSync(join(dir, 'index.ts'), INDEX.replace("return new Response(String(await counter.call('get')));", "setTimeout(() => process.exit(7), 5); return new Response('bye');"));
    updating = true;
    const update3 = server.molt(['app', 'update'], { cwd: dir }).finally(() => (updating = false));
    const traffic3 = (async () => {
      while (updating) {
        await call('watched').catch(() => {});
        await new Promise((r) => setTimeout(r, 50));
      }
    })();
    await traffic3;
    const crashed = await update3;
    expect(crashed.code).toBe(1);
    expect(crashed.stderr).toMatch(/crashed during the hot upgrade/);
    await waitFor(async () => {
      const ws = (await server.api('GET', '/api/v1/namespaces/default/apps/watched/workers')).body.workers;
      return ws.length === 2 && ws.every((w: { status: string; revision: number }) => w.status === 'RUNNING' && w.revision === 1) || undefined;
    }, 20_000, 'two workers on revision 1');
    const history = (await server.api('GET', '/api/v1/namespaces/default/apps/watched/history')).body.revisions;
    expect(history.map((r: { status: string }) => r.status)).toEqual(['active', 'ghosted', 'ghosted']);
  });

  it('recycles a worker past its budget of retained module versions, with 0 failed requests, and says so', async () => {
    const dir = counterApp('budget', 2);
    withHot(dir, { maxRetainedModules: 3, canaryWindowMs: 0 });
    expect((await server.molt(['app', 'create'], { cwd: dir })).code).toBe(0);
    const before = (await server.api('GET', '/api/v1/namespaces/default/apps/budget/workers')).body.workers.map((w: { id: string }) => w.id);
    const load = runLoad(server.route('default', 'budget', '/'), { concurrency: 6, headers: { authorization: `Bearer ${server.adminToken}` }, maxMs: 60_000 });
    writeFileSync(join(dir, 'counter.ts'), COUNTER_V2());
    expect((await server.molt(['app', 'update'], { cwd: dir })).code).toBe(0);
    const after = await waitFor(async () => {
      const ws = (await server.api('GET', '/api/v1/namespaces/default/apps/budget/workers')).body.workers;
      return ws.length === 2 && ws.every((w: { id: string; status: string }) => !before.includes(w.id) && w.status === 'RUNNING') ? ws : undefined;
    }, 30_000, 'both workers recycled');
    const result = await load.stop();
    expect(after).toHaveLength(2);
    expect(result.errors).toEqual([]);
    const logs = (await server.api('GET', '/api/v1/namespaces/default/apps/budget/workers?all=1')).body.workers;
    expect(logs.filter((w: { detail: string | null }) => w.detail === 'recycled: too many retained module versions')).toHaveLength(2);
    // Fresh workers run the new code (their processes start from init).
    expect(await call('budget')).toBe('v2 total=0 shape=total,version');
  });

  it("uses the plan the app config's planTransform makes, e.g. adding an apply step", async () => {
    const dir = counterApp('transformed');
    writeFileSync(join(dir, 'molt.config.ts'), `export default {
  name: 'transformed', entry: 'index.ts', readiness: { path: '/healthz' }, hot: { canaryWindowMs: 0 },
  planTransform: (plan: any) => ({ up: [...plan.up, { op: 'apply', module: 'migrate.js', fn: 'migrate', extra: 'from the transform' }], down: plan.down }),
};
`);
    (await import('node:fs')).rmSync(join(dir, 'molt.config.json'));
    writeFileSync(join(dir, 'migrate.ts'), "export function migrate(extra: unknown) { (globalThis as any).migrated = extra; }\n");
    expect((await server.molt(['app', 'create'], { cwd: dir })).code).toBe(0);
    writeFileSync(join(dir, 'counter.ts'), COUNTER_V2());
    writeFileSync(join(dir, 'index.ts'), `import './migrate.ts';\n${INDEX.replace("if (url.pathname === '/pid')", "if (url.pathname === '/migrated') return new Response(String((globalThis as any).migrated));\n    if (url.pathname === '/pid')")}`);
    const update = await server.molt(['app', 'update'], { cwd: dir });
    expect(update.code, update.stderr).toBe(0);
    expect(update.stdout).toContain('(plan from planTransform in the app config)');
    expect(await call('transformed', '/migrated')).toBe('from the transform');
  });
});

describe('upgrade plans from manifests', () => {
  it('says rolling, with the reason, for a new Node version, changed dependencies or runtime config', async () => {
    const { generatePlan } = await import('../packages/molt/src/release/upgrade-plan.js');
    const { validateAppConfig } = await import('../packages/molt/src/config/validate-config.js');
    const spec = validateAppConfig({ name: 'p', entry: 'index.ts' });
    const manifest = (over: object = {}) => ({ app: 'p', version: '1', node: '20.19.0', dependencyHash: 'd1', configHash: 'c', entry: 'index.js', modules: [{ path: 'index.js', hash: 'h1', imports: [] }], ...over });
    const to = manifest({ modules: [{ path: 'index.js', hash: 'h2', imports: [] }] });
    expect(generatePlan({ id: 'a', manifest: manifest(), spec }, { id: 'b', manifest: to, spec }).strategy).toBe('hot');
    const node = generatePlan({ id: 'a', manifest: manifest(), spec }, { id: 'b', manifest: { ...to, node: '22.1.0' }, spec });
    expect([node.strategy, node.reason]).toEqual(['rolling', 'hot is unsafe: the Node version changes (20.19.0 → 22.1.0)']);
    const deps = generatePlan({ id: 'a', manifest: manifest(), spec }, { id: 'b', manifest: { ...to, dependencyHash: 'd2' }, spec });
    expect(deps.reason).toContain('the production dependencies changed (lockfile, versions or native addons)');
    const env = generatePlan({ id: 'a', manifest: manifest(), spec }, { id: 'b', manifest: to, spec: { ...spec, env: { A: '1' } } });
    expect(env.reason).toContain('the runtime config changed (env) and the entry exports no configChange hook');
    const hooked = generatePlan({ id: 'a', manifest: manifest(), spec }, { id: 'b', manifest: { ...to, modules: [{ path: 'index.js', hash: 'h2', imports: [], configChange: true }] }, spec: { ...spec, env: { A: '1' } } });
    expect(hooked.strategy).toBe('hot');
  });

  it('orders modules after what they import, keeps cycles in a stable order and reports them', async () => {
    const { dependencyOrder } = await import('../packages/molt/src/release/upgrade-plan.js');
    const { order, cycles } = dependencyOrder([
      { path: 'app.js', hash: '', imports: ['x.js', 'y.js'] },
      { path: 'x.js', hash: '', imports: ['y.js'] },
      { path: 'y.js', hash: '', imports: ['x.js', 'z.js'] },
      { path: 'z.js', hash: '', imports: [] },
    ]);
    expect(order).toEqual(['z.js', 'x.js', 'y.js', 'app.js']);
    expect(cycles).toEqual([['x.js', 'y.js']]);
  });
});
