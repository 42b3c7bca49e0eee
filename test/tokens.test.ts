import { statSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ServerProcess, simpleApp, tempDir } from './helpers.js';

describe('tokens and namespaces', () => {
  const server = new ServerProcess(tempDir());
  beforeAll(() => server.start());
  afterAll(() => server.stop());

  it('prints the admin token once on first start, writes it 0600 and stores only its hash', async () => {
    expect(server.output).toContain(`admin token (shown once`);
    expect(server.output).toContain(server.adminToken);
    expect(statSync(join(server.dataDir, 'admin-token')).mode & 0o777).toBe(0o600);
    const { createHash } = await import('node:crypto');
    const stored = await server.storeText();
    expect(stored).toContain(createHash('sha256').update(server.adminToken).digest('hex'));
    expect(stored).not.toContain(server.adminToken);
  });

  it('molt login saves a profile that later commands use; MOLT_SERVER and MOLT_TOKEN override it', async () => {
    const env = { MOLT_SERVER: '', MOLT_TOKEN: '' };
    const login = await server.molt(['login', '--server', server.url, '--token', server.adminToken], { env });
    expect(login.code, login.stderr).toBe(0);
    expect(login.stdout).toContain('logged in');
    const list = await server.molt(['namespace', 'list'], { env });
    expect(list.stdout).toMatch(/NAME\s+WORKERS.*CREATED_AT\n[- ]+\ndefault/);
    const wrong = await server.molt(['namespace', 'list'], { env: { MOLT_TOKEN: 'molt_wrong' } });
    expect(wrong.code).toBe(1);
    expect(wrong.stderr).toContain('MOLT_ERR_UNAUTHENTICATED');
  });

  it('gives each role its rights and refuses the rest with 403 naming the missing right', async () => {
    expect((await server.molt(['namespace', 'create', 'shop'])).code).toBe(0);
    const admin = await server.createToken('shop', 'admin');
    const deployer = await server.createToken('shop', 'deployer');
    const invoker = await server.createToken('shop', 'invoker');
    const dir = simpleApp(join(tempDir(), 'app'), { name: 'cart' });

    const byInvoker = await server.molt(['app', 'create', '-n', 'shop'], { cwd: dir, token: invoker });
    expect(byInvoker.code).toBe(1);
    expect(byInvoker.stderr).toContain('this invoker token cannot deploy and change apps, releases and volumes in namespace shop: that needs the deployer role');

    const byDeployer = await server.molt(['app', 'create', '-n', 'shop'], { cwd: dir, token: deployer });
    expect(byDeployer.code, byDeployer.stderr).toBe(0);
    expect((await fetch(server.route('shop', 'cart', '/'), { headers: { authorization: `Bearer ${invoker}` } })).status).toBe(200);

    const tokenByDeployer = await server.molt(['token', 'create', '-n', 'shop', '--role', 'invoker'], { token: deployer });
    expect(tokenByDeployer.stderr).toContain('needs the admin role');
    const tokenByAdmin = await server.molt(['token', 'create', '-n', 'shop', '--role', 'invoker'], { token: admin });
    expect(tokenByAdmin.code).toBe(0);
    const nsByAdmin = await server.molt(['namespace', 'create', 'other'], { token: admin });
    expect(nsByAdmin.stderr).toContain("only the server's admin token");
    const foreign = await server.molt(['token', 'create', '-n', 'default', '--role', 'admin'], { token: admin });
    expect(foreign.stderr).toContain('belongs to namespace shop');
    const list = await server.molt(['token', 'list', '-n', 'shop', '--json'], { token: admin });
    expect(JSON.parse(list.stdout).map((t: { role: string }) => t.role)).toEqual(['admin', 'deployer', 'invoker', 'invoker']);
    expect(list.stdout).not.toContain('"hash"');
  });

  it('keeps apps private by default; public: true opens the routes', async () => {
    const dir = simpleApp(join(tempDir(), 'app'), { name: 'open', config: { public: true } });
    expect((await server.molt(['app', 'create'], { cwd: dir })).code).toBe(0);
    expect((await fetch(server.route('default', 'open', '/'))).status).toBe(200);
    const priv = simpleApp(join(tempDir(), 'app'), { name: 'closed' });
    expect((await server.molt(['app', 'create'], { cwd: priv })).code).toBe(0);
    expect((await fetch(server.route('default', 'closed', '/'))).status).toBe(401);
  });
});
