import { connect } from 'node:net';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ServerProcess, simpleApp, sleep, tempDir, writeApp } from './helpers.js';

/** Writes raw bytes and reads until the server closes the connection (or 5 s pass). */
function rawExchange(port: number, data: string): Promise<string> {
  return new Promise((resolvePromise) => {
    const socket = connect(port, '127.0.0.1');
    let out = '';
    socket.on('data', (c) => (out += c.toString('latin1')));
    socket.on('close', () => resolvePromise(out));
    socket.on('error', () => resolvePromise(out));
    setTimeout(() => socket.destroy(), 5000);
    socket.write(data);
  });
}

describe('the gateway', () => {
  const server = new ServerProcess(tempDir(), ['--upstream-timeout-ms', '1500', '--queue-timeout-ms', '4000', '--max-queue', '5']);
  let invoker: string;
  const auth = () => ({ authorization: `Bearer ${invoker}` });

  beforeAll(async () => {
    await server.start();
    invoker = await server.createToken('default', 'invoker');
    const dir = simpleApp(join(tempDir(), 'app'), { name: 'gw', config: { workers: 2 } });
    const created = await server.molt(['app', 'create'], { cwd: dir });
    expect(created.code, created.stderr).toBe(0);
  });
  afterAll(() => server.stop());

  it('answers 401 without a token, with a wrong token, and with a revoked token, as JSON errors', async () => {
    const url = server.route('default', 'gw', '/');
    const none = await fetch(url);
    expect(none.status).toBe(401);
    expect((await none.json()).error).toMatchObject({ code: 'MOLT_ERR_UNAUTHENTICATED', message: expect.stringContaining('missing bearer token') });
    const wrong = await fetch(url, { headers: { authorization: 'Bearer molt_not-a-real-token' } });
    expect(wrong.status).toBe(401);
    expect((await wrong.json()).error.message).toContain('not valid');
    const doomed = await server.createToken('default', 'invoker');
    expect((await fetch(url, { headers: { authorization: `Bearer ${doomed}` } })).status).toBe(200);
    const id = (await server.api('GET', '/api/v1/tokens?namespace=default')).body.tokens.at(-1).id;
    expect((await server.molt(['token', 'revoke', id])).code).toBe(0);
    const revoked = await fetch(url, { headers: { authorization: `Bearer ${doomed}` } });
    expect(revoked.status).toBe(401);
    expect((await revoked.json()).error.message).toContain('revoked');
  });

  it('answers 403 to a token of another namespace and 404 for an unknown app', async () => {
    expect((await server.molt(['namespace', 'create', 'other'])).code).toBe(0);
    const foreign = await server.createToken('other', 'admin');
    const res = await fetch(server.route('default', 'gw', '/'), { headers: { authorization: `Bearer ${foreign}` } });
    expect(res.status).toBe(403);
    expect((await res.json()).error).toMatchObject({ code: 'MOLT_ERR_FORBIDDEN', message: expect.stringContaining('namespace other') });
    const missing = await fetch(server.route('default', 'nope', '/'), { headers: auth() });
    expect(missing.status).toBe(404);
    expect((await missing.json()).error.code).toBe('MOLT_ERR_APP_NOT_FOUND');
  });

  it('forwards X-Forwarded-* and a request id, strips the molt token, and streams request bodies', async () => {
    const res = await fetch(server.route('default', 'gw', '/headers?x=1'), { headers: { ...auth(), 'x-request-id': 'req-42' } });
    expect(res.headers.get('x-request-id')).toBe('req-42');
    const seen = await res.json();
    expect(seen['x-forwarded-for']).toBe('127.0.0.1');
    expect(seen['x-forwarded-proto']).toBe('http');
    expect(seen['x-forwarded-host']).toMatch(/^127\.0\.0\.1:\d+$/);
    expect(seen['x-request-id']).toBe('req-42');
    expect(seen.authorization).toBeUndefined();
    const generated = await fetch(server.route('default', 'gw', '/'), { headers: auth() });
    expect(generated.headers.get('x-request-id')).toMatch(/^[0-9a-f-]{36}$/);

    const big = 'x'.repeat(5 * 1024 * 1024);
    const echo = await fetch(server.route('default', 'gw', '/echo'), { method: 'POST', headers: { ...auth(), 'content-type': 'text/plain' }, body: big });
    expect((await echo.text()).length).toBe(big.length);
  });

  it('passes 40 response headers, HEAD, chunked uploads and a large download through intact', async () => {
    const many = await fetch(server.route('default', 'gw', '/many-headers'), { headers: auth() });
    expect(Array.from({ length: 40 }, (_, i) => many.headers.get(`x-h${i}`))).toEqual(Array.from({ length: 40 }, (_, i) => String(i)));
    const head = await fetch(server.route('default', 'gw', '/'), { method: 'HEAD', headers: auth() });
    expect([head.status, head.headers.get('content-length'), await head.text()]).toEqual([200, '5', '']);
    // A body of unknown length arrives chunked; the gateway streams it on as it comes.
    const parts = ['a'.repeat(100_000), 'b'.repeat(200_000), 'c'];
    const body = new ReadableStream({
      async pull(c) {
        const next = parts.shift();
        if (next === undefined) c.close();
        else c.enqueue(new TextEncoder().encode(next));
      },
    });
    const counted = await fetch(server.route('default', 'gw', '/count'), { method: 'POST', headers: auth(), body, duplex: 'half' } as RequestInit);
    expect(await counted.text()).toBe('300001');
    const big = await fetch(server.route('default', 'gw', '/big?mb=32'), { headers: auth() });
    expect((await big.arrayBuffer()).byteLength).toBe(32 << 20);
    // The same keep-alive connections serve on after all of that.
    expect(await (await fetch(server.route('default', 'gw', '/'), { headers: auth() })).text()).toBe('hello');
  });

  it('speaks HTTP/1.1 on a raw connection: pipelined app and API requests in order, HTTP/1.0, Expect, no Host, bad bytes', async () => {
    const port = Number(new URL(server.url).port);
    const app = `Host: 127.0.0.1\r\nAuthorization: Bearer ${invoker}\r\n`;
    const admin = `Host: 127.0.0.1\r\nAuthorization: Bearer ${server.adminToken}\r\n`;
    // Three requests in one write: a slow app request, an API request, an app request with a body.
    // Each is answered after the one before it, whole, and the last one's close ends the connection.
    const pipelined = await rawExchange(
      port,
      `GET /api/routes/v1/default/gw/slow?ms=300 HTTP/1.1\r\n${app}\r\n` +
        `GET /api/v1/namespaces/default/apps/gw HTTP/1.1\r\n${admin}\r\n` +
        `POST /api/routes/v1/default/gw/count HTTP/1.1\r\n${app}Content-Length: 7\r\nConnection: close\r\n\r\nabcdefg`,
    );
    // Bodies end with no newline: the next status line follows the last byte of the one before.
    const statuses = [...pipelined.matchAll(/HTTP\/1\.1 (\d{3}) [A-Z]/g)].map((m) => m[1]);
    expect(statuses).toEqual(['200', '200', '200']);
    const slowAt = pipelined.indexOf('slow done');
    const apiAt = pipelined.indexOf('"name":"gw"');
    const countAt = pipelined.lastIndexOf('\r\n\r\n7');
    expect(slowAt).toBeGreaterThan(0);
    expect(apiAt).toBeGreaterThan(slowAt);
    expect(countAt).toBeGreaterThan(apiAt);
    expect(pipelined.toLowerCase()).toContain('connection: close');

    // HTTP/1.0: answered, then the connection closes (no keep-alive asked for).
    const old = await rawExchange(port, `GET /api/routes/v1/default/gw/ HTTP/1.0\r\n${app}\r\n`);
    expect(old).toMatch(/^HTTP\/1\.1 200/);
    expect(old.endsWith('hello')).toBe(true);

    // Expect: 100-continue gets its interim answer before the body is sent, then the app's answer.
    const expectFlow = await new Promise<string>((resolvePromise, reject) => {
      const socket = connect(port, '127.0.0.1');
      let out = '';
      socket.on('data', (c) => {
        out += c.toString('latin1');
        if (out.startsWith('HTTP/1.1 100 Continue\r\n\r\n') && !out.includes('200')) socket.write('12345');
      });
      socket.on('close', () => resolvePromise(out));
      socket.on('error', reject);
      socket.write(`POST /api/routes/v1/default/gw/count HTTP/1.1\r\n${app}Content-Length: 5\r\nExpect: 100-continue\r\nConnection: close\r\n\r\n`);
      setTimeout(() => socket.destroy(), 5000);
    });
    expect(expectFlow).toMatch(/^HTTP\/1\.1 100 Continue\r\n\r\nHTTP\/1\.1 200 OK/);
    expect(expectFlow.endsWith('\r\n\r\n5')).toBe(true);

    // HTTP/1.1 without Host is refused, as RFC 9112 says; bytes that are not HTTP get a JSON 400.
    const hostless = await rawExchange(port, `GET /api/routes/v1/default/gw/ HTTP/1.1\r\nAuthorization: Bearer ${invoker}\r\n\r\n`);
    expect(hostless).toMatch(/^HTTP\/1\.1 400/);
    const garbage = await rawExchange(port, 'NOT HTTP AT ALL\r\n\r\n');
    expect(garbage).toMatch(/^HTTP\/1\.1 400/);
    expect(garbage).toContain('MOLT_ERR_BAD_REQUEST');

    // One keep-alive connection carries app, API and app requests in turn.
    const socket = connect(port, '127.0.0.1');
    const answers: string[] = [];
    let buffer = '';
    socket.on('data', (c) => (buffer += c.toString('latin1')));
    const next = async (request: string, until: string) => {
      socket.write(request);
      const deadline = Date.now() + 5000;
      while (!buffer.includes(until) && Date.now() < deadline) await sleep(10);
      answers.push(buffer);
      buffer = '';
    };
    await next(`GET /api/routes/v1/default/gw/ HTTP/1.1\r\n${app}\r\n`, 'hello');
    await next(`GET /api/v1/namespaces/default/apps/gw HTTP/1.1\r\n${admin}\r\n`, '"name":"gw"');
    await next(`GET /api/routes/v1/default/gw/slow?ms=1 HTTP/1.1\r\n${app}\r\n`, 'slow done');
    socket.destroy();
    expect(answers.map((a) => a.slice(0, 15))).toEqual(['HTTP/1.1 200 OK', 'HTTP/1.1 200 OK', 'HTTP/1.1 200 OK']);
  });

  it('spreads requests over ready workers by least outstanding requests', async () => {
    const slow = Array.from({ length: 6 }, () => fetch(server.route('default', 'gw', '/slow?ms=400'), { headers: auth() }));
    await sleep(100);
    const workers = (await server.api('GET', '/api/v1/namespaces/default/apps/gw/workers')).body.workers;
    expect(workers.map((w: any) => w.detailStatus)).toEqual(['BUSY', 'BUSY']);
    await Promise.all(slow);
    const pids = new Set<string>();
    for (let i = 0; i < 10; i++) pids.add(await (await fetch(server.route('default', 'gw', '/pid'), { headers: auth() })).text());
    expect(pids.size).toBe(2);
  });

  it('passes WebSocket upgrades through to the worker, both ways', async () => {
    const dir = writeApp(join(tempDir(), 'ws'), {
      'molt.config.json': JSON.stringify({ name: 'ws', entry: 'index.ts', public: true }),
      'index.ts': `import { createHash } from 'node:crypto';
export default {
  fetch: () => new Response('ok'),
  upgrade(req: any, socket: any) {
    const accept = createHash('sha1').update(req.headers['sec-websocket-key'] + '258EAFA5-E914-47DA-95CA-C5AB0DC85B11').digest('base64');
    socket.write('HTTP/1.1 101 Switching Protocols\\r\\nUpgrade: websocket\\r\\nConnection: Upgrade\\r\\nSec-WebSocket-Accept: ' + accept + '\\r\\n\\r\\n');
    socket.on('data', (d: Buffer) => socket.write(Buffer.concat([Buffer.from('echo:'), d])));
  },
};`,
    });
    expect((await server.molt(['app', 'create'], { cwd: dir })).code).toBe(0);
    const { port } = new URL(server.url);
    const socket = connect(Number(port), '127.0.0.1');
    let received = '';
    socket.on('data', (d) => (received += d.toString()));
    socket.write(`GET /api/routes/v1/default/ws/chat HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n`);
    await sleep(300);
    expect(received).toContain('101 Switching Protocols');
    expect(received).toContain('s3pPLMBiTxaQ9kYGzzhZRbK+xOo=');
    socket.write('ping');
    await sleep(200);
    expect(received.endsWith('echo:ping')).toBe(true);
    socket.destroy();
  });

  it('lets anyone call a public app', async () => {
    const res = await fetch(server.route('default', 'ws', '/'));
    expect(res.status).toBe(200);
  });

  it('queues requests while no worker is ready, and answers 503 while the app is paused', async () => {
    const dir = simpleApp(join(tempDir(), 'app'), { name: 'slowstart', extra: 'await new Promise((r) => setTimeout(r, 1500));' });
    const create = server.molt(['app', 'create', '--no-wait'], { cwd: dir });
    await create;
    // Sent before any worker is ready: it waits in the queue and is served once one is.
    const res = await fetch(server.route('default', 'slowstart', '/'), { headers: auth() });
    expect(res.status).toBe(200);
    expect(await res.text()).toBe('hello');

    expect((await server.molt(['app', 'pause', '--app', 'slowstart'])).code).toBe(0);
    const paused = await fetch(server.route('default', 'slowstart', '/'), { headers: auth() });
    expect(paused.status).toBe(503);
    expect((await paused.json()).error.code).toBe('MOLT_ERR_NO_WORKER');
  });

  it('answers 503 when the wait queue is full or a request waited longer than the queue timeout', async () => {
    const dir = simpleApp(join(tempDir(), 'app'), { name: 'never', config: { readiness: { path: '/healthz', timeoutMs: 20_000 } }, extra: 'await new Promise((r) => setTimeout(r, 8000));' });
    expect((await server.molt(['app', 'create', '--no-wait'], { cwd: dir })).code).toBe(0);
    const started = Date.now();
    const answers = await Promise.all(Array.from({ length: 6 }, () => fetch(server.route('default', 'never', '/'), { headers: auth() }).then(async (r) => ({ status: r.status, body: await r.json(), at: Date.now() - started }))));
    const full = answers.filter((a) => /queue is full/.test(a.body.error?.message));
    const timedOut = answers.filter((a) => /no worker of default\/never became ready within 4000 ms/.test(a.body.error?.message));
    expect(full, JSON.stringify(answers)).toHaveLength(1);
    expect(full[0]!.status).toBe(503);
    expect(full[0]!.at).toBeLessThan(1000);
    expect(timedOut, JSON.stringify(answers)).toHaveLength(5);
    for (const t of timedOut) {
      expect(t.status).toBe(503);
      expect(t.at).toBeGreaterThanOrEqual(3900);
    }
  });

  it('answers 502 when the worker drops the connection and 504 when it does not answer in time', async () => {
    const dir = writeApp(join(tempDir(), 'bad'), {
      'molt.config.json': JSON.stringify({ name: 'bad', entry: 'index.ts', readiness: { path: '/healthz' } }),
      'index.ts': `export default {
  async fetch(req: Request) {
    const path = new URL(req.url).pathname;
    if (path === '/exit') process.exit(1);
    if (path === '/hang') await new Promise((r) => setTimeout(r, 10_000));
    if (path === '/throw') throw new Error('app bug');
    return new Response('ok');
  },
};`,
    });
    expect((await server.molt(['app', 'create'], { cwd: dir })).code).toBe(0);
    const err = await fetch(server.route('default', 'bad', '/throw'), { headers: auth() });
    expect(err.status).toBe(500);
    expect((await err.json()).error.message).toContain('molt app logs');
    const hang = await fetch(server.route('default', 'bad', '/hang'), { headers: auth() });
    expect(hang.status).toBe(504);
    expect((await hang.json()).error).toMatchObject({ code: 'MOLT_ERR_UPSTREAM_TIMEOUT', message: expect.stringContaining('1500 ms') });
    const dropped = await fetch(server.route('default', 'bad', '/exit'), { headers: auth() });
    expect(dropped.status).toBe(502);
    expect((await dropped.json()).error.code).toBe('MOLT_ERR_UPSTREAM');
  });
});
