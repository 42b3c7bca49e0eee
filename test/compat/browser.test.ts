import type { Browser } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { launchChromium } from '../browser/chromium.js';
import { ServerProcess, tempDir } from '../helpers.js';
import { compatApp } from './compat-apps.js';

// A Hono app as a browser uses one: absolute links, a redirect, an EventSource and a WebSocket on
// relative URLs, a cookie. Nothing in it knows where molt serves it.
const SITE = `
import { Hono } from 'hono';
import { getCookie, setCookie } from 'hono/cookie';
import { streamSSE } from 'hono/streaming';
import { upgradeWebSocket } from '@molt/app/hono';

const app = new Hono();
const page = (title: string, body: string) => '<!doctype html><title>' + title + '</title><body>' + body + '</body>';
app.get('/', (c) => c.html(page('home', '<h1>home</h1><a href="/post/1">first post</a>')));
app.get('/post/:id', (c) => {
  setCookie(c, 'last', c.req.param('id'), { path: '/' });
  return c.html(page('post', '<h1>post ' + c.req.param('id') + '</h1><a href="/old">back</a>'));
});
app.get('/old', (c) => c.redirect('/'));
app.get('/last', (c) => c.text(getCookie(c, 'last') ?? 'none'));
app.get('/sse', (c) =>
  streamSSE(c, async (stream) => {
    for (let id = 0; id < 3; id++) {
      await stream.writeSSE({ data: 'tick ' + id, id: String(id) });
      await stream.sleep(30);
    }
  }),
);
app.get('/ws', upgradeWebSocket(() => ({ onMessage: (event, ws) => ws.send('echo ' + event.data) })));
app.get('/live', (c) =>
  c.html(page('live', \`<pre id="out"></pre><script>
    const out = document.getElementById('out');
    const say = (line) => (out.textContent += line + '\\\\n');
    const es = new EventSource('/sse');
    let ticks = 0;
    es.onmessage = (e) => { say('sse ' + e.data); if (++ticks === 3) es.close(); };
    const ws = new WebSocket(new URL('/ws', location.href.replace(/^http/, 'ws')));
    ws.onopen = () => ws.send('hi');
    ws.onmessage = (e) => { say('ws ' + e.data); ws.close(); };
  </script>\`)),
);
export default app;
`;

describe('a Hono app in headless Chromium', () => {
  const server = new ServerProcess(tempDir(), ['--domain', 'localhost']);
  let browser: Browser;
  let port = '';
  beforeAll(async () => {
    browser = await launchChromium();
    await server.start();
    port = new URL(server.url).port;
    const created = await server.molt(['app', 'create'], { cwd: compatApp('site', { 'index.ts': SITE }, { dependencies: ['hono'] }) });
    expect(created.code, created.stderr).toBe(0);
  });
  afterAll(async () => {
    await browser?.close();
    await server.stop();
  });

  /** What the live page printed once the SSE and WebSocket lines are all there. */
  const liveLines = async (page: import('playwright-core').Page) => {
    await page.waitForFunction(() => (document.getElementById('out')?.textContent ?? '').split('\n').filter(Boolean).length >= 4, undefined, { timeout: 10_000 });
    return (await page.textContent('#out'))!.split('\n').filter(Boolean).sort();
  };
  const LIVE = ['sse tick 0', 'sse tick 1', 'sse tick 2', 'ws echo hi'];

  it('on its own host: signs in, follows links and redirects, keeps its cookie, streams SSE and talks WebSocket', async () => {
    const context = await browser.newContext();
    const page = await context.newPage();
    const origin = `http://site.localhost:${port}`;
    // A private app: the browser is sent to molt's login page on the app's host, then back.
    await page.goto(`${origin}/old`);
    expect(new URL(page.url()).pathname).toBe('/.molt/login');
    await page.fill('#token', await server.createToken('default', 'invoker'));
    await page.click('button[type=submit]');
    await page.waitForURL(`${origin}/`);
    expect(await page.textContent('h1')).toBe('home');
    await page.click('a[href="/post/1"]');
    await page.waitForURL(`${origin}/post/1`);
    expect(await page.textContent('h1')).toBe('post 1');
    await page.click('a[href="/old"]');
    await page.waitForURL(`${origin}/`);
    await page.goto(`${origin}/last`);
    expect(await page.textContent('body')).toBe('1');
    // The cookie is the app's, on its host; molt's session cookie is molt's and never reaches the app.
    const cookies = await context.cookies(origin);
    expect(cookies.map((c) => c.name).sort()).toEqual(['last', 'molt_session']);
    expect(cookies.find((c) => c.name === 'molt_session')).toMatchObject({ httpOnly: true, sameSite: 'Lax', domain: 'site.localhost' });
    await page.goto(`${origin}/live`);
    expect(await liveLines(page)).toEqual(LIVE);
    await context.close();
  });

  it('by its path route, with the token as a bearer header (Chromium will not send Proxy-Authorization): the prefix is fitted to redirects and cookies', async () => {
    const context = await browser.newContext({ extraHTTPHeaders: { authorization: `Bearer ${server.adminToken}` } });
    const page = await context.newPage();
    const base = `http://127.0.0.1:${port}/api/routes/v1/default/site`;
    await page.goto(`${base}/old`);
    expect(page.url()).toBe(`${base}/`);
    expect(await page.textContent('h1')).toBe('home');
    await page.goto(`${base}/post/2`);
    // Path=/ is the app's root: under a path route, the prefix.
    const last = (await context.cookies()).find((c) => c.name === 'last');
    expect(last).toMatchObject({ value: '2', path: '/api/routes/v1/default/site/' });
    await page.goto(`${base}/last`);
    expect(await page.textContent('body')).toBe('2');
    await context.close();
  });
});
