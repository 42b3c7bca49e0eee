import { writeFileSync } from 'node:fs';
import { connect } from 'node:net';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { appRun, freePort, ServerProcess, tempDir, waitFor } from '../helpers.js';
import { compatApp } from './compat-apps.js';
import { mustOpen, openSocket } from './ws-client.js';

// The web way, as Deno writes it: upgradeWebSocket(request) gives a standard WebSocket and the
// response to return from fetch.
const deno = (version: string) => `
import { upgradeWebSocket } from '@molt/app';

export default {
  fetch(request: Request) {
    const url = new URL(request.url);
    if (url.pathname === '/') return new Response('plain http');
    if (request.headers.get('upgrade') !== 'websocket') return new Response('this is a WebSocket endpoint', { status: 426 });
    const offered = request.headers.get('sec-websocket-protocol')?.split(',')[0]?.trim();
    const { socket, response } = upgradeWebSocket(request, offered ? { protocol: offered } : {});
    socket.binaryType = 'arraybuffer';
    socket.onopen = () => socket.send('hello ' + url.pathname);
    socket.addEventListener('message', (e: MessageEvent) => {
      if (e.data === 'bye') return socket.close(1000, 'asked to');
      if (typeof e.data === 'string') return socket.send('${version} echo: ' + e.data);
      socket.send(new Uint8Array(e.data as ArrayBuffer).reverse());
    });
    response.headers.append('set-cookie', 'room=' + url.pathname.slice(1) + '; Path=/; HttpOnly');
    return response;
  },
};
`;

// Hono as its docs write a WebSocket route, with molt's adapter in place of hono/deno's.
const HONO = `
import { Hono } from 'hono';
import { logger } from 'hono/logger';
import { upgradeWebSocket } from '@molt/app/hono';

const app = new Hono();
app.use(logger());
// A middleware that replaces the response, as Hono's docs show: the upgrade survives the copy.
app.use('/ws', async (c, next) => {
  await next();
  c.res = new Response(c.res.body, c.res);
  c.res.headers.set('x-wrapped', 'yes');
});
app.get('/', (c) => c.text('hono home'));
app.get(
  '/ws',
  upgradeWebSocket((c) => ({
    onOpen(_event, ws) {
      ws.send('welcome ' + (c.req.query('name') ?? 'anon'));
    },
    onMessage(event, ws) {
      ws.send('Hello from server: ' + event.data);
    },
    onClose(event) {
      console.log('socket closed ' + event.code);
    },
  })),
);
app.get('/direct', (c) =>
  c.req.header('upgrade') === 'websocket'
    ? upgradeWebSocket(c, { onMessage: (event, ws) => ws.send(String(event.data).toUpperCase()) })
    : c.text('upgrade me', 426),
);
export default app;
`;

/** The first bytes a server answers to a hand-written upgrade request. */
function rawUpgrade(serverUrl: string, path: string, headers: Record<string, string>): Promise<string> {
  const { port } = new URL(serverUrl);
  return new Promise((resolve, reject) => {
    const socket = connect(Number(port), '127.0.0.1');
    let got = '';
    socket.on('data', (d) => (got += d.toString()));
    socket.on('close', () => resolve(got));
    socket.on('error', reject);
    const lines = Object.entries({ host: `127.0.0.1:${port}`, upgrade: 'websocket', connection: 'Upgrade', 'sec-websocket-version': '13', ...headers }).map(([k, v]) => `${k}: ${v}`);
    socket.write(`GET ${path} HTTP/1.1\r\n${lines.join('\r\n')}\r\n\r\n`);
    setTimeout(() => socket.destroy(), 3000);
  });
}

