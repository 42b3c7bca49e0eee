import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ServerProcess, tempDir } from '../helpers.js';
import { compatApp } from './compat-apps.js';
import { hostRequest } from './http.js';

// A Hono app as its docs write one: redirects, links, cookies, its own basic auth. It runs unchanged
// on its own hostname, and under a path route the gateway fits what a path changes.
const BLOG = `
import { Hono } from 'hono';
import { basicAuth } from 'hono/basic-auth';
import { getCookie, setCookie } from 'hono/cookie';

const app = new Hono();
app.get('/', (c) => c.html('<a href="/post/1">first post</a>'));
app.get('/post/:id', (c) => c.text(\`post \${c.req.param('id')}\`));
app.get('/old', (c) => c.redirect('/'));
app.get('/elsewhere', (c) => c.redirect('https://hono.dev/docs'));
app.get('/remember', (c) => {
  setCookie(c, 'reader', 'ann', { path: '/', httpOnly: true, domain: 'localhost' });
  return c.text('remembered');
});
app.get('/whoami', (c) => c.text(getCookie(c, 'reader') ?? 'nobody'));
app.get('/seen', (c) => c.json({
  prefix: c.req.header('x-forwarded-prefix') ?? null,
  host: c.req.header('host'),
  forwardedHost: c.req.header('x-forwarded-host') ?? null,
  authorization: c.req.header('authorization') ?? null,
  proxyAuthorization: c.req.header('proxy-authorization') ?? null,
  cookie: c.req.header('cookie') ?? null,
}));
// The documented one line that honours a path route's prefix in links.
app.get('/links', (c) => c.html(\`<a href="\${c.req.header('x-forwarded-prefix') ?? ''}/post/2">second</a>\`));
app.use('/admin/*', basicAuth({ username: 'editor', password: 'secret' }));
app.get('/admin/', (c) => c.text('admin area'));
export default app;
`;

const basic = `Basic ${Buffer.from('editor:secret').toString('base64')}`;

