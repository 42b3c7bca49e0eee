import { connect } from 'node:net';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ServerProcess, tempDir, writeApp } from '../helpers.js';
import { record } from './report.js';

const boundary = 'gateway';

/** Sends raw bytes and reads until the server closes or `ms` pass: what a hand-written client sees. */
function raw(port: number, data: string | Buffer, ms = 2000): Promise<string> {
  return new Promise((resolvePromise) => {
    const socket = connect(port, '127.0.0.1');
    let out = '';
    socket.on('data', (c) => (out += c.toString('latin1')));
    const done = () => resolvePromise(out);
    socket.on('close', done);
    socket.on('error', done);
    setTimeout(() => socket.destroy(), ms);
    socket.write(data);
  });
}

/** The JSON body of a raw HTTP response, or undefined when it has none. */
function jsonBody(response: string): { error?: { code: string; message: string } } | undefined {
  const body = response.slice(response.indexOf('\r\n\r\n') + 4);
  try {
    return JSON.parse(body);
  } catch {
    return undefined;
  }
}

describe('the gateway keeps molt tokens from apps and never hands a refused request to a worker', () => {
  const server = new ServerProcess(tempDir());
  let port = 0;
  let invoker = '';
  const seen = async () => JSON.parse(await (await fetch(server.route('default', 'echo', '/seen'), { headers: { authorization: `Bearer ${invoker}` } })).text()) as { method: string; path: string; complete: boolean }[];

  beforeAll(async () => {
    await server.start();
    port = Number(new URL(server.url).port);
    invoker = await server.createToken('default', 'invoker');
    // Records every request it sees (and whether its body arrived whole); /headers echoes them.
    const dir = writeApp(join(tempDir(), 'echo'), {
      'molt.config.json': JSON.stringify({ name: 'echo', entry: 'index.ts', readiness: { path: '/healthz' } }),
      'index.ts': `
const seen: { method: string; path: string; complete: boolean }[] = [];
export default {
  async fetch(req: Request): Promise<Response> {
    const path = new URL(req.url).pathname;
    if (path === '/healthz') return new Response('ok');
    if (path === '/seen') return Response.json(seen);
    const entry = { method: req.method, path, complete: false };
    seen.push(entry);
    try { await req.arrayBuffer(); entry.complete = true; } catch {}
    return Response.json(Object.fromEntries(req.headers));
  },
};`,
    });
    expect((await server.molt(['app', 'create'], { cwd: dir })).code).toBe(0);
  });
  afterAll(() => server.stop());

  it('removes a molt token from Authorization whatever the scheme\'s case and spacing', async () => {
    const spellings = [`Bearer ${invoker}`, `bearer ${invoker}`, `BEARER   ${invoker}`, `Bearer\t${invoker}`];
    for (const authorization of spellings) {
      const res = await fetch(server.route('default', 'echo', '/headers'), { headers: { authorization } });
      expect(res.status).toBe(200);
      const headers = (await res.json()) as Record<string, string>;
      expect(JSON.stringify(headers)).not.toContain('molt_');
      record({ boundary, attack: `a molt token sent as "${authorization.replace(invoker, 'molt_…').replace('\t', '\\t')}"`, expected: 'authenticated, and removed before the app', observed: `200; app saw ${headers.authorization === undefined ? 'no Authorization' : 'an Authorization header'}`, refused: !JSON.stringify(headers).includes('molt_') });
    }
    // Two Authorization headers: the token is checked from the first, and neither reaches the app.
    const both = await raw(port, `GET /api/routes/v1/default/echo/headers HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ${invoker}\r\nAuthorization: bearer ${server.adminToken}\r\nConnection: close\r\n\r\n`);
    expect(both).toMatch(/^HTTP\/1\.1 200/);
    expect(both).not.toContain('molt_');
  });

  it('refuses transfer codings it cannot pass on, and requests Node cannot parse, with JSON, before any worker sees them', async () => {
    const before = (await seen()).length;
    const auth = `Authorization: Bearer ${invoker}\r\n`;
    const cases: [string, string, number, string][] = [
      ['Transfer-Encoding: identity', `POST /api/routes/v1/default/echo/x HTTP/1.1\r\nHost: x\r\n${auth}Transfer-Encoding: identity\r\n\r\nhello`, 501, 'MOLT_ERR_UNSUPPORTED_CODING'],
      ['Transfer-Encoding: gzip, chunked', `POST /api/routes/v1/default/echo/x HTTP/1.1\r\nHost: x\r\n${auth}Transfer-Encoding: gzip, chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n`, 501, 'MOLT_ERR_UNSUPPORTED_CODING'],
      ['Content-Length with Transfer-Encoding', `POST /api/routes/v1/default/echo/x HTTP/1.1\r\nHost: x\r\n${auth}Content-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n`, 400, 'MOLT_ERR_BAD_REQUEST'],
      ['1,000 request headers', `GET /api/routes/v1/default/echo/x HTTP/1.1\r\nHost: x\r\n${auth}${Array.from({ length: 1000 }, (_, i) => `X-Header-${i}: value-number-${i}\r\n`).join('')}\r\n`, 431, 'MOLT_ERR_HEADERS_TOO_LARGE'],
      ['a request line that is not HTTP', 'HELLO THERE\r\n\r\n', 400, 'MOLT_ERR_BAD_REQUEST'],
    ];
    for (const [what, request, status, code] of cases) {
      const response = await raw(port, request);
      expect(response, what).toMatch(new RegExp(`^HTTP/1\\.1 ${status} `));
      expect(jsonBody(response)?.error?.code, what).toBe(code);
      record({ boundary, attack: `a request with ${what}`, expected: `${status} with the JSON error; no worker sees it`, observed: `${status} ${code}`, refused: true });
    }
    expect((await seen()).length).toBe(before);
  });

  it('cuts a worker off from a request whose chunked body turns out malformed: it never completes there', async () => {
    const before = (await seen()).length;
    const response = await raw(port, `POST /api/routes/v1/default/echo/x HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ${invoker}\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\nZZ\r\nmore\r\n0\r\n\r\n`);
    expect(response).toMatch(/^HTTP\/1\.1 400 /);
    expect(jsonBody(response)?.error?.code).toBe('MOLT_ERR_BAD_REQUEST');
    const after = await seen();
    // Streamed bodies start before they end: the worker saw the request begin, and saw it aborted.
    expect(after.slice(before).filter((r) => r.complete)).toEqual([]);
    record({ boundary, attack: 'a chunked body that turns malformed after the first chunk', expected: '400 JSON to the client; the worker sees the request aborted, never complete', observed: `400 MOLT_ERR_BAD_REQUEST; complete requests at the worker: ${after.slice(before).filter((r) => r.complete).length}`, refused: true });
  });

  it('answers JSON errors on the API side too (header overflow)', async () => {
    const response = await raw(port, `GET /api/v1/health HTTP/1.1\r\nHost: x\r\n${Array.from({ length: 1000 }, (_, i) => `X-Header-${i}: value-number-${i}\r\n`).join('')}\r\n`);
    expect(response).toMatch(/^HTTP\/1\.1 431 /);
    expect(jsonBody(response)?.error?.code).toBe('MOLT_ERR_HEADERS_TOO_LARGE');
  });
});
