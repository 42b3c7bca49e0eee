import { createServer } from 'node:http';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { molt, ServerProcess, simpleApp, tempDir } from './helpers.js';

/** What a new user meets in the first hour: messages that say what is wrong and what to do, and no slow failures. */
describe('the first hour', () => {
  const server = new ServerProcess(tempDir());
  beforeAll(() => server.start());
  afterAll(() => server.stop());
  const call = (app: string, path = '/') => fetch(server.route('default', app, path), { headers: { authorization: `Bearer ${server.adminToken}` } });

  it('a failed first deploy says no revision serves, app get says so, and its route answers 503 at once with the reason', async () => {
    const dir = simpleApp(join(tempDir(), 'never'), { name: 'never', config: { readiness: { path: '/unready', timeoutMs: 1500 } } });
    const created = await server.molt(['app', 'create'], { cwd: dir });
    expect(created.code).toBe(1);
    expect(created.stderr).toContain('never has no revision that serves yet; fix the error above, then `molt app update`');
    expect(created.stderr).not.toContain('previous revision keeps serving');
    expect(created.stderr).toContain('last answer: HTTP 503: "not ready"');
    const got = await server.molt(['app', 'get', '--app', 'never']);
    expect(got.stdout).toMatch(/revision:\s+none serves yet/);
    expect(got.stdout).toMatch(/status:\s+failed: its first deploy did not succeed/);
    const t0 = Date.now();
    const res = await call('never');
    expect(res.status).toBe(503);
    expect(Date.now() - t0).toBeLessThan(1000);
    const body = await res.json();
    expect(body.error.code).toBe('MOLT_ERR_NO_WORKER');
    expect(body.error.message).toMatch(/^no worker of default\/never is running or starting \(revision 1 failed: .*readiness GET \/unready.*last answer: HTTP 503/);
  });

  it('refuses before building what needs no build: an immutable app, a token without the right', async () => {
    const dir = simpleApp(join(tempDir(), 'frozen'), { name: 'frozen' });
    expect((await server.molt(['app', 'create', '--immutable'], { cwd: dir })).code).toBe(0);
    const frozen = await server.molt(['app', 'update'], { cwd: dir });
    expect(frozen.code).toBe(1);
    expect(frozen.stderr).toContain('MOLT_ERR_APP_IMMUTABLE');
    expect(frozen.stderr).not.toContain('built release');
    const invoker = await server.createToken('default', 'invoker');
    const refused = await server.molt(['app', 'update'], { cwd: dir, token: invoker });
    expect(refused.code).toBe(1);
    expect(refused.stderr).toContain('this invoker token cannot deploy and change apps in namespace default');
    expect(refused.stderr).not.toContain('built release');
    // Reading needs the deployer role too, and the message names the read right.
    const list = await server.molt(['worker', 'list', '--app', 'frozen'], { token: invoker });
    expect(list.stderr).toContain('this invoker token cannot read apps, workers, revisions, events, logs and releases in namespace default');
  });

  it('names a server address that is not a URL, takes one with /api/v1, and says so when the server is not molt', async () => {
    const port = new URL(server.url).port;
    const bare = await molt(['app', 'list'], { env: { MOLT_SERVER: `127.0.0.1:${port}`, MOLT_TOKEN: server.adminToken, MOLT_CONFIG_DIR: tempDir() } });
    expect(bare.code).toBe(1);
    expect(bare.stderr).toContain(`the server address "127.0.0.1:${port}" is not an http(s) URL; did you mean http://127.0.0.1:${port}?`);
    const withPath = await molt(['app', 'list'], { env: { MOLT_SERVER: `${server.url}/api/v1/`, MOLT_TOKEN: server.adminToken, MOLT_CONFIG_DIR: tempDir() } });
    expect(withPath.code, withPath.stderr).toBe(0);
    const html = createServer((_req, res) => res.writeHead(404, { 'content-type': 'text/html' }).end('<!doctype html><html><body><h1>Not Found</h1></body></html>'));
    await new Promise<void>((r) => html.listen(0, '127.0.0.1', () => r()));
    try {
      const other = await molt(['app', 'list'], { env: { MOLT_SERVER: `http://127.0.0.1:${(html.address() as { port: number }).port}`, MOLT_TOKEN: 'x', MOLT_CONFIG_DIR: tempDir() } });
      expect(other.code).toBe(1);
      expect(other.stderr).toContain('answered HTTP 404 with an HTML page: it does not look like a molt server');
      expect(other.stderr).not.toContain('<html>');
    } finally {
      html.close();
    }
  });

  it('passes a path with an empty segment to the app instead of failing on it', async () => {
    const dir = simpleApp(join(tempDir(), 'slashes'), { name: 'slashes', body: 'slashes ok' });
    expect((await server.molt(['app', 'create'], { cwd: dir })).code).toBe(0);
    const res = await call('slashes', '//');
    expect(res.status).toBe(200);
    expect(await res.text()).toBe('slashes ok');
  });

  it('rolls back an app named by a manifest file, as update takes one', async () => {
    const dir = simpleApp(join(tempDir(), 'by-file'), { name: 'by-file', body: 'one' });
    writeFileSync(join(dir, 'deploy.json'), JSON.stringify({ name: 'by-file', entry: 'index.ts', readiness: { path: '/healthz' } }));
    expect((await server.molt(['app', 'create', '--file', 'deploy.json'], { cwd: dir })).code).toBe(0);
    simpleApp(dir, { name: 'by-file', body: 'two' });
    expect((await server.molt(['app', 'update', '--file', 'deploy.json'], { cwd: dir })).code).toBe(0);
    const back = await server.molt(['app', 'rollback', '--file', 'deploy.json'], { cwd: dir });
    expect(back.code, back.stderr).toBe(0);
    expect(await (await call('by-file')).text()).toBe('one');
  });

  it('prints each event once: JSON lines when stderr is not a terminal', () => {
    const deployed = server.output.split('\n').filter((l) => l.includes('revision 1 serves all traffic') && l.includes('"app":"slashes"'));
    expect(deployed).toHaveLength(1);
    expect(JSON.parse(deployed[0]!)).toMatchObject({ app: 'slashes', event: 'rollout.succeeded' });
  });

  it('prints events as lines for a person with --log-format text, each once and no JSON', async () => {
    const text = new ServerProcess(tempDir(), ['--log-format', 'text']);
    await text.start();
    try {
      const dir = simpleApp(join(tempDir(), 'plain'), { name: 'plain' });
      expect((await text.molt(['app', 'create'], { cwd: dir })).code).toBe(0);
      const lines = text.output.split('\n').filter((l) => l.includes('revision 1 serves all traffic'));
      expect(lines).toHaveLength(1);
      expect(lines[0]).toMatch(/^\[\d\d:\d\d:\d\d\] default\/plain: revision 1 serves all traffic$/);
      expect(text.output).not.toMatch(/^\{"level"/m);
    } finally {
      await text.stop();
    }
    const bad = await molt(['server', '--log-format', 'xml', '--data-dir', tempDir(), '--port', '0']);
    expect(bad.code).toBe(1);
    expect(bad.stderr).toContain('--log-format must be text or json (got "xml")');
  });
});
