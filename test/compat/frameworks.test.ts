import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ServerProcess, tempDir } from '../helpers.js';
import { compatApp } from './compat-apps.js';
import { hostRequest } from './http.js';

// Apps in the styles of the frameworks' own examples, each served unchanged by path and by host.

// honojs/examples jsx-ssr: a layout component and a page rendered on the server.
const JSX = {
  'tsconfig.json': JSON.stringify({ compilerOptions: { jsx: 'react-jsx', jsxImportSource: 'hono/jsx' } }),
  'index.tsx': `
import { Hono } from 'hono';
import type { FC } from 'hono/jsx';

const Layout: FC = (props) => (
  <html>
    <body>{props.children}</body>
  </html>
);

const Top: FC<{ messages: string[] }> = (props) => (
  <Layout>
    <h1>Hello Hono!</h1>
    <ul>
      {props.messages.map((message) => (
        <li>{message}!!</li>
      ))}
    </ul>
  </Layout>
);

const app = new Hono();
app.get('/', (c) => c.html(<Top messages={['Good Morning', 'Good Evening', 'Good Night']} />));
export default app;
`,
};

// Hono's streaming helper, as its docs write an SSE endpoint.
const SSE = {
  'index.ts': `
import { Hono } from 'hono';
import { streamSSE } from 'hono/streaming';

const app = new Hono();
app.get('/', (c) => c.text('sse home'));
app.get('/sse', (c) =>
  streamSSE(c, async (stream) => {
    for (let id = 0; id < 3; id++) {
      await stream.writeSSE({ data: 'tick ' + id, event: 'time-update', id: String(id) });
      await stream.sleep(50);
    }
  }),
);
export default app;
`,
};

// itty-router's AutoRouter, as its README starts.
const ITTY = {
  'index.ts': `
import { AutoRouter } from 'itty-router';

const router = AutoRouter();
router
  .get('/', () => 'itty home')
  .get('/hello/:name', ({ name }) => \`Hello, \${name}!\`)
  .get('/json', () => ({ framework: 'itty' }))
  .post('/echo', async (request) => ({ got: await request.json() }));
export default router;
`,
};

// No framework: the web's Request and Response.
const PLAIN = {
  'index.ts': `
export default {
  async fetch(request: Request): Promise<Response> {
    const url = new URL(request.url);
    if (url.pathname === '/') return new Response('plain home');
    if (url.pathname === '/upper' && request.method === 'POST') return new Response((await request.text()).toUpperCase());
    if (url.pathname === '/where') return Response.json({ path: url.pathname, search: url.search });
    return new Response('not found', { status: 404 });
  },
};
`,
};

describe('apps in the styles of public frameworks, by path and by host', () => {
  const server = new ServerProcess(tempDir(), ['--domain', 'localhost']);
  let auth: Record<string, string> = {};
  beforeAll(async () => {
    await server.start();
    auth = { authorization: `Bearer ${server.adminToken}` };
    const apps: [string, Record<string, string>, string[], string][] = [
      ['jsx', JSX, ['hono'], 'index.tsx'],
      ['sse', SSE, ['hono'], 'index.ts'],
      ['itty', ITTY, ['itty-router'], 'index.ts'],
      ['plain', PLAIN, [], 'index.ts'],
    ];
    for (const [name, files, dependencies, entry] of apps) {
      const created = await server.molt(['app', 'create'], { cwd: compatApp(name, files, { dependencies, config: { entry } }) });
      expect(created.code, `${name}: ${created.stderr}`).toBe(0);
    }
  });
  afterAll(() => server.stop());

  /** The same request by the app's path route and by its host; both answers. */
  const both = async (app: string, path: string, opts: { method?: string; body?: string; headers?: Record<string, string> } = {}) => {
    const headers = { ...auth, ...opts.headers };
    const byPath = await hostRequest(server.url, '127.0.0.1', `/api/routes/v1/default/${app}${path}`, { ...opts, headers });
    const byHost = await hostRequest(server.url, `${app}.localhost`, path, { ...opts, headers });
    return [byPath, byHost];
  };

  it('renders Hono JSX on the server (the jsx-ssr example)', async () => {
    for (const res of await both('jsx', '/')) {
      expect(res.status).toBe(200);
      expect(res.headers['content-type']).toMatch(/^text\/html/);
      expect(res.body).toBe('<html><body><h1>Hello Hono!</h1><ul><li>Good Morning!!</li><li>Good Evening!!</li><li>Good Night!!</li></ul></body></html>');
    }
  });

  it("streams Hono's streamSSE events, each with its event name and id", async () => {
    for (const res of await both('sse', '/sse')) {
      expect(res.headers['content-type']).toMatch(/^text\/event-stream/);
      const events = res.body.trim().split('\n\n');
      expect(events).toEqual([0, 1, 2].map((id) => `event: time-update\ndata: tick ${id}\nid: ${id}`));
    }
  });

  it("serves itty-router's AutoRouter: text, params, JSON, bodies and its 404", async () => {
    const [home, hello, json] = [await both('itty', '/'), await both('itty', '/hello/ann'), await both('itty', '/json')];
    // AutoRouter's default format is JSON, strings included.
    for (const res of home) expect([res.headers['content-type'], JSON.parse(res.body)]).toEqual(['application/json; charset=utf-8', 'itty home']);
    for (const res of hello) expect(JSON.parse(res.body)).toBe('Hello, ann!');
    for (const res of json) expect(JSON.parse(res.body)).toEqual({ framework: 'itty' });
    for (const res of await both('itty', '/echo', { method: 'POST', body: '{"n":1}', headers: { 'content-type': 'application/json' } })) expect(JSON.parse(res.body)).toEqual({ got: { n: 1 } });
    for (const res of await both('itty', '/missing')) expect(res.status).toBe(404);
  });

  it('serves a plain Request/Response app, with the URL it would see on its own', async () => {
    for (const res of await both('plain', '/')) expect(res.body).toBe('plain home');
    for (const res of await both('plain', '/upper', { method: 'POST', body: 'shout' })) expect(res.body).toBe('SHOUT');
    for (const res of await both('plain', '/where?q=1')) expect(JSON.parse(res.body)).toEqual({ path: '/where', search: '?q=1' });
  });
});
