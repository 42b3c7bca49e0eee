import { chmodSync, constants, copyFileSync, linkSync, lstatSync, mkdirSync, mkdtempSync, readdirSync, renameSync, rmSync, symlinkSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { MoltError } from '../errors.js';
import { sha256 } from '../ids.js';
import type { BlobStore } from './blob-store.js';
import { assertSafeTree, type Tree } from './tree.js';

/** Blobs hashed at once while a tree is checked: enough to keep the disk busy, not the loop. */
const VERIFY_CONCURRENCY = 4;

const building = new Map<string, Promise<string>>();

/**
 * Materializes the tree stored as blob `hash` at `dest` (once: an existing `dest` is returned as it
 * is) and returns `dest`. Files are hard links to their blobs (exclusive copies where linking fails),
 * so every worker using the tree shares one copy on disk; directories are made read-only.
 *
 * The tree is checked again as a whole, and every blob is hashed before it is linked: a blob whose
 * content no longer matches its hash is moved out of the store and reported, so the next push
 * uploads it again, and nothing is built from it. Building never follows a link and never
 * overwrites (directories first, then files with exclusive creation, links last), happens in a
 * temporary directory beside `dest`, and is renamed into place: a failure leaves nothing behind.
 */
export function materializeTree(blobs: BlobStore, dest: string, hash: string): Promise<string> {
  let running = building.get(dest);
  if (!running) {
    running = build(blobs, dest, hash).finally(() => building.delete(dest));
    building.set(dest, running);
  }
  return running;
}

function isDirectory(path: string): boolean {
  try {
    return lstatSync(path).isDirectory();
  } catch {
    return false;
  }
}

async function build(blobs: BlobStore, dest: string, hash: string): Promise<string> {
  if (isDirectory(dest)) return dest;
  const text = blobs.readText(hash);
  if (sha256(text) !== hash) throw corrupt(blobs, hash, `the tree ${hash.slice(0, 12)} itself`);
  const tree = JSON.parse(text) as Tree;
  assertSafeTree(tree);
  await verifyBlobs(blobs, tree);

  mkdirSync(dirname(dest), { recursive: true });
  const tmp = mkdtempSync(`${dest}.tmp-`);
  try {
    const dirs = new Set<string>();
    for (const e of tree.entries) for (let d = dirname(e.path); d !== '.'; d = dirname(d)) dirs.add(d);
    // Parents before children; no link exists yet, so no directory is made through one.
    for (const d of [...dirs].sort((a, b) => a.length - b.length)) mkdirSync(join(tmp, d));
    for (const e of tree.entries) {
      if (e.type !== 'file') continue;
      const target = join(tmp, e.path);
      if (e.executable) {
        copyFileSync(blobs.path(e.hash), target, constants.COPYFILE_EXCL);
        chmodSync(target, 0o555);
        continue;
      }
      try {
        linkSync(blobs.path(e.hash), target);
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code === 'EEXIST') throw err;
        // Another file system or too many links: a copy of its own.
        copyFileSync(blobs.path(e.hash), target, constants.COPYFILE_EXCL);
        chmodSync(target, 0o444);
      }
    }
    for (const e of tree.entries) if (e.type === 'symlink') symlinkSync(e.target, join(tmp, e.path));
    // Linking changed the blobs' ctime; they were checked just before.
    for (const e of tree.entries) if (e.type === 'file') blobs.markIntact(e.hash);
    freezeDirs(tmp);
    try {
      renameSync(tmp, dest);
    } catch (err) {
      // Made meanwhile by another server process: use that one.
      if (!isDirectory(dest)) throw err;
      removeTree(tmp);
    }
    return dest;
  } catch (err) {
    removeTree(tmp);
    throw err;
  }
}

/** Hashes each distinct blob of the tree; a mismatch is moved out of the store and reported. */
async function verifyBlobs(blobs: BlobStore, tree: Tree): Promise<void> {
  const paths = new Map<string, string>();
  for (const e of tree.entries) if (e.type === 'file' && !paths.has(e.hash)) paths.set(e.hash, e.path);
  const queue = [...paths];
  const worker = async () => {
    for (let next = queue.pop(); next; next = queue.pop()) {
      const [blob, path] = next;
      if (!(await blobs.verify(blob))) throw corrupt(blobs, blob, `file ${path}`);
    }
  };
  await Promise.all(Array.from({ length: Math.min(VERIFY_CONCURRENCY, queue.length) }, worker));
}

function corrupt(blobs: BlobStore, hash: string, what: string): MoltError {
  const where = blobs.quarantine(hash);
  return new MoltError(
    'MOLT_ERR_CORRUPT_BLOB',
    `${what}: its stored content (blob ${hash.slice(0, 12)}…) no longer matches its hash; it was moved out of the store (${where ?? 'already gone'}) and is never served: push the release or volume again (\`molt release build --push\`, \`molt volume push\`) and the server asks for it`,
  );
}

function freezeDirs(dir: string): void {
  for (const name of readdirSync(dir)) {
    const p = join(dir, name);
    if (lstatSync(p).isDirectory()) freezeDirs(p);
  }
  chmodSync(dir, 0o555);
}

/** Makes a frozen tree's directories writable again, so that it can be deleted. */
function makeWritable(dir: string): void {
  chmodSync(dir, 0o755);
  for (const name of readdirSync(dir)) {
    const p = join(dir, name);
    if (lstatSync(p).isDirectory()) makeWritable(p);
  }
}

/** Deletes a materialized (frozen) tree, or a directory of them; nothing when it is not there. */
export function removeTree(dir: string): void {
  if (!isDirectory(dir)) return;
  makeWritable(dir);
  rmSync(dir, { recursive: true, force: true });
}