describe('a Hono app by hostname and by path', () => {
  const server = new ServerProcess(tempDir(), ['--domain', 'localhost']);
  let bearer = '';
  beforeAll(async () => {
    await server.start();
    bearer = `Bearer ${server.adminToken}`;
    expect((await server.molt(['namespace', 'create', 'team'])).code).toBe(0);
    const dir = compatApp('blog', { 'index.ts': BLOG }, { dependencies: ['hono'] });
    for (const ns of ['default', 'team']) {
      const created = await server.molt(['app', 'create', '-n', ns], { cwd: dir });
      expect(created.code, created.stderr).toBe(0);
    }
  });
  afterAll(() => server.stop());

  it('serves <app>.<domain> and <app>.<namespace>.<domain> at the root path, links and redirects unchanged', async () => {
    for (const host of ['blog.localhost', 'blog.team.localhost']) {
      const home = await hostRequest(server.url, host, '/', { headers: { authorization: bearer } });
      expect(home.status).toBe(200);
      expect(home.body).toBe('<a href="/post/1">first post</a>');
      expect((await hostRequest(server.url, host, '/post/1', { headers: { authorization: bearer } })).body).toBe('post 1');
      const old = await hostRequest(server.url, host, '/old', { headers: { authorization: bearer } });
      expect(old.status).toBe(302);
      expect(old.headers.location).toBe('/');
      const seen = JSON.parse((await hostRequest(server.url, host, '/seen', { headers: { authorization: bearer } })).body);
      expect(seen).toMatchObject({ prefix: null, host: expect.stringMatching(new RegExp(`^${host}:\\d+$`)), authorization: null });
    }
    // The server's own host still serves the API; an unknown app's host is a 404 after the token check.
    expect((await hostRequest(server.url, 'localhost', '/api/v1/health')).status).toBe(200);
    const missing = await hostRequest(server.url, 'nope.localhost', '/', { headers: { authorization: bearer } });
    expect(missing.status).toBe(404);
    expect(JSON.parse(missing.body).error.code).toBe('MOLT_ERR_APP_NOT_FOUND');
  });

  it('under a path route, sends X-Forwarded-Prefix and fits redirects and cookie paths to it', async () => {
    const prefix = '/api/routes/v1/default/blog';
    const path = (p: string) => hostRequest(server.url, '127.0.0.1', `${prefix}${p}`, { headers: { authorization: bearer } });
    const seen = JSON.parse((await path('/seen')).body);
    expect(seen.prefix).toBe(prefix);
    const old = await path('/old');
    expect(old.headers.location).toBe(`${prefix}/`);
    // Another origin is left alone; a link made with the prefix header points under it.
    expect((await path('/elsewhere')).headers.location).toBe('https://hono.dev/docs');
    expect((await path('/links')).body).toBe(`<a href="${prefix}/post/2">second</a>`);
    const remembered = await path('/remember');
    expect(remembered.headers['set-cookie']).toEqual([`reader=ann; Path=${prefix}/; HttpOnly`]);
  });

  it("keeps one app's cookies on its own host: Domain is dropped, so other apps' hosts never get them", async () => {
    const set = await hostRequest(server.url, 'blog.localhost', '/remember', { headers: { authorization: bearer } });
    expect(set.headers['set-cookie']).toEqual(['reader=ann; Path=/; HttpOnly']);
  });

  it('takes the molt token in Proxy-Authorization and passes the app its own Authorization untouched', async () => {
    const area = await hostRequest(server.url, 'blog.localhost', '/admin/', { headers: { 'proxy-authorization': bearer, authorization: basic } });
    expect(area.status).toBe(200);
    expect(area.body).toBe('admin area');
    const seen = JSON.parse((await hostRequest(server.url, 'blog.localhost', '/seen', { headers: { 'proxy-authorization': bearer, authorization: basic } })).body);
    expect(seen).toMatchObject({ authorization: basic, proxyAuthorization: null });
    // Without the app's credentials the app itself refuses, as it would anywhere.
    expect((await hostRequest(server.url, 'blog.localhost', '/admin/', { headers: { 'proxy-authorization': bearer } })).status).toBe(401);
    // Both in Authorization, either order: molt takes its token, the app gets Basic.
    for (const order of [[basic, bearer], [bearer, basic]]) {
      const both = await hostRequest(server.url, 'blog.localhost', '/admin/', { headers: { authorization: order } });
      expect(both.status, both.body).toBe(200);
    }
    // A wrong molt token in Proxy-Authorization is refused by molt, the app never asked.
    const wrong = await hostRequest(server.url, 'blog.localhost', '/admin/', { headers: { 'proxy-authorization': 'Bearer molt_wrongwrongwrong', authorization: basic } });
    expect(wrong.status).toBe(401);
    expect(JSON.parse(wrong.body).error.code).toBe('MOLT_ERR_UNAUTHENTICATED');
  });

  it('signs a browser in on the app host with a session cookie the app never sees, ended when its token is revoked', async () => {
    const page = await hostRequest(server.url, 'blog.localhost', '/post/1', { headers: { accept: 'text/html' } });
    expect(page.status).toBe(302);
    expect(page.headers.location).toBe('/.molt/login?next=%2Fpost%2F1');
    const form = await hostRequest(server.url, 'blog.localhost', '/.molt/login?next=%2Fpost%2F1');
    expect(form.status).toBe(200);
    expect(form.headers['content-security-policy']).toContain("default-src 'none'");
    expect(form.body).toContain('<form method="post" action="/.molt/login">');
    expect(form.body).toContain('value="/post/1"');
    // An API client gets a 401, not a page.
    expect((await hostRequest(server.url, 'blog.localhost', '/post/1')).status).toBe(401);

    const token = await server.createToken('default', 'invoker');
    const post = (body: string, headers: Record<string, string> = {}) =>
      hostRequest(server.url, 'blog.localhost', '/.molt/login', { method: 'POST', headers: { 'content-type': 'application/x-www-form-urlencoded', ...headers }, body });
    const wrong = await post('token=molt_wrongwrongwrong&next=%2Fpost%2F1');
    expect(wrong.status).toBe(401);
    expect(wrong.body).toContain('not valid');
    const foreign = await post(`token=${await server.createToken('team', 'invoker')}&next=%2F`);
    expect(foreign.status).toBe(403);
    expect((await post(`token=${token}`, { origin: 'http://evil.localhost' })).status).toBe(403);
    const ok = await post(`token=${token}&next=%2F%2Fevil.example%2F`);
    expect(ok.status).toBe(303);
    // Only a path on this host: not another origin.
    expect(ok.headers.location).toBe('/');
    const cookie = (ok.headers['set-cookie'] as string[])[0]!;
    expect(cookie).toMatch(/^molt_session=[^;]+; Path=\/; Max-Age=43200; HttpOnly; SameSite=Lax$/);
    const session = cookie.split(';')[0]!;

    const read = await hostRequest(server.url, 'blog.localhost', '/seen', { headers: { cookie: `theme=dark; ${session}` } });
    expect(read.status).toBe(200);
    expect(JSON.parse(read.body).cookie).toBe('theme=dark');
    // Made for blog.localhost: another app's host, the same app in another namespace, or the path route refuse it.
    for (const [host, path] of [['blog.team.localhost', '/seen'], ['127.0.0.1', '/api/routes/v1/default/blog/seen']] as const) {
      expect((await hostRequest(server.url, host, path, { headers: { cookie: session } })).status).toBe(401);
    }
    const forged = session.replace(/.$/, (c) => (c === 'A' ? 'B' : 'A'));
    expect((await hostRequest(server.url, 'blog.localhost', '/seen', { headers: { cookie: forged } })).status).toBe(401);

    const id = (await server.api('GET', '/api/v1/tokens?namespace=default')).body.tokens.find((t: { name: string; role: string }) => t.role === 'invoker').id;
    expect((await server.molt(['token', 'revoke', id])).code).toBe(0);
    const after = await hostRequest(server.url, 'blog.localhost', '/seen', { headers: { cookie: session } });
    expect(after.status).toBe(401);
    expect(JSON.parse(after.body).error.message).toContain('sign in again');
  });

  it('routes a domain an app claims, refuses it to a second app with 409, and refuses one under the server domain', async () => {
    const claim = (name: string, domains: string[]) => compatApp(name, { 'index.ts': `export default { fetch: () => new Response('${name} here') };` }, { config: { domains } });
    const first = await server.molt(['app', 'create'], { cwd: claim('shop', ['shop.example.test']) });
    expect(first.code, first.stderr).toBe(0);
    const served = await hostRequest(server.url, 'shop.example.test', '/', { headers: { authorization: bearer } });
    expect(served.body).toBe('shop here');
    const second = await server.molt(['app', 'create', '-n', 'team'], { cwd: claim('store', ['shop.example.test']) });
    expect(second.code).not.toBe(0);
    expect(second.stderr).toContain('MOLT_ERR_DOMAIN_TAKEN');
    expect(second.stderr).toContain('domain shop.example.test is already claimed by an app of another namespace');
    expect(JSON.parse((await server.molt(['app', 'list', '-n', 'team', '--json'])).stdout).map((a: { name: string }) => a.name)).not.toContain('store');
    const under = await server.molt(['app', 'create'], { cwd: claim('sneaky', ['blog.localhost']) });
    expect(under.code).not.toBe(0);
    expect(under.stderr).toContain("blog.localhost is under the server's domain localhost");
    // Deleting the app frees its domain for another.
    expect((await server.molt(['app', 'delete', '--app', 'shop'])).code).toBe(0);
    expect((await server.molt(['app', 'create', '-n', 'team'], { cwd: claim('store', ['shop.example.test']) })).code).toBe(0);
    expect((await hostRequest(server.url, 'shop.example.test', '/', { headers: { authorization: bearer } })).body).toBe('store here');
  });
});
