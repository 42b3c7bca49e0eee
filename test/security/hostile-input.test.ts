import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ServerProcess, simpleApp, tempDir, writeApp } from '../helpers.js';
import { countFiles, tarOf, treeWith } from './archives.js';
import { record } from './report.js';

describe('hostile input is refused with a clear error and changes nothing', () => {
  const server = new ServerProcess(tempDir(), ['--max-upload-bytes', String(1024 * 1024)]);
  const blobsDir = () => join(server.dataDir, 'blobs', 'sha256');
  const upload = async (body: Buffer, token = server.adminToken) => {
    const res = await fetch(`${server.url}/api/v1/namespaces/default/releases`, {
      method: 'POST',
      headers: { authorization: `Bearer ${token}`, 'content-type': 'application/x-tar' },
      body: new Uint8Array(body),
    });
    return { status: res.status, body: (await res.json()) as { error: { code: string; message: string } } };
  };
  let before: number;

  beforeAll(async () => {
    await server.start();
    const dir = simpleApp(join(tempDir(), 'app'), { name: 'victim' });
    expect((await server.molt(['app', 'create'], { cwd: dir })).code).toBe(0);
    before = countFiles(blobsDir());
  });
  afterAll(() => server.stop());

  const cases: [string, () => Buffer, RegExp][] = [
    ['a ../ entry', () => tarOf([treeWith([]), { path: '../evil.js', body: 'x' }]), /"\.\.\/evil\.js" contains "\.\."/],
    ['an absolute path', () => tarOf([treeWith([]), { path: '/etc/cron.d/evil', body: 'x' }]), /"\/etc\/cron\.d\/evil" is absolute/],
    ['a symlink out of the root', () => tarOf([treeWith([]), { path: 'link', type: 'SymbolicLink', linkpath: '/etc/passwd' }]), /is a link to "\/etc\/passwd"/],
    ['a hard link', () => tarOf([treeWith([]), { path: 'hard', type: 'Link', linkpath: '../../x' }]), /is a link/],
    ['a character device', () => tarOf([treeWith([]), { path: 'dev', type: 'CharacterDevice' }]), /of type CharacterDevice/],
    ['a FIFO', () => tarOf([treeWith([]), { path: 'fifo', type: 'FIFO' }]), /of type FIFO/],
    ['a tree entry with ..', () => tarOf([treeWith([{ path: 'a/../../x', type: 'file', hash: 'a'.repeat(64), size: 1 }])]), /contains "\.\."/],
    ['a tree link out of the root', () => tarOf([treeWith([{ path: 'lib/l', type: 'symlink', target: '../../etc/passwd' }])]), /points outside the tree/],
    ['a file the tree names but nobody sent', () => tarOf([treeWith([{ path: 'x.js', type: 'file', hash: 'b'.repeat(64), size: 3 }])]), /was not in the upload/],
    ['garbage instead of a tar', () => Buffer.from('this is not a tar archive at all'.repeat(40)), /not a valid tar|no MOLT-TREE/],
  ];
  for (const [what, body, message] of cases) {
    it(`refuses an upload with ${what}`, async () => {
      const res = await upload(body());
      expect(res.status).toBe(400);
      expect(res.body.error.message).toMatch(message);
      expect(countFiles(blobsDir())).toBe(before);
      expect((await server.api('GET', '/api/v1/namespaces/default/releases')).body.releases).toHaveLength(1);
      record({ boundary: 'uploads and trees', attack: `release upload with ${what}`, expected: '400 naming the entry; nothing stored', observed: `${res.status} ${res.body.error.code}; blobs unchanged`, refused: true });
    });
  }

  it('refuses an upload over the size limit with 413', async () => {
    const big = tarOf([treeWith([]), { path: 'big.bin', body: 'x'.repeat(2 * 1024 * 1024) }]);
    const res = await upload(big);
    expect(res.status).toBe(413);
    expect(res.body.error).toMatchObject({ code: 'MOLT_ERR_UPLOAD_TOO_LARGE', message: expect.stringContaining('1048576 bytes') });
    expect(countFiles(blobsDir())).toBe(before);
    record({ boundary: 'uploads and trees', attack: 'release upload over --max-upload-bytes', expected: '413; nothing stored', observed: `${res.status} ${res.body.error.code}; blobs unchanged`, refused: true });
  });

  it('refuses an upload from an invoker token (403) and without a token (401)', async () => {
    const invoker = await server.createToken('default', 'invoker');
    const res = await upload(tarOf([treeWith([])]), invoker);
    expect(res.status).toBe(403);
    expect(res.body.error.message).toContain('needs the deployer role');
    const anon = await fetch(`${server.url}/api/v1/namespaces/default/releases`, { method: 'POST' });
    expect(anon.status).toBe(401);
  });

  it('refuses a malformed config naming the field, the problem and the fix', async () => {
    const dir = writeApp(join(tempDir(), 'bad'), {
      'molt.config.json': JSON.stringify({ name: 'Bad Name', workers: 'two', readiness: { path: 'health' }, env: { PORT: 80 }, colour: 'red' }),
      'index.ts': 'export default { fetch: () => new Response("x") };',
    });
    const res = await server.molt(['app', 'create'], { cwd: dir });
    expect(res.code).toBe(1);
    expect(res.stderr).toContain('MOLT_ERR_INVALID_CONFIG');
    expect(res.stderr).toMatch(/`name` must be lower-case letters.*got "Bad Name".*set e\.g\. name: "my-app"/);
    expect(res.stderr).toMatch(/`workers` must be an integer of at least 0 \(got "two"\)/);
    expect(res.stderr).toMatch(/`readiness\.path` must start with "\/"/);
    expect(res.stderr).toMatch(/`env\.PORT` must be a string \(got 80\); quote it: "80"/);
    expect(res.stderr).toMatch(/`colour` is not a known field/);
    expect((await server.api('GET', '/api/v1/namespaces/default/apps')).body.apps).toHaveLength(1);
  });

  it('refuses a YAML manifest that does not parse, and a config the server is sent directly', async () => {
    const dir = writeApp(join(tempDir(), 'yaml'), { 'app.yaml': 'name: [unclosed', 'index.ts': '' });
    const res = await server.molt(['app', 'create', '--file', join(dir, 'app.yaml')], { cwd: dir });
    expect(res.code).toBe(1);
    expect(res.stderr).toMatch(/app\.yaml could not be parsed/);
    const direct = await server.api('POST', '/api/v1/namespaces/default/apps', { config: { name: 'x', workers: -1 }, releaseId: 'nope' });
    expect(direct.status).toBe(400);
    expect(direct.body.error.code).toBe('MOLT_ERR_INVALID_CONFIG');
  });

  it('refuses to update an unknown app and an app of another namespace', async () => {
    const dir = simpleApp(join(tempDir(), 'app'), { name: 'ghost' });
    const res = await server.molt(['app', 'update'], { cwd: dir });
    expect(res.code).toBe(1);
    expect(res.stderr).toContain('MOLT_ERR_APP_NOT_FOUND');
    expect((await server.molt(['namespace', 'create', 'team-b'])).code).toBe(0);
    const teamB = await server.createToken('team-b', 'deployer');
    const foreign = await server.molt(['app', 'update', '--app', 'victim', '-n', 'default'], { cwd: simpleApp(join(tempDir(), 'v'), { name: 'victim' }), token: teamB });
    expect(foreign.code).toBe(1);
    expect(foreign.stderr).toContain('MOLT_ERR_FORBIDDEN');
    expect(foreign.stderr).toContain('namespace team-b');
  });
});
