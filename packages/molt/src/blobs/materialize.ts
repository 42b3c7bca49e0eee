import { chmodSync, copyFileSync, existsSync, linkSync, lstatSync, mkdirSync, readdirSync, readFileSync, renameSync, rmSync, symlinkSync } from 'node:fs';
import { dirname, join } from 'node:path';
import type { BlobStore } from './blob-store.js';
import type { Tree } from './tree.js';

/**
 * Materializes the tree stored as blob `hash` once, read-only, at `<root>/<hash>`, and returns that
 * path; the tree is read from the blob store only the first time.
 * Files are hard links to their blobs (copies where linking fails), so every worker using a
 * release or volume revision shares one copy on disk. A tree is built in a temporary directory
 * and renamed into place, so a crash never leaves a half-made tree behind.
 */
export function materializeTree(blobs: BlobStore, root: string, hash: string): string {
  const dest = join(root, hash);
  if (existsSync(dest)) return dest;
  const tree = JSON.parse(readFileSync(blobs.path(hash), 'utf8')) as Tree;
  mkdirSync(root, { recursive: true });
  const tmp = `${dest}.tmp-${process.pid}-${Date.now()}`;
  mkdirSync(tmp, { recursive: true });
  for (const entry of tree.entries) {
    const target = join(tmp, entry.path);
    mkdirSync(dirname(target), { recursive: true });
    if (entry.type === 'symlink') {
      symlinkSync(entry.target, target);
    } else if (entry.executable) {
      copyFileSync(blobs.path(entry.hash), target);
      chmodSync(target, 0o555);
    } else {
      try {
        linkSync(blobs.path(entry.hash), target);
      } catch {
        copyFileSync(blobs.path(entry.hash), target);
        chmodSync(target, 0o444);
      }
    }
  }
  freezeDirs(tmp);
  try {
    renameSync(tmp, dest);
  } catch (err) {
    // Another worker start materialized it first.
    if (!existsSync(dest)) throw err;
    makeWritable(tmp);
    rmSync(tmp, { recursive: true, force: true });
  }
  return dest;
}

function freezeDirs(dir: string): void {
  for (const name of readdirSync(dir)) {
    const p = join(dir, name);
    if (lstatSync(p).isDirectory()) freezeDirs(p);
  }
  chmodSync(dir, 0o555);
}

/** Used to delete a frozen tree. */
export function makeWritable(dir: string): void {
  chmodSync(dir, 0o755);
  for (const name of readdirSync(dir)) {
    const p = join(dir, name);
    if (lstatSync(p).isDirectory()) makeWritable(p);
  }
}
