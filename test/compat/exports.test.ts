import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ServerProcess, tempDir } from '../helpers.js';
import { compatApp } from './compat-apps.js';

// What an entry module may default-export: anything with a callable fetch, read and never awaited;
// anything else fails at once with the user's file and what was found, not a readiness timeout.
describe('entry exports', () => {
  const server = new ServerProcess(tempDir());
  beforeAll(() => server.start());
  afterAll(() => server.stop());

  const get = async (app: string, path: string) => {
    const res = await fetch(server.route('default', app, path), { headers: { authorization: `Bearer ${server.adminToken}` } });
    return { status: res.status, body: await res.text() };
  };

  it('serves a default export whose every property is a function, then included (a router Proxy)', async () => {
    const dir = compatApp('proxied', {
      'index.ts': `
        const routes: Record<string, () => Response> = { '/': () => new Response('proxied root') };
        const target = { fetch: (req: Request) => (routes[new URL(req.url).pathname] ?? (() => new Response('none', { status: 404 })))() };
        // As itty-router's routers are: any other property registers a route and returns the router.
        const router: any = new Proxy(target, { get: (t: any, prop) => t[prop] ?? ((path: string, handler: () => Response) => ((routes[path] = handler), router)) });
        router.get('/hello', () => new Response('hello from a proxy'));
        export default router;
      `,
    });
    const created = await server.molt(['app', 'create'], { cwd: dir });
    expect(created.code, created.stderr).toBe(0);
    expect(await get('proxied', '/hello')).toEqual({ status: 200, body: 'hello from a proxy' });
    // Its `upgrade` is one of those functions too, not an upgrade handler: a WebSocket is refused.
    const ws = await fetch(server.route('default', 'proxied', '/'), { headers: { authorization: `Bearer ${server.adminToken}`, connection: 'upgrade', upgrade: 'websocket' } }).catch((e) => e);
    expect(ws instanceof Error ? 'failed' : ws.status).not.toBe(200);
  });

  it.each([
    ['named', 'export const fetch = (req: Request) => new Response("x");', 'index.ts exports fetch by name but has no default export: write `export default { fetch }`'],
    ['listener', 'export default function listener(req: unknown, res: unknown) {}', 'index.ts default-exports a function listener of (req, res), a Node request listener, not an object with fetch'],
    ['keys', 'export default { port: 3000, handler: () => 1 };', 'index.ts default-exports an object with no fetch method (its keys: port, handler)'],
    ['not-callable', 'export default { fetch: "nope" };', 'index.ts default-exports an object whose fetch is string, not a function'],
  ])('refuses an entry that %s, at once, naming index.ts and what it found', async (name, code, message) => {
    const started = Date.now();
    const created = await server.molt(['app', 'create'], { cwd: compatApp(name, { 'index.ts': code }) });
    expect(created.code).not.toBe(0);
    expect(created.stderr).toContain(message);
    expect(created.stderr).not.toContain('index.js');
    // Not the 10 s readiness timeout of the config.
    expect(Date.now() - started).toBeLessThan(8000);
  });

  it('tells an app that starts its own server with @hono/node-server to export the app instead', async () => {
    const dir = compatApp(
      'node-server',
      {
        'index.ts': `
          import { Hono } from 'hono';
          import { serve } from '@hono/node-server';
          const app = new Hono();
          app.get('/', (c) => c.text('Hello Node.js!'));
          serve({ fetch: app.fetch, port: 0 });
        `,
      },
      { dependencies: ['hono', '@hono/node-server'] },
    );
    const created = await server.molt(['app', 'create'], { cwd: dir });
    expect(created.code).not.toBe(0);
    expect(created.stderr).toContain('index.ts has no default export: it starts its own server with serve() from @hono/node-server, and molt runs the server itself; drop the serve() call and `export default app`');
  });

  it('names the source file and line of an error thrown while the entry loads', async () => {
    const dir = compatApp('throws', { 'index.ts': `const n: number = 1;\nif (n) throw new Error('no database configured');\nexport default { fetch: () => new Response('x') };\n` });
    const created = await server.molt(['app', 'create'], { cwd: dir });
    expect(created.code).not.toBe(0);
    expect(created.stderr).toContain('index.ts: no database configured');
    const logs = await server.molt(['app', 'logs', '--app', 'throws']);
    expect(logs.stdout).toMatch(/\/index\.ts:2:\d+\)/);
    expect(logs.stdout).not.toContain(".molt/build");
  });
});
