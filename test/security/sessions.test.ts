import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ServerProcess, tempDir } from '../helpers.js';
import { compatApp } from '../compat/compat-apps.js';
import { hostRequest } from '../compat/http.js';
import { record } from './report.js';

const boundary = 'app hosts and browser sessions';

// An app that tries to reach beyond its own host: cookies for every host under the server's domain,
// a look at what molt sends it, and a session of its own host replayed at another app's.
const EVIL = `export default {
  fetch(request: Request) {
    const url = new URL(request.url);
    if (url.pathname === '/plant') {
      const h = new Headers();
      h.append('set-cookie', 'tracker=1; Domain=localhost; Path=/');
      h.append('set-cookie', 'molt_session=planted.1.x; Domain=.localhost; Path=/; HttpOnly');
      return new Response('planted', { headers: h });
    }
    return Response.json(Object.fromEntries(request.headers));
  },
};`;

describe('app hosts and sessions against a hostile app', () => {
  const server = new ServerProcess(tempDir(), ['--domain', 'localhost']);
  let session = '';
  beforeAll(async () => {
    await server.start();
    for (const name of ['evil', 'bank']) {
      const created = await server.molt(['app', 'create'], { cwd: compatApp(name, { 'index.ts': EVIL }) });
      expect(created.code, created.stderr).toBe(0);
    }
    const token = await server.createToken('default', 'invoker');
    const login = await hostRequest(server.url, 'evil.localhost', '/.molt/login', { method: 'POST', headers: { 'content-type': 'application/x-www-form-urlencoded' }, body: `token=${token}` });
    session = (login.headers['set-cookie'] as string[])[0]!.split(';')[0]!;
  });
  afterAll(() => server.stop());

  it("keeps an app's cookies off its neighbours' hosts: Domain is dropped", async () => {
    const res = await hostRequest(server.url, 'evil.localhost', '/plant', { headers: { cookie: session } });
    const cookies = res.headers['set-cookie'] as string[];
    record({ boundary, attack: 'an app sets cookies with Domain=localhost (every app host under the domain)', expected: 'the cookies stay on its own host', observed: cookies.join(' | '), refused: cookies.every((c) => !/domain/i.test(c)) });
    expect(cookies).toEqual(['tracker=1; Path=/', 'molt_session=planted.1.x; Path=/; HttpOnly']);
  });

  it('never shows an app the session cookie or the molt token, however they came', async () => {
    const seen = JSON.parse((await hostRequest(server.url, 'evil.localhost', '/headers', { headers: { cookie: `a=1; ${session}`, 'proxy-authorization': `Bearer ${server.adminToken}` } })).body);
    const leaked = JSON.stringify(seen);
    record({ boundary, attack: 'an app reads the headers of a signed-in request (session cookie, token in Proxy-Authorization)', expected: 'neither reaches it', observed: `cookie: ${seen.cookie}; proxy-authorization: ${seen['proxy-authorization'] ?? 'absent'}`, refused: !leaked.includes('molt_') });
    expect(seen.cookie).toBe('a=1');
    expect(leaked).not.toContain('molt_');
  });

  it("refuses a session of one app's host at another's, a planted one, and a forged one", async () => {
    const replay = await hostRequest(server.url, 'bank.localhost', '/headers', { headers: { cookie: session } });
    record({ boundary, attack: "a session cookie made for evil.localhost replayed at bank.localhost", expected: '401', observed: String(replay.status), refused: replay.status === 401 });
    expect(replay.status).toBe(401);
    const planted = await hostRequest(server.url, 'bank.localhost', '/headers', { headers: { cookie: 'molt_session=planted.1.x' } });
    expect(planted.status).toBe(401);
    const [id] = session.split('=')[1]!.split('.');
    const forged = `molt_session=${id}.${Math.floor(Date.now() / 1000) + 3600}.${'A'.repeat(43)}`;
    const tried = await hostRequest(server.url, 'evil.localhost', '/headers', { headers: { cookie: forged } });
    record({ boundary, attack: 'a session cookie with a real token id and a made-up signature', expected: '401', observed: String(tried.status), refused: tried.status === 401 });
    expect(tried.status).toBe(401);
  });
});
