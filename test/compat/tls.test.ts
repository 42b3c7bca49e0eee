import { execFileSync } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { request } from 'node:https';
import { join } from 'node:path';
import type { TLSSocket } from 'node:tls';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { molt, ServerProcess, tempDir } from '../helpers.js';
import { compatApp } from './compat-apps.js';

/** A self-signed certificate for `names` (openssl: `apt-get install -y openssl`). */
function certificate(dir: string, name: string, names: string[]): { cert: string; key: string } {
  const cert = join(dir, `${name}.crt`);
  const key = join(dir, `${name}.key`);
  const san = names.map((n) => (/^\d/.test(n) ? `IP:${n}` : `DNS:${n}`)).join(',');
  try {
    execFileSync('openssl', ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-days', '2', '-subj', `/CN=${names[0]}`, '-addext', `subjectAltName=${san}`, '-keyout', key, '-out', cert], { stdio: 'pipe' });
  } catch (err) {
    throw new Error(`openssl could not make a test certificate (install it: apt-get install -y openssl): ${(err as Error).message}`);
  }
  return { cert, key };
}

interface TlsAnswer {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  body: string;
  peer: string;
}

function get(port: number, host: string, path: string, ca: Buffer, headers: Record<string, string> = {}): Promise<TlsAnswer> {
  return new Promise((resolve, reject) => {
    const req = request({ host: '127.0.0.1', port, path, servername: host, ca, headers: { host: `${host}:${port}`, ...headers } }, (res) => {
      const peer = String((res.socket as TLSSocket).getPeerCertificate().subject?.CN ?? '');
      let body = '';
      res.on('data', (c) => (body += c));
      res.on('end', () => resolve({ status: res.statusCode!, headers: res.headers, body, peer }));
    });
    req.on('error', reject);
    req.end();
  });
}

describe('HTTPS on the port, with certificates by SNI', () => {
  const dir = tempDir();
  // Names listed one by one: TLS clients take no wildcard of a one-label domain such as *.localhost.
  const main = certificate(dir, 'main', ['localhost', 'site.localhost', '127.0.0.1']);
  const shop = certificate(dir, 'shop', ['shop.example.test']);
  writeFileSync(join(dir, 'ca.pem'), execFileSync('cat', [main.cert, shop.cert]));
  const ca = execFileSync('cat', [main.cert, shop.cert]);
  const server = new ServerProcess(tempDir(), ['--domain', 'localhost', '--tls-cert', main.cert, '--tls-key', main.key, '--tls-sni', `shop.example.test=${shop.cert},${shop.key}`]);
  const cli = { NODE_EXTRA_CA_CERTS: join(dir, 'ca.pem') };
  let port = 0;
  beforeAll(async () => {
    await server.start();
    port = Number(new URL(server.url).port);
    const seen = `export default { fetch: (req: Request) => Response.json({ url: req.url, proto: req.headers.get('x-forwarded-proto') }) };`;
    for (const [name, config] of [['site', {}], ['shop', { domains: ['shop.example.test'] }]] as const) {
      const created = await server.molt(['app', 'create'], { cwd: compatApp(name, { 'index.ts': seen }, { config }), env: cli });
      expect(created.code, created.stderr).toBe(0);
    }
  });
  afterAll(() => server.stop());

  it('serves the API, path routes and app hosts over HTTPS, telling the app it came by https', async () => {
    expect(server.url).toMatch(/^https:\/\/127\.0\.0\.1:\d+$/);
    const health = await get(port, 'localhost', '/api/v1/health', ca);
    expect(health).toMatchObject({ status: 200, peer: 'localhost' });
    const auth = { authorization: `Bearer ${server.adminToken}` };
    const byHost = await get(port, 'site.localhost', '/x', ca, auth);
    expect(byHost.status).toBe(200);
    expect(JSON.parse(byHost.body)).toEqual({ url: `http://site.localhost:${port}/x`, proto: 'https' });
    const byPath = await get(port, 'localhost', '/api/routes/v1/default/site/y', ca, auth);
    expect(JSON.parse(byPath.body).proto).toBe('https');
  });

  it("picks a hostname's own certificate by SNI, and the default one for the rest", async () => {
    const auth = { authorization: `Bearer ${server.adminToken}` };
    const shopRes = await get(port, 'shop.example.test', '/', ca, auth);
    expect(shopRes.peer).toBe('shop.example.test');
    expect(shopRes.status).toBe(200);
    expect((await get(port, 'site.localhost', '/', ca, auth)).peer).toBe('localhost');
  });

  it('makes browser sessions __Host- and Secure under TLS', async () => {
    // Through the CLI, which trusts the test CA (NODE_EXTRA_CA_CERTS); the test's fetch does not.
    const created = await server.molt(['token', 'create', '-n', 'default', '--role', 'invoker', '--json'], { env: cli });
    const token = JSON.parse(created.stdout).token as string;
    const login = await new Promise<TlsAnswer>((resolve, reject) => {
      const body = `token=${token}`;
      const req = request({ host: '127.0.0.1', port, path: '/.molt/login', method: 'POST', servername: 'site.localhost', ca, headers: { host: `site.localhost:${port}`, 'content-type': 'application/x-www-form-urlencoded', 'content-length': body.length } }, (res) => {
        res.resume();
        res.on('end', () => resolve({ status: res.statusCode!, headers: res.headers, body: '', peer: '' }));
      });
      req.on('error', reject);
      req.end(body);
    });
    expect(login.status).toBe(303);
    expect((login.headers['set-cookie'] as string[])[0]).toMatch(/^__Host-molt_session=[^;]+; Path=\/; Max-Age=\d+; HttpOnly; SameSite=Lax; Secure$/);
  });

  it('refuses to start with a key that is not the certificate\'s, naming both files', async () => {
    const r = await molt(['server', '--data-dir', tempDir(), '--port', '0', '--tls-cert', main.cert, '--tls-key', shop.key]);
    expect(r.code).not.toBe(0);
    expect(r.stderr).toContain(`the certificate ${main.cert} and key ${shop.key} do not make a TLS context`);
    const half = await molt(['server', '--data-dir', tempDir(), '--port', '0', '--tls-cert', main.cert]);
    expect(half.stderr).toContain('HTTPS needs both --tls-cert and --tls-key');
  });
});
