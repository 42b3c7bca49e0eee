import { readFileSync } from 'node:fs';
import { request } from 'node:http';
import { join } from 'node:path';
import { createGzip } from 'node:zlib';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ServerProcess, simpleApp, sleep, tempDir, waitFor } from '../helpers.js';
import { countFiles, leftovers, tarOf, treeWith } from './archives.js';
import { record } from './report.js';

const boundary = 'uploads and trees';

/** A gzip bomb: a tar whose one file declares `bytes` of zeros, compressed to about a thousandth. */
async function gzipBomb(bytes: number): Promise<Buffer> {
  const header = tarOf([treeWith([]), { path: 'zeros.bin', size: bytes }], false);
  const gz = createGzip({ level: 9 });
  const out: Buffer[] = [];
  gz.on('data', (c: Buffer) => out.push(c));
  const done = new Promise((r) => gz.on('end', r));
  gz.write(header);
  const zero = Buffer.alloc(1 << 20);
  for (let left = bytes; left > 0; left -= zero.length) {
    if (!gz.write(left >= zero.length ? zero : zero.subarray(0, left))) await new Promise((r) => gz.once('drain', r));
  }
  gz.end(Buffer.alloc(1024));
  await done;
  return Buffer.concat(out);
}

const rss = (pid: number) => Number(/VmRSS:\s+(\d+)/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))![1]) * 1024;

describe('uploads cannot hurt the server', () => {
  const server = new ServerProcess(tempDir());
  let bomb: Buffer;
  const blobs = () => countFiles(join(server.dataDir, 'blobs', 'sha256'));
  const send = async (path: string, body: Buffer) => {
    const res = await fetch(`${server.url}/api/v1/namespaces/default/${path}`, { method: 'POST', headers: { authorization: `Bearer ${server.adminToken}`, 'content-type': 'application/x-tar' }, body: new Uint8Array(body) });
    return { status: res.status, body: (await res.json()) as { error: { code: string; message: string } } };
  };
  /** The server answers its API and routes requests to a worker. */
  const serving = async () => {
    const health = await fetch(`${server.url}/api/v1/health`);
    const route = await fetch(server.route('default', 'alive', '/'), { headers: { authorization: `Bearer ${server.adminToken}` } });
    return health.status === 200 && route.status === 200 && (await route.text()) === 'still here';
  };

  beforeAll(async () => {
    [bomb] = await Promise.all([gzipBomb(1536 * 1024 * 1024), server.start()]);
    const dir = simpleApp(join(tempDir(), 'alive'), { name: 'alive', body: 'still here' });
    expect((await server.molt(['app', 'create'], { cwd: dir })).code).toBe(0);
    expect((await server.molt(['volume', 'create', 'vol'])).code).toBe(0);
  });
  afterAll(() => server.stop());

  it('refuses a 1.5 MB gzip of 1.5 GB of zeros with 413, as a release and as a volume, and keeps serving', async () => {
    expect(bomb.length).toBeLessThan(2 * 1024 * 1024);
    const before = blobs();
    for (const [kind, path] of [
      ['release', 'releases'],
      ['volume push', 'volumes/vol/revisions'],
    ] as const) {
      const res = await send(path, bomb);
      expect(res.status).toBe(413);
      expect(res.body.error.code).toBe('MOLT_ERR_UPLOAD_TOO_LARGE');
      expect(await serving()).toBe(true);
      record({ boundary, attack: `${kind}: a ${(bomb.length / 1e6).toFixed(1)} MB gzip declaring 1.5 GB of zeros`, expected: '413; the server keeps serving; nothing stored', observed: `${res.status} ${res.body.error.code}; API and routes answer`, refused: true });
    }
    expect(blobs()).toBe(before);
    await waitFor(() => leftovers(server.dataDir).length === 0 || undefined, 5000, 'no staged files');
  });

  it('takes the same bomb sent 20 times at once: every one refused, memory bounded, nothing stored', async () => {
    const before = blobs();
    // Half as releases (refused from the tar header), half as volume pushes (inflated until tar's ratio guard trips).
    const results = await Promise.all(Array.from({ length: 20 }, (_, i) => send(i % 2 ? 'releases' : 'volumes/vol/revisions', bomb)));
    expect(results.map((r) => r.status)).toEqual(Array(20).fill(413));
    expect(await serving()).toBe(true);
    const memory = rss(server.child.pid!);
    expect(memory).toBeLessThan(600 * 1024 * 1024);
    expect(blobs()).toBe(before);
    await waitFor(() => leftovers(server.dataDir).length === 0 || undefined, 5000, 'no staged files');
    expect(server.output).not.toMatch(/unhandled/i);
    record({ boundary, attack: 'the same bomb sent 20 times at once', expected: 'each 413; server RSS bounded; nothing stored', observed: `20 × 413; server RSS ${(memory / 1024 / 1024).toFixed(0)} MiB; blobs unchanged`, refused: true });
  });

  it('cleans up after a client that goes away in the middle of an upload', async () => {
    const half = tarOf([treeWith([]), { path: 'big.bin', body: Buffer.alloc(8 * 1024 * 1024, 1) }]).subarray(0, 6 * 1024 * 1024);
    await new Promise<void>((resolvePromise) => {
      const req = request(`${server.url}/api/v1/namespaces/default/releases`, { method: 'POST', headers: { authorization: `Bearer ${server.adminToken}`, 'content-type': 'application/x-tar', 'content-length': String(16 * 1024 * 1024) } });
      req.on('error', () => resolvePromise());
      req.write(half, () => setTimeout(() => req.destroy(), 200));
      req.on('close', () => resolvePromise());
    });
    await sleep(300);
    await waitFor(() => leftovers(server.dataDir).length === 0 || undefined, 5000, 'no staged files');
    expect(await serving()).toBe(true);
    expect(server.output).not.toMatch(/unhandled/i);
    record({ boundary, attack: 'a client that drops its connection half-way through an upload', expected: 'nothing staged is left; the server keeps serving', observed: 'staging empty; API and routes answer', refused: true });
  });
});
