import { spawn } from 'node:child_process';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { MOLT_BIN, ServerProcess, tempDir, waitFor, writeApp } from './helpers.js';

describe('draining and stopping old workers', () => {
  const server = new ServerProcess(tempDir());
  beforeAll(() => server.start());
  afterAll(() => server.stop());
  const auth = () => ({ authorization: `Bearer ${server.adminToken}` });

  it('cuts a stream that outlives the drain deadline, and not before it', async () => {
    const files = (text: string) => ({
      'molt.config.json': JSON.stringify({ name: 'streamer', entry: 'index.ts', readiness: { path: '/healthz' }, rollout: { drainTimeoutMs: 1500, stopGraceMs: 1000 } }),
      'index.ts': `export default {
  fetch(req: Request) {
    if (new URL(req.url).pathname === '/healthz') return new Response('ok');
    let timer: any;
    const body = new ReadableStream({
      start(c) { timer = setInterval(() => c.enqueue(new TextEncoder().encode('data: ${text}\\n\\n')), 100); },
      cancel() { clearInterval(timer); },
    });
    return new Response(body, { headers: { 'content-type': 'text/event-stream' } });
  },
};`,
    });
    const dir = writeApp(join(tempDir(), 'streamer'), files('old'));
    expect((await server.molt(['app', 'create'], { cwd: dir })).code).toBe(0);
    const res = await fetch(server.route('default', 'streamer', '/'), { headers: auth() });
    const reader = res.body!.getReader();
    let received = '';
    const reading = (async () => {
      try {
        for (;;) {
          const { done, value } = await reader.read();
          if (done) return 'ended';
          received += new TextDecoder().decode(value);
        }
      } catch {
        return 'cut';
      }
    })();
    writeApp(dir, files('new'));
    const started = Date.now();
    const update = server.molt(['app', 'update', '--strategy', 'rolling'], { cwd: dir });
    const outcome = await reading;
    const streamLasted = Date.now() - started;
    expect((await update).code).toBe(0);
    expect(['ended', 'cut']).toContain(outcome);
    // The stream kept flowing from the old worker while it drained, then was cut at the deadline.
    expect(streamLasted).toBeGreaterThan(1500);
    expect(streamLasted).toBeLessThan(8000);
    expect(received).toContain('data: old');
    expect(received).not.toContain('data: new');
  });

  it('sends SIGKILL to a worker that cannot stop on SIGTERM once the grace period is over', async () => {
    const files = (version: string) => ({
      'molt.config.json': JSON.stringify({ name: 'stubborn', entry: 'index.ts', readiness: { path: '/healthz' }, rollout: { drainTimeoutMs: 500, stopGraceMs: 800 } }),
      'index.ts': `export default {
  fetch(req: Request) {
    // A blocked event loop: the worker cannot run its SIGTERM handler.
    if (new URL(req.url).pathname === '/spin') for (;;) {}
    return new Response('${version}');
  },
};`,
    });
    const dir = writeApp(join(tempDir(), 'stubborn'), files('v1'));
    expect((await server.molt(['app', 'create'], { cwd: dir })).code).toBe(0);
    const spinning = fetch(server.route('default', 'stubborn', '/spin'), { headers: auth() }).then((r) => r.status, () => 'reset');
    await new Promise((r) => setTimeout(r, 200));
    writeApp(dir, files('v2'));
    const started = Date.now();
    const update = await server.molt(['app', 'update', '--strategy', 'rolling'], { cwd: dir });
    expect(update.code).toBe(0);
    expect(update.stderr).toMatch(/terminated \(killed by SIGKILL\)/);
    expect(Date.now() - started).toBeLessThan(10_000);
    // The request cut at the drain deadline gets a clear gateway error, not a hang.
    expect(await spinning).toBe(502);
    expect(await (await fetch(server.route('default', 'stubborn', '/'), { headers: auth() })).text()).toBe('v2');
    const workers = (await server.api('GET', '/api/v1/namespaces/default/apps/stubborn/workers?all=1')).body.workers;
    expect(workers[0]).toMatchObject({ status: 'TERMINATED', revision: 1, detail: 'replaced by revision 2' });
  });

  it('molt app logs -f prints new worker output as it is written', async () => {
    const dir = writeApp(join(tempDir(), 'talker'), {
      'molt.config.json': JSON.stringify({ name: 'talker', entry: 'index.ts' }),
      'index.ts': "export default { fetch(req: Request) { console.log('served', new URL(req.url).pathname); return new Response('ok'); } };",
    });
    expect((await server.molt(['app', 'create'], { cwd: dir })).code).toBe(0);
    const child = spawn(process.execPath, [MOLT_BIN, 'app', 'logs', '-f', '--app', 'talker'], {
      env: { ...process.env, MOLT_SERVER: server.url, MOLT_TOKEN: server.adminToken },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let out = '';
    child.stdout.on('data', (c) => (out += c));
    try {
      await fetch(server.route('default', 'talker', '/first'), { headers: auth() });
      await waitFor(() => out.includes('served /first'), 10_000, 'first line');
      await fetch(server.route('default', 'talker', '/second'), { headers: auth() });
      await waitFor(() => out.includes('served /second'), 10_000, 'followed line');
      expect(out).toMatch(/^\d{4}-\d\d-\d\dT\S+ \w{22} served \/first$/m);
    } finally {
      child.kill();
    }
  });
});
