import { chmodSync, existsSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ServerProcess, tempDir, writeApp } from '../helpers.js';
import { countFiles, fileEntry, leftovers, sha256, tarOf, treeWith, type TarEntry } from './archives.js';
import { probeApp } from './probe-app.js';
import { record } from './report.js';

const boundary = 'uploads and trees';

/**
 * `l0 -> .`, `l1 -> l0/..`, … : each link checked lexically on its own stays inside the tree
 * (`l0/..` is `.`), but followed through the others the last one is `depth` levels above the root.
 */
function linkChain(depth: number): { path: string; type: 'symlink'; target: string }[] {
  const links = [{ path: 'l0', type: 'symlink' as const, target: '.' }];
  for (let i = 1; i <= depth; i++) links.push({ path: `l${i}`, type: 'symlink', target: `l${i - 1}/..` });
  return links;
}

describe('trees are checked as a whole and materialized without following links', () => {
  const server = new ServerProcess(tempDir(), ['--max-volume-bytes', '1000']);
  const canaryDir = tempDir('molt-canary-');
  const canary = join(canaryDir, 'canary');
  const blobs = () => countFiles(join(server.dataDir, 'blobs', 'sha256'));
  const post = async (path: string, body: Buffer) => {
    const res = await fetch(`${server.url}/api/v1/namespaces/default/${path}`, { method: 'POST', headers: { authorization: `Bearer ${server.adminToken}`, 'content-type': 'application/x-tar' }, body: new Uint8Array(body) });
    return { status: res.status, body: (await res.json()) as { error: { code: string; message: string } } };
  };
  const releases = async () => (await server.api('GET', '/api/v1/namespaces/default/releases')).body.releases.length as number;

  beforeAll(async () => {
    await server.start();
    writeFileSync(canary, 'original', { mode: 0o600 });
    expect((await server.molt(['volume', 'create', 'vol'])).code).toBe(0);
  });
  afterAll(() => server.stop());

  /** Sends the same hostile tree as a release and as a volume revision; both must be refused, storing nothing. */
  async function refusedEverywhere(what: string, entries: TarEntry[], message: RegExp, status = 400): Promise<void> {
    const before = { blobs: blobs(), releases: await releases() };
    for (const [kind, path] of [
      ['release', 'releases'],
      ['volume push', 'volumes/vol/revisions'],
    ] as const) {
      const res = await post(path, tarOf(entries));
      expect(res.status, JSON.stringify(res.body)).toBe(status);
      expect(res.body.error.message).toMatch(message);
      expect(blobs()).toBe(before.blobs);
      expect(await releases()).toBe(before.releases);
      expect(leftovers(server.dataDir)).toEqual([]);
      record({ boundary, attack: `${kind}: ${what}`, expected: `${status} naming the entry; no blob, row or temp dir`, observed: `${res.status} ${res.body.error.code}: ${res.body.error.message.slice(0, 90)}…`, refused: true });
    }
    expect(readFileSync(canary, 'utf8')).toBe('original');
  }

  it('refuses a chain of links that climbs out of the tree, and the file written through it', async () => {
    // Deep enough to reach / from any materialization directory, then down to the canary.
    const depth = 40;
    const x = 'pwned';
    await refusedEverywhere('links l0 -> ., l1 -> l0/.., … and a file l40/…/canary through them', [treeWith([...linkChain(depth), fileEntry(`l${depth}${canary}`, x)]), { path: 'f0', body: x }], /lies under the link l40/);
    await refusedEverywhere('the same chain of links alone', [treeWith(linkChain(4))], /link l1 -> l0\/\.\. goes above the root of the tree when followed through the tree's other links/);
  });

  it('refuses an entry under a link, and two entries that conflict', async () => {
    await refusedEverywhere('a file under a link inside the tree (d -> sub, d/x)', [treeWith([{ path: 'd', type: 'symlink', target: 'sub' }, fileEntry('d/x', 'x')]), { path: 'f0', body: 'x' }], /tree entry d\/x lies under the link d -> sub/);
    await refusedEverywhere('x and x/y both in the tree', [treeWith([fileEntry('x', 'a'), fileEntry('x/y', 'b')]), { path: 'f0', body: 'a' }, { path: 'f1', body: 'b' }], /tree entries x and x\/y conflict/);
  });

  it('refuses a declared size that is not the real one, so limits count real bytes', async () => {
    const big = 'z'.repeat(5000);
    // Declared as 1 byte, the file would slip under --max-volume-bytes 1000.
    await refusedEverywhere('a 5000-byte file declared as 1 byte', [treeWith([fileEntry('big.bin', big, 1)]), { path: 'f0', body: big }], /file big\.bin declares 1 bytes .* but the content sent has 5000/);
    const honest = await post('volumes/vol/revisions', tarOf([treeWith([fileEntry('big.bin', big)]), { path: 'f0', body: big }]));
    expect(honest.status).toBe(413);
    expect(honest.body.error.message).toContain('tree holds 5000 bytes, over the limit of 1000');
    record({ boundary, attack: 'volume push over --max-volume-bytes, declared honestly', expected: '413', observed: `${honest.status} ${honest.body.error.code}`, refused: true });
  });

  it('stores nothing for an upload refused after its files arrived (a bad manifest)', async () => {
    const before = blobs();
    const res = await post('releases', tarOf([treeWith([fileEntry('molt-release.json', '{"app": 1}'), fileEntry('new.js', 'fresh')]), { path: 'f0', body: '{"app": 1}' }, { path: 'f1', body: 'fresh' }]));
    expect(res.status).toBe(400);
    expect(res.body.error.code).toBe('MOLT_ERR_BAD_RELEASE');
    expect(blobs()).toBe(before);
    expect(existsSync(join(server.dataDir, 'blobs', 'sha256', sha256('fresh').slice(0, 2), sha256('fresh')))).toBe(false);
    expect(leftovers(server.dataDir)).toEqual([]);
    record({ boundary, attack: 'release whose files arrive but whose manifest is invalid', expected: '400; its new blobs are not stored', observed: `${res.status} ${res.body.error.code}; blob of new.js absent`, refused: true });
  });

  it('finds a blob whose content no longer matches its hash, never serves it, and takes it again on the next push', async () => {
    const dir = writeApp(join(tempDir(), 'data'), { 'model.txt': 'the real model' });
    expect((await server.molt(['volume', 'create', 'models'])).code).toBe(0);
    expect((await server.molt(['volume', 'push', 'models', dir])).code).toBe(0);
    // Behind molt's back (only root, or an unsandboxed worker, could): the stored blob changes.
    const hash = sha256('the real model');
    const blob = join(server.dataDir, 'blobs', 'sha256', hash.slice(0, 2), hash);
    chmodSync(blob, 0o644);
    writeFileSync(blob, 'a poisoned model');
    const app = probeApp(join(tempDir(), 'reader'), 'reader', { config: { volumes: [{ name: 'models' }] } });
    const create = await server.molt(['app', 'create'], { cwd: app });
    expect(create.code).toBe(1);
    expect(create.stderr).toMatch(/file model\.txt: its stored content \(blob [0-9a-f]{12}…\) no longer matches its hash; it was moved out of the store/);
    expect(existsSync(blob)).toBe(false);
    expect(readdirSync(join(server.dataDir, 'blobs', 'corrupt')).some((n) => n.startsWith(hash))).toBe(true);
    const missing = await server.api('POST', '/api/v1/namespaces/default/volumes/models/blobs/missing', { hashes: [hash] });
    expect(missing.body.missing).toEqual([hash]);
    record({ boundary, attack: 'a stored blob is changed behind molt\'s back', expected: 'found when a tree is built from it: reported, moved out, never served', observed: `app create exit ${create.code}: MOLT_ERR_CORRUPT_BLOB; blobs/missing lists it again`, refused: true });
    // The next push sends it again, and the app runs with the real content.
    const push = await server.molt(['volume', 'push', 'models', dir]);
    expect(push.code).toBe(0);
    expect(push.stdout + push.stderr).toMatch(/sent 1 file/);
    expect((await server.molt(['app', 'update'], { cwd: app })).code).toBe(0);
    const res = await fetch(server.route('default', 'reader', '/probe'), { method: 'POST', headers: { authorization: `Bearer ${server.adminToken}` }, body: JSON.stringify({ op: 'read', path: '/molt/volumes/models/model.txt' }) });
    expect(await res.json()).toEqual({ ok: true, value: 'the real model' });
  });
});
