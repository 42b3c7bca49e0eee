import { type ChildProcess, spawn } from 'node:child_process';
import { request as httpRequest } from 'node:http';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ROOT, sleep, tempDir, waitFor, writeApp } from './helpers.js';

// The worker hands the app a lazy Request and a light Response; everything an app can do with
// the platform's own objects must still work. These run a real worker process on a real socket.
const APP = `
let aborted = false;
export default {
  async fetch(request) {
    const url = new URL(request.url);
    switch (url.pathname) {
      case '/text': return new Response('hello world');
      case '/bytes': return new Response(new TextEncoder().encode('raw bytes'));
      case '/json': return Response.json({ got: await request.json(), method: request.method });
      case '/text-body': return new Response(await request.text(), { status: 201, statusText: 'Made', headers: { 'X-Kind': 'echo', 'Content-Type': 'text/x-echo' } });
      case '/cookies': return new Response('c', { headers: [['set-cookie', 'a=1'], ['set-cookie', 'b=2']] });
      case '/headers-object': {
        const h = new Headers({ 'x-one': '1' });
        h.append('set-cookie', 'c=3');
        h.append('set-cookie', 'd=4');
        return new Response(null, { status: 202, headers: h });
      }
      case '/empty': return new Response(null, { status: 204 });
      case '/read-then-send': {
        const r = new Response('read first', { headers: { 'x-a': 'b' } });
        r.headers.set('x-added', 'later');
        return r;
      }
      case '/stream': return new Response(new ReadableStream({ start(c) { c.enqueue(new TextEncoder().encode('one,')); c.enqueue(new TextEncoder().encode('two')); c.close(); } }));
      case '/instanceof': {
        const fetched = await fetch(new URL('/text', request.url));
        return Response.json({
          request: request instanceof Request,
          response: new Response('x') instanceof Response,
          fetched: fetched instanceof Response,
          fetchedText: await fetched.text(),
          tag: Object.prototype.toString.call(request),
        });
      }
      case '/copy': {
        const copy = new Request(request);
        const proxied = await fetch(new Request(new URL('/json', request.url), { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ via: 'proxy' }) }));
        return Response.json({ url: copy.url, method: copy.method, header: copy.headers.get('x-test'), proxied: await proxied.json() });
      }
      case '/fetch-request': return fetch(new Request(new URL('/text', request.url), request));
      case '/errors': {
        const out = [];
        try { new Response('x', { status: 99 }); } catch (e) { out.push(e.name); }
        try { new Response('x', { status: 204 }); } catch (e) { out.push(e.name); }
        return Response.json(out);
      }
      case '/abort':
        request.signal.addEventListener('abort', () => { aborted = true; });
        return new Promise(() => {});
      case '/aborted': return new Response(String(aborted));
      default: return new Response('not found', { status: 404 });
    }
  },
};
`;

describe('the worker runtime', () => {
  let worker: ChildProcess;
  let base = '';
  beforeAll(async () => {
    const dir = writeApp(tempDir(), { 'index.js': APP, 'package.json': '{"type":"module"}' });
    worker = spawn(process.execPath, [join(ROOT, 'packages/molt/dist/runtime/worker-main.js')], {
      env: { ...process.env, MOLT_RELEASE_DIR: dir, MOLT_ENTRY: 'index.js', MOLT_PORT: '0' },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let out = '';
    worker.stdout!.on('data', (c: Buffer) => (out += c));
    worker.stderr!.on('data', (c: Buffer) => (out += c));
    base = await waitFor(() => /listening on (http:\/\/\S+)/.exec(out)?.[1], 10_000, `worker to listen: ${out}`);
  });
  afterAll(() => {
    worker.kill('SIGKILL');
  });

  it('writes string and byte bodies with the content type and length the platform would set', async () => {
    const text = await fetch(`${base}/text`);
    expect(text.status).toBe(200);
    expect(text.headers.get('content-type')).toBe('text/plain;charset=UTF-8');
    expect(text.headers.get('content-length')).toBe('11');
    expect(await text.text()).toBe('hello world');
    const bytes = await fetch(`${base}/bytes`);
    expect(bytes.headers.get('content-type')).toBeNull();
    expect(bytes.headers.get('content-length')).toBe('9');
    expect(await bytes.text()).toBe('raw bytes');
    const head = await fetch(`${base}/text`, { method: 'HEAD' });
    expect(head.headers.get('content-length')).toBe('11');
    expect(await head.text()).toBe('');
  });

  it('gives the app request bodies, status, status text and headers in every form', async () => {
    const json = await fetch(`${base}/json`, { method: 'POST', body: JSON.stringify({ a: 1 }), headers: { 'content-type': 'application/json' } });
    expect(await json.json()).toEqual({ got: { a: 1 }, method: 'POST' });
    const echo = await fetch(`${base}/text-body`, { method: 'PUT', body: 'sent' });
    expect([echo.status, echo.statusText, echo.headers.get('x-kind'), echo.headers.get('content-type')]).toEqual([201, 'Made', 'echo', 'text/x-echo']);
    expect(await echo.text()).toBe('sent');
    const cookies = await fetch(`${base}/cookies`);
    expect(cookies.headers.getSetCookie()).toEqual(['a=1', 'b=2']);
    const object = await fetch(`${base}/headers-object`);
    expect([object.status, object.headers.get('x-one'), object.headers.getSetCookie()]).toEqual([202, '1', ['c=3', 'd=4']]);
    const empty = await fetch(`${base}/empty`);
    expect([empty.status, await empty.text()]).toEqual([204, '']);
    const read = await fetch(`${base}/read-then-send`);
    expect([read.headers.get('x-a'), read.headers.get('x-added'), await read.text()]).toEqual(['b', 'later', 'read first']);
    expect(await (await fetch(`${base}/stream`)).text()).toBe('one,two');
  });

  it('keeps instanceof, new Request(request), fetch(request) and Response.json working', async () => {
    expect(await (await fetch(`${base}/instanceof`)).json()).toEqual({ request: true, response: true, fetched: true, fetchedText: 'hello world', tag: '[object Request]' });
    const copy = await fetch(`${base}/copy`, { headers: { 'x-test': 'kept' } });
    expect(await copy.json()).toEqual({ url: `${base}/copy`, method: 'GET', header: 'kept', proxied: { got: { via: 'proxy' }, method: 'POST' } });
    expect(await (await fetch(`${base}/fetch-request`)).text()).toBe('hello world');
  });

  it('throws what the platform throws for an invalid status or a body on a null-body status', async () => {
    expect(await (await fetch(`${base}/errors`)).json()).toEqual(['RangeError', 'TypeError']);
  });

  it("aborts the request's signal when the client goes away", async () => {
    const req = httpRequest(`${base}/abort`);
    req.on('error', () => {});
    req.end();
    await sleep(200);
    req.destroy();
    await waitFor(async () => (await (await fetch(`${base}/aborted`)).text()) === 'true', 5000, 'the abort signal');
  });
});
