import { readFileSync, statSync } from 'node:fs';
import { connect } from 'node:net';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ServerProcess, simpleApp, tempDir } from '../helpers.js';
import { record } from './report.js';

const boundary = 'worker control socket';

/** Connects to a worker's control socket, writes `lines`, and says what came back before it closed (or 2 s passed). */
function talk(path: string, lines: string[]): Promise<{ answer: string; closed: boolean }> {
  return new Promise((resolve, reject) => {
    const s = connect(path);
    let answer = '';
    const timer = setTimeout(() => {
      s.destroy();
      resolve({ answer, closed: false });
    }, 2000);
    s.on('data', (c: Buffer) => (answer += c.toString()));
    s.on('close', () => {
      clearTimeout(timer);
      resolve({ answer, closed: true });
    });
    s.on('error', (err: NodeJS.ErrnoException) => (err.code === 'EPIPE' || err.code === 'ECONNRESET' ? undefined : reject(err)));
    s.on('connect', () => {
      for (const l of lines) s.write(l);
    });
  });
}

describe('a worker takes orders only from a molt server that knows its secret', () => {
  const server = new ServerProcess(tempDir());
  let dir = '';
  let worker: { id: string; pid: number };
  let socket = '';
  beforeAll(async () => {
    await server.start();
    dir = simpleApp(tempDir(), { name: 'guarded' });
    expect((await server.molt(['app', 'create'], { cwd: dir })).code).toBe(0);
    [worker] = (await server.api('GET', '/api/v1/namespaces/default/apps/guarded/workers')).body.workers;
    socket = join(server.dataDir, 'run', worker.id, 'control.sock');
  });
  afterAll(() => server.stop());

  const stillServes = async () => (await fetch(server.route('default', 'guarded', '/'), { headers: { authorization: `Bearer ${server.adminToken}` } })).text();

  it('refuses orders without the secret, with a wrong one, or in an endless line; the molt server keeps its channel', async () => {
    const attacks: [string, string[]][] = [
      ['an order with no hello (drain)', [`${JSON.stringify({ type: 'drain' })}\n`]],
      ['a hello with a wrong secret, then an order', [`${JSON.stringify({ type: 'hello', secret: 'x'.repeat(43) })}\n`, `${JSON.stringify({ type: 'drain' })}\n`]],
      ['a hello with no secret', [`${JSON.stringify({ type: 'hello' })}\n`]],
      ['a line of 1 MiB with no newline', ['x'.repeat(1024 * 1024)]],
    ];
    for (const [attack, lines] of attacks) {
      const r = await talk(socket, lines);
      expect(r, attack).toEqual({ answer: '', closed: true });
      expect(await stillServes()).toBe('hello');
      record({ boundary, attack: `a local process sends ${attack} to a worker's control socket`, expected: 'closed with no answer; the worker serves on, undrained', observed: `closed, answered ${JSON.stringify(r.answer)}; the app still answers`, refused: r.answer === '' && r.closed });
    }
    // Its molt server still owns it: a hot update goes through the channel it has.
    simpleApp(dir, { name: 'guarded', body: 'upgraded' });
    const update = await server.molt(['app', 'update'], { cwd: dir });
    expect(update.code, update.stderr).toBe(0);
    expect(update.stdout).toContain('strategy: hot');
    expect(await stillServes()).toBe('upgraded');
  });

  it('keeps the secrets where only molt reads them', () => {
    const records = join(server.dataDir, 'workers');
    expect(statSync(records).mode & 0o777).toBe(0o700);
    expect(statSync(join(records, `${worker.id}.json`)).mode & 0o777).toBe(0o600);
    // The secret is in no worker's environment, where another process of its user could read it.
    const { secret } = JSON.parse(readFileSync(join(records, `${worker.id}.json`), 'utf8')) as { secret: string };
    expect(secret.length).toBeGreaterThanOrEqual(43);
    expect(readFileSync(`/proc/${worker.pid}/environ`, 'utf8')).not.toContain(secret);
  });

  it('answers the molt server that gives the secret, which then owns it', async () => {
    const { secret } = JSON.parse(readFileSync(join(server.dataDir, 'workers', `${worker.id}.json`), 'utf8')) as { secret: string };
    const r = await talk(socket, [`${JSON.stringify({ type: 'hello', secret })}\n`]);
    expect(JSON.parse(r.answer.split('\n')[0]!)).toMatchObject({ type: 'adopted', listening: { socket: '/molt/run/http.sock' }, draining: false });
  });
});
