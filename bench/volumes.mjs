// Volume pushes and materialization: a 1 GiB, 10,000-file volume pushed whole, then with one file
// changed, then unchanged; a revision materialized for a new worker; and the same tree copied with
// `cp -r` as the baseline for what materializing costs without hard links.
import { randomBytes } from 'node:crypto';
import { mkdirSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { ROOT, run, startMolt, tmp } from './lib.mjs';

async function timed(fn) {
  const t0 = performance.now();
  const value = await fn();
  return { ms: performance.now() - t0, value };
}

/** `files` files of random bytes, `totalBytes` in all, in 100 directories. */
function writeVolume(dir, files, totalBytes) {
  const size = Math.floor(totalBytes / files);
  for (let i = 0; i < files; i++) {
    const sub = join(dir, `d${String(i % 100).padStart(2, '0')}`);
    if (i < 100) mkdirSync(sub, { recursive: true });
    writeFileSync(join(sub, `f${i}.bin`), randomBytes(size));
  }
  return size;
}

export async function benchVolumes({ files = 10_000, totalBytes = 1024 ** 3 } = {}) {
  const molt = await startMolt(['--max-volume-bytes', String(4 * 1024 ** 3)]);
  const src = tmp('molt-bench-vol-');
  try {
    const fileSize = writeVolume(src, files, totalBytes);
    await molt.molt(['volume', 'create', 'big']);
    const push = async () => JSON.parse((await molt.molt(['volume', 'push', 'big', src, '--json'])).stdout);
    const first = await timed(push);
    writeFileSync(join(src, 'd07', 'f7.bin'), randomBytes(fileSize));
    const second = await timed(push);
    const unchanged = await timed(push);

    // Materializing a revision, as a worker's first start does: the supervisor's own code on the
    // server's blob store, into a fresh directory. Cold: a process that has not checked these blobs
    // (a server just restarted) hashes every one. Warm: one that stored or checked them since it
    // started (as the server that took the push has) finds their ctime unchanged and links at once.
    const { BlobStore } = await import(join(ROOT, 'packages/molt/dist/blobs/blob-store.js'));
    const { materializeTree } = await import(join(ROOT, 'packages/molt/dist/blobs/materialize.js'));
    const blobs = new BlobStore(join(molt.dataDir, 'blobs'));
    const hash = second.value.revision.treeHash;
    const out = (name) => join(tmp(`molt-bench-trees-${name}-`), hash);
    const cold = out('cold');
    const materialize = await timed(() => materializeTree(blobs, cold, hash));
    const warm = await timed(() => materializeTree(blobs, out('warm'), hash));
    const reuse = await timed(() => materializeTree(blobs, cold, hash));
    const copyTarget = join(tmp('molt-bench-cp-'), 'copy');
    const copy = await timed(() => run('cp', ['-r', src, copyTarget]));
    rmSync(copyTarget, { recursive: true, force: true });
    return {
      files,
      totalBytes: files * fileSize,
      pushes: [
        ['first push (all files)', first],
        ['one file changed', second],
        ['nothing changed', unchanged],
      ].map(([name, r]) => ({ name, ms: r.ms, revision: r.value.revision.revision, changed: r.value.changed, sentFiles: r.value.sent.files, sentBytes: r.value.sent.bytes })),
      materializeMs: materialize.ms,
      warmMs: warm.ms,
      reuseMs: reuse.ms,
      copyMs: copy.ms,
    };
  } finally {
    rmSync(src, { recursive: true, force: true });
    await molt.stop();
  }
}
