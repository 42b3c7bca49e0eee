import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ServerProcess, tempDir, waitFor, writeApp } from './helpers.js';

/** A counter app whose version and probation are set per release. */
function app(dir: string, name: string, version: number, permanentAfterMs: number): string {
  return writeApp(dir, {
    'molt.config.json': JSON.stringify({ name, entry: 'index.ts', workers: 2, readiness: { path: '/healthz' }, hot: { canaryWindowMs: 0, permanentAfterMs }, rollout: { drainTimeoutMs: 500, stopGraceMs: 500 } }),
    'counter.ts': `import { defineProcess } from '@molt/app';
export const counter = defineProcess({ name: 'counter', init: () => ({ n: 0 }), handlers: { get: (s: { n: number }) => ({ reply: s.n }) } });
export const version = ${version};
`,
    'index.ts': `import { counter, version } from './counter.ts';
export default { async fetch(req: Request) { return new URL(req.url).pathname === '/healthz' ? new Response('ok') : new Response('v' + version + ' n=' + (await counter.call('get'))); } };
`,
  });
}

describe('probation survives a restart of molt', () => {
  const dataDir = tempDir();
  const server = new ServerProcess(dataDir);
  beforeAll(() => server.start());
  afterAll(() => server.stop());
  const get = async (name: string) => (await server.api('GET', `/api/v1/namespaces/default/apps/${name}`)).body.app;
  const workers = async (name: string) => (await server.api('GET', `/api/v1/namespaces/default/apps/${name}/workers`)).body.workers as { status: string; revision: number; pid: number }[];
  const history = async (name: string) => (await server.api('GET', `/api/v1/namespaces/default/apps/${name}/history`)).body.revisions as { status: string; reason: string | null }[];
  const settled = (name: string, revision: number) =>
    waitFor(async () => {
      const ws = await workers(name);
      return ws.length === 2 && ws.every((w) => w.status === 'RUNNING' && w.revision === revision);
    }, 30_000, `both workers of ${name} on revision ${revision}`);
  const body = async (name: string) => (await fetch(server.route('default', name, '/'), { headers: { authorization: `Bearer ${server.adminToken}` } })).text();

  it('goes on to its deadline when molt is killed during a probation: the same workers keep their state', async () => {
    const dir = app(join(tempDir('molt-app-'), 'cut'), 'cut', 1, 60_000);
    expect((await server.molt(['app', 'create'], { cwd: dir })).code).toBe(0);
    app(dir, 'cut', 2, 6000);
    expect((await server.molt(['app', 'update'], { cwd: dir })).code).toBe(0);
    const on = await get('cut');
    expect(on).toMatchObject({ currentRevision: 2, permanentRevision: 1 });
    expect(await body('cut')).toBe('v2 n=0');
    const pids = (await workers('cut')).map((w) => w.pid).sort();

    await server.stop('SIGKILL');
    await server.start();
    // Adopted, not restarted: the probation is still on, with the deadline it had.
    expect(await get('cut')).toMatchObject({ currentRevision: 2, permanentRevision: 1, probationUntil: on.probationUntil });
    expect((await workers('cut')).map((w) => w.pid).sort()).toEqual(pids);
    expect(await body('cut')).toBe('v2 n=0');
    await waitFor(async () => (await get('cut')).permanentRevision === null, 15_000, 'revision 2 to become permanent at its deadline');
    expect(await get('cut')).toMatchObject({ currentRevision: 2, probationUntil: null });
    expect((await history('cut')).map((r) => r.status)).toEqual(['superseded', 'active']);
    expect((await workers('cut')).map((w) => w.pid).sort()).toEqual(pids);
  });

  it('makes a revision permanent at its deadline, and a restart after that keeps it', async () => {
    const dir = app(join(tempDir('molt-app-'), 'kept'), 'kept', 1, 800);
    expect((await server.molt(['app', 'create'], { cwd: dir })).code).toBe(0);
    app(dir, 'kept', 2, 800);
    expect((await server.molt(['app', 'update'], { cwd: dir })).code).toBe(0);
    await waitFor(async () => (await get('kept')).permanentRevision === null, 10_000, 'revision 2 to become permanent');
    await server.stop('SIGKILL');
    await server.start();
    await settled('kept', 2);
    expect(await get('kept')).toMatchObject({ currentRevision: 2, permanentRevision: null });
    expect(await body('kept')).toBe('v2 n=0');
  });

  it('makes permanent at start a probation that ended, watched, just before molt died', async () => {
    const dir = app(join(tempDir('molt-app-'), 'late'), 'late', 1, 60_000);
    expect((await server.molt(['app', 'create'], { cwd: dir })).code).toBe(0);
    app(dir, 'late', 2, 60_000);
    expect((await server.molt(['app', 'update'], { cwd: dir })).code).toBe(0);
    await server.stop('SIGKILL');
    // What the store holds when molt dies between the deadline and its write: the deadline passed
    // while the server was still seen alive.
    await server.sql('UPDATE apps SET "probationUntil" = ? WHERE name = ?', [new Date(Date.now() - 2000).toISOString(), 'late']);
    await server.sql('UPDATE heartbeats SET at = ?', [new Date(Date.now() - 1000).toISOString()]);
    await server.start();
    await settled('late', 2);
    expect(await get('late')).toMatchObject({ currentRevision: 2, permanentRevision: null, probationUntil: null });
    expect((await history('late')).map((r) => r.status)).toEqual(['superseded', 'active']);
  });
});
