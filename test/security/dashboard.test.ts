import type { Browser, BrowserContext } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { launchChromium } from '../browser/chromium.js';
import { compatApp } from '../compat/compat-apps.js';
import { hostRequest } from '../compat/http.js';
import { ServerProcess, tempDir, waitFor } from '../helpers.js';
import { record } from './report.js';

const boundary = 'the dashboard and its session';

// A public app on a path route, on the server's own host (the dashboard's): its page tries, in the
// browser of a signed-in admin, to read tokens, make an admin token, and reach the dashboard's
// window; its server side keeps every header it is sent, to replay whatever session came with it.
const EVIL = `
const seen: string[] = [];
const report: string[] = [];
const page = \`<!doctype html><title>evil</title><script>
  const out = [];
  const done = () => fetch('report', { method: 'POST', body: JSON.stringify(out) });
  (async () => {
    for (const [method, path, body] of [['GET', '/api/v1/tokens'], ['POST', '/api/v1/tokens', { namespace: '*', role: 'admin', name: 'stolen' }], ['GET', '/api/v1/session']]) {
      try {
        const r = await fetch(path, { method, credentials: 'include', headers: body ? { 'content-type': 'application/json' } : {}, body: body ? JSON.stringify(body) : undefined });
        out.push(method + ' ' + path + ' ' + r.status + ' ' + (await r.text()).slice(0, 200));
      } catch (e) { out.push(method + ' ' + path + ' failed: ' + e.message); }
    }
    try { const w = window.open('/'); await new Promise((r) => setTimeout(r, 500)); out.push('window: ' + w.document.cookie + ' ' + w.document.body.innerText.slice(0, 100)); } catch (e) { out.push('window blocked: ' + e.message); }
    try { out.push('cookie: ' + document.cookie); } catch (e) { out.push('cookie blocked: ' + e.name); }
    done();
  })();
</script>\`;
export default {
  async fetch(request: Request) {
    const url = new URL(request.url);
    seen.push(request.headers.get('cookie') ?? '');
    if (url.pathname === '/report') { report.push(await request.text()); return new Response('ok'); }
    if (url.pathname === '/seen') return Response.json({ cookies: seen, report });
    return new Response(page, { headers: { 'content-type': 'text/html' } });
  },
};`;

describe('the dashboard against a hostile app on its own origin', () => {
  const server = new ServerProcess(tempDir());
  let browser: Browser;
  let admin: BrowserContext;
  let cookie = '';
  beforeAll(async () => {
    browser = await launchChromium();
    await server.start();
    const created = await server.molt(['app', 'create'], { cwd: compatApp('evil', { 'index.ts': EVIL }, { config: { public: true, readiness: { path: '/seen', timeoutMs: 10_000 } } }) });
    expect(created.code, created.stderr).toBe(0);
    admin = await browser.newContext();
    const page = await admin.newPage();
    await page.goto(server.url);
    await page.getByLabel('Token').fill(server.adminToken);
    await page.getByRole('button', { name: 'Sign in' }).click();
    await page.getByRole('navigation', { name: 'Sections' }).waitFor();
    cookie = (await admin.cookies()).find((c) => c.name === 'molt_dashboard')!.value;
  });
  afterAll(async () => {
    await browser?.close();
    await server.stop();
  });

  it("runs an app's page on a path route in a sandbox: its script cannot use a visitor's dashboard session", async () => {
    const tokensBefore = (await server.api('GET', '/api/v1/tokens')).body.tokens.length;
    const page = await admin.newPage();
    const res = await page.goto(server.route('default', 'evil', '/'));
    expect(res?.headers()['content-security-policy']).toContain('sandbox');
    const seen = await waitFor(async () => {
      const r = (await (await fetch(server.route('default', 'evil', '/seen'))).json()) as { report: string[] };
      return r.report.length > 0 ? (JSON.parse(r.report[0]!) as string[]) : undefined;
    }, 20_000, 'the page to report');
    const tokensAfter = (await server.api('GET', '/api/v1/tokens')).body.tokens;
    const gotThrough = seen.filter((l) => / 2\d\d /.test(l));
    record({ boundary, attack: "an app's page on a path route (the dashboard's host) calls the API with the visitor's dashboard session and opens the dashboard's window", expected: 'no call is authenticated, no token is made, the window is out of reach', observed: seen.join(' | ').slice(0, 400), refused: gotThrough.length === 0 && tokensAfter.length === tokensBefore });
    expect(gotThrough).toEqual([]);
    expect(tokensAfter.some((t: { name: string }) => t.name === 'stolen')).toBe(false);
    expect(tokensAfter).toHaveLength(tokensBefore);
    expect(seen.find((l) => l.startsWith('window'))).toMatch(/^window blocked/);
    await page.close();
  });

  it("never passes the dashboard's cookie to an app; replayed from outside, a session needs the dashboard's origin to change anything", async () => {
    const page = await admin.newPage();
    await page.goto(server.route('default', 'evil', '/anything'));
    const { cookies } = (await (await fetch(server.route('default', 'evil', '/seen'))).json()) as { cookies: string[] };
    const leaked = cookies.filter((c) => c.includes('molt_dashboard') || c.includes(cookie));
    record({ boundary, attack: 'an app on a path route reads the Cookie header of a signed-in visitor', expected: "the dashboard's session cookie is not in it", observed: `${cookies.length} request(s), ${leaked.length} with the session`, refused: leaked.length === 0 });
    expect(leaked).toEqual([]);
    // Had it been stolen: a change without the dashboard's Origin is refused.
    const replay = await fetch(`${server.url}/api/v1/tokens`, { method: 'POST', headers: { cookie: `molt_dashboard=${cookie}`, 'content-type': 'application/json' }, body: JSON.stringify({ namespace: '*', role: 'admin' }) });
    expect(replay.status).toBe(403);
    await page.close();
  });

  it('refuses a forged, altered or lengthened session, one of another token, and one sent to another host name', async () => {
    const [id, expires, mac] = cookie.split('.') as [string, string, string];
    const tries: [string, string, string | undefined][] = [
      ['an altered signature', `${id}.${expires}.${mac.slice(0, -2)}xx`, undefined],
      ['a later expiry with the old signature', `${id}.${Number(expires) + 86400}.${mac}`, undefined],
      ['a session of another token id', `AAAAAAAAAAAA.${expires}.${mac}`, undefined],
      ['the same session sent to another host name', cookie, 'localhost'],
    ];
    const observed: string[] = [];
    for (const [what, value, host] of tries) {
      const res = host
        ? await hostRequest(server.url, host, '/api/v1/session', { headers: { cookie: `molt_dashboard=${value}` } })
        : await fetch(`${server.url}/api/v1/session`, { headers: { cookie: `molt_dashboard=${value}` } }).then((r) => ({ status: r.status }));
      observed.push(`${what}: ${res.status}`);
      expect(res.status, what).toBe(401);
    }
    record({ boundary, attack: 'a dashboard session forged, altered, lengthened, moved to another token or host', expected: 'each is refused with 401', observed: observed.join('; '), refused: true });
    // The genuine one still works.
    expect((await fetch(`${server.url}/api/v1/session`, { headers: { cookie: `molt_dashboard=${cookie}` } })).status).toBe(200);
  });
});
