import { execFileSync, spawn } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { mkdirSync, readdirSync, readFileSync, symlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { copyExample, MOLT_BIN, ServerProcess, tempDir, waitFor, writeApp, freePort } from './helpers.js';
import { runLoad } from './load.js';

/** A directory of files, each `content` repeated to `size` bytes. */
function filesDir(files: Record<string, string | number>): string {
  const dir = tempDir('molt-vol-');
  for (const [name, content] of Object.entries(files)) {
    mkdirSync(join(dir, name, '..'), { recursive: true });
    writeFileSync(join(dir, name), typeof content === 'number' ? Buffer.alloc(content, name) : content);
  }
  return dir;
}

/** An app that answers `/file?name=` with that file of its volume `data`. */
function volumeApp(name: string, volumes: unknown[]): string {
  return writeApp(join(tempDir(), name), {
    'molt.config.json': JSON.stringify({ name, entry: 'index.ts', volumes, readiness: { path: '/healthz' }, rollout: { drainTimeoutMs: 2000, stopGraceMs: 2000 } }),
    'index.ts': `
import { chmodSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { runtime } from '@molt/app';
export default {
  fetch(req: Request) {
    const url = new URL(req.url);
    if (url.pathname === '/healthz') return new Response('ok');
    if (url.pathname === '/env') return Response.json({ env: process.env.MOLT_VOLUME_DATA, api: runtime.volume('data') });
    if (url.pathname === '/write') {
      const tries = [() => writeFileSync(join(process.env.MOLT_VOLUME_DATA!, 'a.txt'), 'overwritten'), () => writeFileSync(join(process.env.MOLT_VOLUME_DATA!, 'new.txt'), 'x'), () => chmodSync(join(process.env.MOLT_VOLUME_DATA!, 'a.txt'), 0o666)];
      return Response.json(tries.map((t) => { try { t(); return 'written'; } catch (e) { return (e as NodeJS.ErrnoException).code; } }));
    }
    return new Response(readFileSync(join(process.env.MOLT_VOLUME_DATA!, url.searchParams.get('name') ?? 'a.txt'), 'utf8'));
  },
};
`,
  });
}

const blobCount = (dataDir: string) => readdirSync(join(dataDir, 'blobs', 'sha256')).reduce((n, d) => n + readdirSync(join(dataDir, 'blobs', 'sha256', d)).length, 0);

describe('volumes', () => {
  const server = new ServerProcess(tempDir(), ['--max-volume-bytes', String(8 * 1024 * 1024), '--max-upload-files', '50']);
  beforeAll(() => server.start());
  afterAll(() => server.stop());

  it('numbers revisions NNNNNN-xxx, makes none for a push that changes nothing, and sends only missing files', async () => {
    expect((await server.molt(['volume', 'create', 'models'])).code).toBe(0);
    const dir = filesDir({ 'a.bin': 200_000, 'b.bin': 200_000, 'sub/c.bin': 200_000 });
    const first = JSON.parse((await server.molt(['volume', 'push', 'models', dir, '--json'])).stdout);
    expect(first.changed).toBe(true);
    expect(first.revision.revision).toMatch(/^000001-[0-9a-f]{3}$/);
    expect(first.revision.revision.slice(7)).toBe(first.revision.treeHash.slice(0, 3));
    expect(first.sent).toEqual({ files: 3, bytes: 600_000 });

    const again = await server.molt(['volume', 'push', 'models', dir]);
    expect(again.stdout).toContain(`no changes: volume models stays at revision ${first.revision.revision}`);

    writeFileSync(join(dir, 'b.bin'), Buffer.alloc(200_000, 'changed'));
    const second = JSON.parse((await server.molt(['volume', 'push', 'models', dir, '--json'])).stdout);
    expect(second.revision.revision).toMatch(/^000002-[0-9a-f]{3}$/);
    // One file's worth went over the wire: the changed one.
    expect(second.sent).toEqual({ files: 1, bytes: 200_000 });
    expect(second.uploaded.bytes).toBe(200_000);

    const get = await server.molt(['volume', 'get', 'models']);
    expect(get.stdout).toMatch(new RegExp(`^<Volume: id: \\w+, name: models, revision: ${second.revision.revision}, files: 3, size: 600000 B>\\npath: .+\\n$`));
    const path = /path: (.+)/.exec(get.stdout)![1]!;
    expect(readFileSync(join(path, 'sub/c.bin')).length).toBe(200_000);

    const tree = JSON.parse((await server.molt(['volume', 'tree', 'models', '--revision', first.revision.revision, '--json'])).stdout);
    expect(tree.tree.entries.map((e: { path: string }) => e.path).sort()).toEqual(['a.bin', 'b.bin', 'sub/c.bin']);
    const list = JSON.parse((await server.molt(['volume', 'list', '--json'])).stdout);
    expect(list.find((v: { name: string }) => v.name === 'models').latest.revision).toBe(second.revision.revision);
  });

  it('keeps every byte of every file, pushed and pulled: a large one (over 4 MiB, streamed to disk) and many in one stream', async () => {
    expect((await server.molt(['volume', 'create', 'large'])).code).toBe(0);
    const dir = tempDir('molt-vol-');
    const files: Record<string, Buffer> = { 'weights.bin': randomBytes(6 * 1024 * 1024) };
    for (let i = 0; i < 8; i++) files[`shard-${i}.bin`] = randomBytes(100_000);
    for (const [name, bytes] of Object.entries(files)) writeFileSync(join(dir, name), bytes);
    const pushed = await server.molt(['volume', 'push', 'large', dir]);
    expect(pushed.code, pushed.stderr).toBe(0);
    const get = await server.molt(['volume', 'get', 'large']);
    expect(get.code, get.stderr).toBe(0);
    const copy = /path: (.+)/.exec(get.stdout)![1]!;
    const sha = (b: Buffer) => createHash('sha256').update(b).digest('hex');
    for (const [name, bytes] of Object.entries(files)) expect([name, sha(readFileSync(join(copy, name)))]).toEqual([name, sha(bytes)]);
  });

  it('pulls a revision into the local copy, and will not drop unpushed changes without --force', async () => {
    const path = /path: (.+)/.exec((await server.molt(['volume', 'get', 'models'])).stdout)![1]!;
    const revs = (await server.api('GET', '/api/v1/namespaces/default/volumes/models')).body.revisions;
    const pulled = await server.molt(['volume', 'pull', 'models', '--revision', revs[0].revision]);
    expect(pulled.code, pulled.stderr).toBe(0);
    expect(pulled.stdout).toContain('(1 file(s) downloaded)'); // a.bin and c.bin were there already
    expect(readFileSync(join(path, 'b.bin')).subarray(0, 5).toString()).toBe('b.bin');
    writeFileSync(join(path, 'new.txt'), 'local edit');
    const refused = await server.molt(['volume', 'pull', 'models']);
    expect(refused.code).toBe(1);
    expect(refused.stderr).toContain('has changes not pushed yet');
    // A push from a copy based on an old revision would overwrite someone else's: refused.
    const stale = await server.molt(['volume', 'push', 'models']);
    expect(stale.code).toBe(1);
    expect(stale.stderr).toContain('MOLT_ERR_CONFLICT');
    expect((await server.molt(['volume', 'pull', 'models', '--force'])).code).toBe(0);
  });

  it('refuses hostile trees and limits with a clear error, storing nothing', async () => {
    await server.molt(['volume', 'create', 'hostile']);
    const before = blobCount(server.dataDir);
    const outside = filesDir({ 'ok.txt': 'fine' });
    symlinkSync('/etc/passwd', join(outside, 'leak'));
    const link = await server.molt(['volume', 'push', 'hostile', outside]);
    expect(link.code).toBe(1);
    expect(link.stderr).toContain('outside');
    const fifo = filesDir({ 'ok.txt': 'fine' });
    execFileSync('mkfifo', [join(fifo, 'pipe')]);
    const fifoPush = await server.molt(['volume', 'push', 'hostile', fifo]);
    expect(fifoPush.stderr).toContain('device, FIFO or socket');
    const big = await server.molt(['volume', 'push', 'hostile', filesDir({ 'big.bin': 9 * 1024 * 1024 })]);
    expect(big.code).toBe(1);
    expect(big.stderr).toContain('over the limit');
    const many = await server.molt(['volume', 'push', 'hostile', filesDir(Object.fromEntries(Array.from({ length: 60 }, (_, i) => [`f${i}.txt`, `file ${i}`])))]);
    expect(many.code).toBe(1);
    expect(many.stderr).toContain('over the limit of 50');
    // A raw archive with a path out of the tree.
    const tarDir = tempDir();
    writeFileSync(join(tarDir, 'MOLT-TREE.json'), JSON.stringify({ entries: [{ path: '../escape', type: 'file', hash: 'a'.repeat(64), size: 1 }] }));
    const tar = execFileSync('tar', ['-c', '-C', tarDir, 'MOLT-TREE.json']);
    const raw = await fetch(`${server.url}/api/v1/namespaces/default/volumes/hostile/revisions`, { method: 'POST', headers: { authorization: `Bearer ${server.adminToken}`, 'content-type': 'application/x-tar' }, body: tar });
    expect(raw.status).toBe(400);
    expect((await raw.json()).error.code).toBe('MOLT_ERR_UNSAFE_ARCHIVE');
    expect(blobCount(server.dataDir)).toBe(before);
    expect((await server.api('GET', '/api/v1/namespaces/default/volumes/hostile')).body.revisions).toEqual([]);
    // An unused volume can be deleted.
    expect((await server.molt(['volume', 'delete', 'hostile'])).stdout).toContain('volume hostile deleted');
    expect((await server.molt(['volume', 'get', 'hostile'])).stderr).toContain('MOLT_ERR_VOLUME_NOT_FOUND');
  });

  it('mounts volumes read-only at MOLT_VOLUME_<NAME>; a new revision rolls useLatest apps and leaves pinned ones', async () => {
    await server.molt(['volume', 'create', 'data']);
    const v1 = JSON.parse((await server.molt(['volume', 'push', 'data', filesDir({ 'a.txt': 'one' }), '--json'])).stdout).revision.revision;
    const latest = volumeApp('follows', [{ name: 'data' }]);
    const pinned = volumeApp('pinned', [{ name: 'data', revision: v1 }]);
    for (const dir of [latest, pinned]) {
      const r = await server.molt(['app', 'create'], { cwd: dir });
      expect(r.code, r.stderr).toBe(0);
    }
    const call = async (app: string, path = '/') => (await fetch(server.route('default', app, path), { headers: { authorization: `Bearer ${server.adminToken}` } })).text();
    expect(await call('follows')).toBe('one');
    const env = JSON.parse(await call('follows', '/env'));
    expect(env.api).toEqual({ path: env.env, revision: v1 });
    // Read-only for the worker, even as root: no write, no new file, no chmod; the data stays.
    for (const code of JSON.parse(await call('follows', '/write'))) expect(['EROFS', 'EACCES', 'EPERM']).toContain(code);
    expect(await call('follows')).toBe('one');

    const push = await server.molt(['volume', 'push', 'data', filesDir({ 'a.txt': 'two' })]);
    expect(push.stdout).toContain('app default/follows follows the latest revision: rolling update started');
    expect(push.stdout).not.toContain('pinned');
    await waitFor(async () => (await call('follows')) === 'two', 20_000, 'the follower to serve revision 2');
    expect(await call('pinned')).toBe('one');
    const history = (await server.api('GET', '/api/v1/namespaces/default/apps/follows/history')).body;
    expect(JSON.stringify(history)).toContain('volume default/data 000002-');
    expect((await server.api('GET', '/api/v1/namespaces/default/apps/pinned/history')).body.revisions).toHaveLength(1);
    // The pinned app's own dry run says what moving it to the latest would change.
    const dry = await server.molt(['app', 'update', '--dry-run'], { cwd: volumeApp('pinned', [{ name: 'data' }]) });
    expect(dry.stdout).toMatch(/volumes: \["data@000001-\w{3} \(pinned\)"\] → \["data@000002-\w{3}"\]/);

    // Workers cannot change what they read; deleting a volume in use is refused.
    const del = await server.molt(['volume', 'delete', 'data']);
    expect(del.code).toBe(1);
    expect(del.stderr).toContain('MOLT_ERR_VOLUME_IN_USE');
  });

  it('refuses each role and foreign namespace what it lacks, with a 403 naming the right; grants share', async () => {
    await server.api('POST', '/api/v1/namespaces', { name: 'other' });
    const invoker = await server.createToken('default', 'invoker');
    const foreign = await server.createToken('other', 'deployer');
    const foreignAdmin = await server.createToken('other', 'admin');
    const dir = filesDir({ 'x.txt': 'x' });

    const invokerPush = await server.molt(['volume', 'push', 'models', dir, '--force'], { token: invoker });
    expect(invokerPush.stderr).toMatch(/MOLT_ERR_FORBIDDEN.*invoker token cannot .*needs the deployer role/);
    const invokerCreate = await server.molt(['volume', 'create', 'mine'], { token: invoker });
    expect(invokerCreate.stderr).toContain('needs the deployer role');
    expect((await server.molt(['volume', 'get', 'models'], { token: invoker })).code).toBe(0);

    for (const args of [['volume', 'get', 'default/models'], ['volume', 'push', 'default/models', dir], ['volume', 'delete', 'default/models']]) {
      const r = await server.molt(args, { token: foreign });
      expect(r.code).toBe(1);
      expect(r.stderr).toMatch(/MOLT_ERR_FORBIDDEN.*namespace other has no right to/);
    }
    expect((await server.molt(['volume', 'grant', 'models', '--namespace', 'other'], { token: invoker })).stderr).toContain('needs the admin role');
    expect((await server.molt(['volume', 'grant', 'models', '--namespace', 'other'])).code).toBe(0);
    expect((await server.molt(['volume', 'get', 'default/models'], { token: foreign })).code).toBe(0);
    expect((await server.molt(['volume', 'push', 'default/models', dir], { token: foreign })).stderr).toContain('may read volume default/models but not push to it');
    expect((await server.molt(['volume', 'delete', 'default/models'], { token: foreignAdmin })).stderr).toContain('only namespace default can delete or share');
    const shared = JSON.parse((await server.molt(['volume', 'list', '-n', 'other', '--json'], { token: foreign })).stdout);
    expect(shared.map((v: { namespace: string; name: string; shared: string }) => `${v.namespace}/${v.name}:${v.shared}`)).toEqual(['default/models:read']);

    expect((await server.molt(['volume', 'grant', 'models', '--namespace', 'other', '--write'])).code).toBe(0);
    const pushed = await server.molt(['volume', 'push', 'default/models', dir], { token: foreign });
    expect(pushed.code, pushed.stderr).toBe(0);
    expect((await server.molt(['volume', 'revoke', 'models', '--namespace', 'other'])).code).toBe(0);
    expect((await server.molt(['volume', 'get', 'default/models'], { token: foreign })).code).toBe(1);
  });
});

describe('the seed "update volume" flow with examples/get-start', () => {
  const server = new ServerProcess(tempDir());
  beforeAll(() => server.start());
  afterAll(() => server.stop());

  it('volume get, edit the local copy, app prepare, app update: under load, 0 failed requests, two lines become four', async () => {
    const app = copyExample('get-start', 100);
    const prepared = await server.molt(['app', 'prepare'], { cwd: app });
    expect(prepared.stdout).toMatch(/volume get-start-volume: revision 000001-\w{3} from \.\/volume/);
    expect((await server.molt(['app', 'create'], { cwd: app })).code).toBe(0);
    const token = await server.createToken('default', 'invoker');
    const url = server.route('default', 'get-start', '/show-volume');
    expect(await (await fetch(url, { headers: { authorization: `Bearer ${token}` } })).text()).toBe('hello world\nhello world\n');

    const get = await server.molt(['volume', 'get', 'get-start-volume'], { cwd: app });
    expect(get.stdout).toMatch(/^<Volume: id: \w+, name: get-start-volume, revision: 000001-\w{3}, files: 1, size: 24 B>\npath: /);
    const path = /path: (.+)/.exec(get.stdout)![1]!;
    writeFileSync(join(path, 'my-model'), 'hello world\nhello world\nhello world\nhello world\n');

    const load = runLoad(url, { concurrency: 8, headers: { authorization: `Bearer ${token}` }, maxMs: 60_000 });
    const prepare = await server.molt(['app', 'prepare'], { cwd: app });
    expect(prepare.stdout).toMatch(/pushed revision 000002-\w{3}; sent 1 file\(s\), 48 B; rolling default\/get-start to it/);
    const update = await server.molt(['app', 'update'], { cwd: app });
    expect(update.code, update.stderr).toBe(0);
    // The push started the rolling update; `app update` follows it, or says it is done.
    expect(update.stdout).toMatch(/already rolling to revision 2|nothing changed: app get-start: revision 2 \(volume default\/get-start-volume 000002-\w{3}\) already runs/);
    await waitFor(async () => (await server.api('GET', '/api/v1/namespaces/default/apps/get-start')).body.app.currentRevision === 2, 20_000, 'revision 2 to serve');
    await new Promise((r) => setTimeout(r, 300));
    const result = await load.stop();
    expect(result.errors).toEqual([]);
    expect(result.requests).toBeGreaterThan(50);
    const bodies = [...result.bodies.entries()].sort((a, b) => a[1].first - b[1].first).map(([body]) => body);
    expect(bodies).toEqual(['hello world\nhello world\n', 'hello world\nhello world\nhello world\nhello world\n']);

    const workers = await server.molt(['worker', 'list', '-a'], { cwd: app });
    expect(workers.stdout).toMatch(/TERMINATED\s+\S+\s+\S+/);
    expect(workers.stdout).toMatch(/RUNNING\s+FREE/);

    // molt app run reads the local copy, unpushed edits included.
    writeFileSync(join(path, 'my-model'), 'edited locally\n');
    const port = await freePort();
    const child = spawn(process.execPath, [MOLT_BIN, 'app', 'run', '--port', String(port), '--no-watch'], {
      cwd: app,
      env: { ...process.env, MOLT_CACHE_DIR: join(server.dataDir, 'cache'), MOLT_CONFIG_DIR: join(server.dataDir, 'cli') },
      stdio: 'ignore',
    });
    try {
      const local = () => fetch(`http://127.0.0.1:${port}/show-volume`).then((r) => r.text(), () => undefined);
      expect(await waitFor(local, 15_000, 'molt app run')).toBe('edited locally\n');
    } finally {
      child.kill('SIGINT');
    }
  });
});