describe('WebSockets the web way', () => {
  const server = new ServerProcess(tempDir(), ['--domain', 'localhost']);
  let wsBase = '';
  let auth: Record<string, string> = {};
  beforeAll(async () => {
    await server.start();
    wsBase = server.url.replace(/^http/, 'ws');
    auth = { authorization: `Bearer ${server.adminToken}` };
    for (const [name, files, deps] of [
      ['chat', { 'index.ts': deno('v1') }, []],
      ['hono-ws', { 'index.ts': HONO }, ['hono']],
    ] as const) {
      const created = await server.molt(['app', 'create'], { cwd: compatApp(name, files, { dependencies: [...deps] }) });
      expect(created.code, created.stderr).toBe(0);
    }
  });
  afterAll(() => server.stop());
  const workersOf = async (app: string) => (await server.api('GET', `/api/v1/namespaces/default/apps/${app}/workers`)).body.workers as { id: string; pid: number; revision: number; status: string }[];

  it('upgradeWebSocket(request): text, binary, subprotocol, handshake cookies, a clean close; by path and by host', async () => {
    const url = { path: `${wsBase}/api/routes/v1/default/chat/lobby`, host: `${wsBase}/lobby` };
    const host = { host: `chat.localhost:${new URL(server.url).port}` };
    for (const [way, target, headers] of [
      ['path', url.path, auth],
      ['host', url.host, { ...auth, ...host }],
    ] as const) {
      const s = await mustOpen(target, { headers, protocols: ['chat.v2', 'chat.v1'] });
      expect(s.ws.protocol, way).toBe('chat.v2');
      expect(String(s.headers['set-cookie']), way).toContain('room=lobby; Path=/; HttpOnly');
      expect(await s.next(), way).toBe('hello /lobby');
      expect(await s.ask('hi'), way).toBe('v1 echo: hi');
      expect(await s.ask(Buffer.from([1, 2, 3]))).toEqual(Buffer.from([3, 2, 1]));
      s.ws.send('bye');
      expect(await s.closed).toEqual({ code: 1000, reason: 'asked to' });
    }
  });

  it('answers what the app answers when it does not upgrade, and checks the token first', async () => {
    // The app's fetch sees the upgrade request and answers it as HTTP: the socket never opens.
    expect(await openSocket(`${wsBase}/api/routes/v1/default/chat/`, { headers: auth })).toEqual({ refused: true, status: 200, body: 'plain http' });
    const plain = await fetch(server.route('default', 'chat', '/lobby'), { headers: auth });
    expect(plain.status).toBe(426);
    expect(await plain.text()).toBe('this is a WebSocket endpoint');
    const anonymous = await openSocket(`${wsBase}/api/routes/v1/default/chat/lobby`);
    expect(anonymous).toMatchObject({ refused: true, status: 401 });
    // A handshake with a malformed key is refused with 400; the worker goes on serving.
    const answer = await rawUpgrade(server.url, '/api/routes/v1/default/chat/lobby', { ...auth, 'sec-websocket-key': 'not-a-key' });
    expect(answer).toMatch(/^HTTP\/1\.1 400 /);
    expect(await (await mustOpen(`${wsBase}/api/routes/v1/default/chat/lobby`, { headers: auth })).next()).toBe('hello /lobby');
  });

  it("Hono's upgradeWebSocket helper, as middleware and in a handler, through a middleware that copies the response", async () => {
    const s = await mustOpen(`${wsBase}/api/routes/v1/default/hono-ws/ws?name=ann`, { headers: auth });
    expect(s.headers['x-wrapped']).toBe('yes');
    expect(await s.next()).toBe('welcome ann');
    expect(await s.ask('there')).toBe('Hello from server: there');
    s.ws.close(1000);
    expect((await s.closed).code).toBe(1000);
    const direct = await mustOpen(`${wsBase}/api/routes/v1/default/hono-ws/direct`, { headers: auth });
    expect(await direct.ask('loud')).toBe('LOUD');
    direct.ws.close();
    // Plain routes of the same app are untouched.
    expect(await (await fetch(server.route('default', 'hono-ws', '/'), { headers: auth })).text()).toBe('hono home');
    expect((await fetch(server.route('default', 'hono-ws', '/direct'), { headers: auth })).status).toBe(426);
    const logs = await waitFor(async () => {
      const out = (await server.molt(['app', 'logs', '--app', 'hono-ws'])).stdout;
      return out.includes('socket closed 1000') ? out : undefined;
    }, 10_000, 'the onClose line in the logs');
    expect(logs).toContain('socket closed 1000');
  });

  it('through a hot upgrade, an open socket stays on the old code; new sockets get the new code', async () => {
    const dir = compatApp('hot-ws', { 'index.ts': deno('v1') }, { config: { workers: 1 } });
    expect((await server.molt(['app', 'create'], { cwd: dir })).code).toBe(0);
    const before = await workersOf('hot-ws');
    const old = await mustOpen(`${wsBase}/api/routes/v1/default/hot-ws/a`, { headers: auth });
    expect(await old.next()).toBe('hello /a');
    writeFileSync(join(dir, 'index.ts'), deno('v2'));
    const update = await server.molt(['app', 'update'], { cwd: dir });
    expect(update.code, update.stderr).toBe(0);
    expect(update.stdout).toContain('strategy: hot');
    expect(update.stderr).toContain('(hot: no worker restarted)');
    const fresh = await mustOpen(`${wsBase}/api/routes/v1/default/hot-ws/b`, { headers: auth });
    expect(await fresh.next()).toBe('hello /b');
    expect(await fresh.ask('x')).toBe('v2 echo: x');
    expect(await old.ask('x')).toBe('v1 echo: x');
    // One worker, the same process, serves both.
    const after = await workersOf('hot-ws');
    expect(after.map((w) => [w.id, w.pid])).toEqual(before.map((w) => [w.id, w.pid]));
    old.ws.close();
    fresh.ws.close();
  });

  it('through a rolling update, an open socket keeps its worker until the drain deadline, then gets 1001', async () => {
    const rollout = { drainTimeoutMs: 2000, stopGraceMs: 2000 };
    const dir = compatApp('roll-ws', { 'index.ts': deno('v1') }, { config: { workers: 1, rollout } });
    expect((await server.molt(['app', 'create'], { cwd: dir })).code).toBe(0);
    const old = await mustOpen(`${wsBase}/api/routes/v1/default/roll-ws/a`, { headers: auth });
    expect(await old.next()).toBe('hello /a');
    writeFileSync(join(dir, 'index.ts'), deno('v2'));
    const update = server.molt(['app', 'update', '--strategy', 'rolling'], { cwd: dir });
    // Once the new worker serves, the old one drains: its socket still works meanwhile.
    await waitFor(async () => (await workersOf('roll-ws')).some((w) => w.revision === 2 && w.status === 'RUNNING') || undefined, 20_000, 'the new worker');
    const draining = Date.now();
    const fresh = await mustOpen(`${wsBase}/api/routes/v1/default/roll-ws/b`, { headers: auth });
    expect(await fresh.next()).toBe('hello /b');
    expect(await fresh.ask('x')).toBe('v2 echo: x');
    expect(await old.ask('still there?')).toBe('v1 echo: still there?');
    const closed = await old.closed;
    expect(closed).toEqual({ code: 1001, reason: 'the worker stops' });
    // Not before its deadline (less what passed before `draining` was taken).
    expect(Date.now() - draining).toBeGreaterThan(rollout.drainTimeoutMs - 800);
    expect((await update).code).toBe(0);
    expect(await fresh.ask('y')).toBe('v2 echo: y');
    fresh.ws.close();
  });
});

describe('WebSockets under molt app run', () => {
  it('serves the same Hono app, @molt/app/hono resolved to the runtime copy', async () => {
    const port = await freePort();
    const { child, output } = appRun(compatApp('hono-local', { 'index.ts': HONO }, { dependencies: ['hono'] }), port);
    try {
      await waitFor(() => fetch(`http://127.0.0.1:${port}/`).then((r) => r.ok || undefined, () => undefined), 20_000, 'the local app');
      const s = await mustOpen(`ws://127.0.0.1:${port}/ws?name=local`);
      expect(await s.next()).toBe('welcome local');
      expect(await s.ask('dev')).toBe('Hello from server: dev');
      s.ws.close(1000);
      await waitFor(() => output().includes('socket closed 1000') || undefined, 5000, 'the onClose line');
    } finally {
      child.kill('SIGINT');
    }
  });
});
