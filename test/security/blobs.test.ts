import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ServerProcess, tempDir, writeApp } from '../helpers.js';
import { fileEntry, sha256, tarOf, treeWith } from './archives.js';
import { record } from './report.js';

const boundary = 'blobs';

describe('a content hash is not a capability across namespaces', () => {
  const server = new ServerProcess(tempDir());
  const secret = 'team-a private key material';
  const hash = sha256(secret);
  let tokenA = '';
  let tokenB = '';

  const call = async (method: string, path: string, token: string, body?: unknown) => server.api(method, `/api/v1/namespaces/${path}`, body, token);
  const push = async (ns: string, volume: string, token: string, parts: Parameters<typeof tarOf>[0]) => {
    const res = await fetch(`${server.url}/api/v1/namespaces/${ns}/volumes/${volume}/revisions`, {
      method: 'POST',
      headers: { authorization: `Bearer ${token}`, 'content-type': 'application/x-tar' },
      body: new Uint8Array(tarOf(parts)),
    });
    return { status: res.status, body: (await res.json()) as Record<string, any> };
  };

  beforeAll(async () => {
    await server.start();
    for (const ns of ['team-a', 'team-b']) expect((await server.molt(['namespace', 'create', ns])).code).toBe(0);
    tokenA = await server.createToken('team-a', 'admin');
    tokenB = await server.createToken('team-b', 'deployer');
    const dir = writeApp(join(tempDir(), 'keys'), { 'key.pem': secret });
    expect((await server.molt(['volume', 'create', 'keys', '-n', 'team-a'], { token: tokenA })).code).toBe(0);
    expect((await server.molt(['volume', 'push', 'keys', dir, '-n', 'team-a'], { token: tokenA })).code).toBe(0);
    expect((await server.molt(['volume', 'create', 'loot', '-n', 'team-b'], { token: tokenB })).code).toBe(0);
  });
  afterAll(() => server.stop());

  it("does not tell another namespace whether it holds a blob", async () => {
    const forB = await call('POST', 'team-b/blobs/missing', tokenB, { hashes: [hash] });
    expect(forB.body.missing).toEqual([hash]);
    const forBVolume = await call('POST', 'team-b/volumes/loot/blobs/missing', tokenB, { hashes: [hash] });
    expect(forBVolume.body.missing).toEqual([hash]);
    // Its owner is told it has it.
    expect((await call('POST', 'team-a/volumes/keys/blobs/missing', tokenA, { hashes: [hash] })).body.missing).toEqual([]);
    record({ boundary, attack: "namespace b asks blobs/missing about namespace a's blob", expected: 'reported missing, as for any blob b never had', observed: `missing: [${forB.body.missing.length === 1 ? 'the hash' : ''}]`, refused: forB.body.missing.length === 1 });
  });

  it("refuses a tree that names another namespace's blob without sending it, so its content cannot be pulled", async () => {
    const res = await push('team-b', 'loot', tokenB, [treeWith([{ path: 'stolen.pem', type: 'file', hash, size: secret.length }])]);
    expect(res.status).toBe(400);
    expect(res.body.error.code).toBe('MOLT_ERR_MISSING_BLOB');
    const tree = await call('GET', 'team-b/volumes/loot/tree', tokenB);
    expect(tree.status).toBe(404);
    const pull = await call('POST', 'team-b/volumes/loot/download', tokenB, { hashes: [hash] });
    expect(pull.status).not.toBe(200);
    record({ boundary, attack: "namespace b pushes a tree naming a's blob by hash, without its content, to download it", expected: '400 MOLT_ERR_MISSING_BLOB; nothing to download', observed: `${res.status} ${res.body.error.code}; download ${pull.status}`, refused: true });
  });

  it('takes the blob from a namespace that sends its content (it had the bytes), and then lets it use it', async () => {
    const res = await push('team-b', 'loot', tokenB, [treeWith([fileEntry('mine.pem', secret)]), { path: 'f0', body: secret }]);
    expect(res.status).toBe(201);
    expect(res.body.uploaded.blobs).toBe(0);
    expect((await call('POST', 'team-b/blobs/missing', tokenB, { hashes: [hash] })).body.missing).toEqual([]);
  });

  it('lets a namespace use, without sending them, the blobs of a volume shared with it', async () => {
    const other = 'shared model weights';
    const dir = writeApp(join(tempDir(), 'weights'), { 'w.bin': other });
    expect((await server.molt(['volume', 'create', 'weights', '-n', 'team-a'], { token: tokenA })).code).toBe(0);
    expect((await server.molt(['volume', 'push', 'weights', dir, '-n', 'team-a'], { token: tokenA })).code).toBe(0);
    const refs = [treeWith([{ path: 'w.bin', type: 'file', hash: sha256(other), size: other.length }])];
    expect((await push('team-b', 'loot', tokenB, refs)).status).toBe(400);
    expect((await server.molt(['volume', 'grant', 'weights', '--namespace', 'team-b', '--owner', 'team-a'], { token: tokenA })).code).toBe(0);
    expect((await push('team-b', 'loot', tokenB, refs)).status).toBe(201);
  });
});
