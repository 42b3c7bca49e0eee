import { createHash } from 'node:crypto';
import { createReadStream, lstatSync, readdirSync, readlinkSync } from 'node:fs';
import { join, posix, relative, sep } from 'node:path';
import { Transform, type Writable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { MoltError } from '../errors.js';

/** One entry of a tree: a regular file (by content hash) or a symbolic link inside the tree. */
export type TreeEntry =
  | { path: string; type: 'file'; hash: string; size: number; executable?: boolean }
  | { path: string; type: 'symlink'; target: string };

/** A content-addressed tree of files: what releases and volume revisions are. */
export interface Tree {
  entries: TreeEntry[];
}

/** The canonical bytes of a tree; its sha256 is the tree's id. */
export function encodeTree(tree: Tree): string {
  const entries = [...tree.entries].sort((a, b) => (a.path < b.path ? -1 : a.path > b.path ? 1 : 0));
  return JSON.stringify({ entries });
}

export function treeHash(tree: Tree): string {
  return createHash('sha256').update(encodeTree(tree)).digest('hex');
}

/** The content hashes of a tree's files (a hash repeats when files share content). */
export function fileHashes(tree: Tree): string[] {
  return fileEntries(tree).map((e) => e.hash);
}

/** The tree's file entries (not its links). */
export function fileEntries(tree: Tree): Extract<TreeEntry, { type: 'file' }>[] {
  return tree.entries.filter((e): e is Extract<TreeEntry, { type: 'file' }> => e.type === 'file');
}

export function treeSize(tree: Tree): number {
  return tree.entries.reduce((n, e) => n + (e.type === 'file' ? e.size : 0), 0);
}

/**
 * Writes a stream to `out` and hashes what was written, as the stream's one reader: the hash is of
 * the bytes on disk. (A second reader beside the pipe, such as a 'data' listener on a tar entry, sees
 * chunks the pipe may miss: on Node 22 a pipeline attaches after the first chunks have flowed.)
 * `onChunk` sees each chunk first.
 */
export async function writeHashed(source: AsyncIterable<Buffer>, out: Writable, onChunk?: (chunk: Buffer) => void): Promise<{ hash: string; size: number }> {
  const h = createHash('sha256');
  let size = 0;
  const hashing = new Transform({
    transform(chunk: Buffer, _encoding, done) {
      onChunk?.(chunk);
      h.update(chunk);
      size += chunk.length;
      done(null, chunk);
    },
  });
  await pipeline(source, hashing, out);
  return { hash: h.digest('hex'), size };
}

export function hashFile(path: string): Promise<string> {
  return new Promise((resolvePromise, reject) => {
    const h = createHash('sha256');
    createReadStream(path)
      .on('data', (chunk) => h.update(chunk))
      .on('error', reject)
      .on('end', () => resolvePromise(h.digest('hex')));
  });
}

/**
 * Checks that a path stays inside its tree: relative, forward slashes, no `..`, no empty
 * or `.` segments. Returns the reason it is unsafe, or undefined.
 */
export function unsafePathReason(path: string): string | undefined {
  if (path.length === 0) return 'is empty';
  if (path.startsWith('/') || /^[A-Za-z]:/.test(path)) return 'is absolute';
  if (path.includes('\\')) return 'contains a backslash';
  if (path.includes('\0')) return 'contains a NUL byte';
  const parts = path.split('/');
  if (parts.includes('..')) return 'contains ".."';
  if (parts.some((p, i) => (p === '' && i !== parts.length - 1) || p === '.')) return 'has an empty or "." segment';
  return undefined;
}

/** Where a symlink at `path` pointing at `target` lands, lexically, or undefined when it leaves the tree. */
export function symlinkTargetInside(path: string, target: string): string | undefined {
  if (target.startsWith('/')) return undefined;
  const joined = posix.normalize(posix.join(posix.dirname(path), target));
  if (joined === '..' || joined.startsWith('../') || joined.startsWith('/')) return undefined;
  return joined;
}

/** Links followed while resolving one path before it counts as a loop (Linux's own limit). */
const MAX_LINK_HOPS = 40;

/**
 * Resolves `path` as the kernel would inside a materialized tree, following the tree's own links
 * component by component. Returns the resolved path (`''` for the root), or why it leaves the tree.
 * A lexical check of each target on its own is not enough: `a -> .` then `b -> a/..` is `..`.
 */
export function resolveInTree(path: string, links: ReadonlyMap<string, string>): { path: string } | { escapes: string } {
  let hops = 0;
  const resolve = (parts: string[], pending: string[]): { path: string } | { escapes: string } => {
    while (pending.length > 0) {
      const part = pending.shift()!;
      if (part === '' || part === '.') continue;
      if (part === '..') {
        if (parts.length === 0) return { escapes: 'goes above the root of the tree' };
        parts.pop();
        continue;
      }
      parts.push(part);
      const target = links.get(parts.join('/'));
      if (target === undefined) continue;
      if (++hops > MAX_LINK_HOPS) return { escapes: `follows more than ${MAX_LINK_HOPS} links (a loop)` };
      if (target.startsWith('/')) return { escapes: `reaches the absolute link ${parts.join('/')} -> ${target}` };
      parts.pop();
      pending.unshift(...target.split('/'));
    }
    return { path: parts.join('/') };
  };
  return resolve([], path.split('/'));
}

const bad = (message: string) => new MoltError('MOLT_ERR_UNSAFE_ARCHIVE', message);

/**
 * Validates a tree that came from outside, as a whole; throws MOLT_ERR_UNSAFE_ARCHIVE naming the
 * first bad entry. Each path must be relative and clean; no two entries may conflict (`x` and
 * `x/y`); no entry may lie under a link (`d -> …` and `d/x`); and every link, resolved through the
 * tree's own links, must stay inside it. Materializing a tree that passes never leaves its root.
 */
export function assertSafeTree(tree: unknown): asserts tree is Tree {
  const t = tree as Tree;
  if (!t || typeof t !== 'object' || !Array.isArray(t.entries)) throw new MoltError('MOLT_ERR_BAD_REQUEST', 'tree must be { entries: [...] }');
  const kinds = new Map<string, 'file' | 'symlink'>();
  const links = new Map<string, string>();
  for (const e of t.entries) {
    const reason = typeof e?.path === 'string' ? unsafePathReason(e.path) : 'is not a string';
    if (reason) throw bad(`tree entry ${JSON.stringify(e?.path)} ${reason}; only relative paths inside the tree are accepted`);
    if (e.path.endsWith('/')) throw bad(`tree entry ${JSON.stringify(e.path)} ends with "/"; directories are implied by the files in them`);
    if (kinds.has(e.path)) throw bad(`tree entry ${e.path} appears twice`);
    if (e.type === 'file') {
      if (typeof e.hash !== 'string' || !/^[0-9a-f]{64}$/.test(e.hash) || !Number.isSafeInteger(e.size) || e.size < 0 || (e.executable !== undefined && typeof e.executable !== 'boolean')) {
        throw new MoltError('MOLT_ERR_BAD_REQUEST', `tree entry ${e.path} needs a sha256 hash, a size in bytes and, if any, a boolean executable`);
      }
    } else if (e.type === 'symlink') {
      if (typeof e.target !== 'string' || e.target === '' || e.target.includes('\0') || symlinkTargetInside(e.path, e.target) === undefined) {
        throw bad(`link ${e.path} -> ${String(e.target)} points outside the tree; links must stay inside it`);
      }
      links.set(e.path, e.target);
    } else {
      const other = e as { path: string };
      throw bad(`tree entry ${other.path} has type ${JSON.stringify((e as { type?: unknown }).type)}; only files and links inside the tree are accepted`);
    }
    kinds.set(e.path, e.type);
  }
  for (const path of kinds.keys()) {
    // Every proper prefix is a directory: a file or a link there conflicts.
    for (let i = path.indexOf('/'); i >= 0; i = path.indexOf('/', i + 1)) {
      const prefix = path.slice(0, i);
      const kind = kinds.get(prefix);
      if (kind === 'file') throw bad(`tree entries ${prefix} and ${path} conflict: ${prefix} is a file, so nothing can be inside it`);
      if (kind === 'symlink') throw bad(`tree entry ${path} lies under the link ${prefix} -> ${links.get(prefix)}; put the file where the link points instead`);
    }
  }
  for (const [path, target] of links) {
    const resolved = resolveInTree(path, links);
    if ('escapes' in resolved) throw bad(`link ${path} -> ${target} ${resolved.escapes} when followed through the tree's other links; links must stay inside the tree`);
  }
}

export interface ScannedTree {
  tree: Tree;
  /** Absolute path of one local file for each content hash. */
  files: Map<string, string>;
}

/**
 * Hashes already computed for files of a directory, by relative path: `[size, mtimeMs, ino, hash]`.
 * A file whose size, mtime and inode are unchanged keeps its hash (as git's index does), unless
 * it changed so close to when the index was written that the mtime cannot tell.
 */
export interface HashIndex {
  indexedAt: number;
  entries: Record<string, [number, number, number, string]>;
}

/**
 * How long after a scan began a file must not have changed for its mtime to be trusted: the
 * mtime granularity of its file system (whole seconds on some, nanoseconds on most).
 */
export const racyMs = (mtimeMs: number) => (Number.isInteger(mtimeMs / 1000) ? 2000 : 50);

/**
 * Reads a local directory into a tree. Links that leave the directory, devices, FIFOs and
 * sockets are refused with the path named. `skip` is given each relative path. With `index`,
 * unchanged files are not hashed again, and the index is brought up to date.
 */
export async function scanTree(root: string, skip: (rel: string) => boolean = () => false, index?: HashIndex): Promise<ScannedTree> {
  const previous = index ? { ...index.entries } : {};
  const scannedAt = index?.indexedAt ?? 0;
  if (index) {
    index.entries = {};
    index.indexedAt = Date.now();
  }
  const entries: TreeEntry[] = [];
  const files = new Map<string, string>();
  const walk = async (dir: string): Promise<void> => {
    for (const name of readdirSync(dir).sort()) {
      const abs = join(dir, name);
      const rel = relative(root, abs).split(sep).join('/');
      if (skip(rel)) continue;
      const st = lstatSync(abs);
      if (st.isDirectory()) await walk(abs);
      else if (st.isSymbolicLink()) {
        const target = readlinkSync(abs);
        if (symlinkTargetInside(rel, target) === undefined) {
          throw new MoltError('MOLT_ERR_UNSAFE_ARCHIVE', `${abs} is a link to ${target}, outside ${root}; replace it with the file itself`);
        }
        entries.push({ path: rel, type: 'symlink', target });
      } else if (st.isFile()) {
        const known = previous[rel];
        const reusable = known && known[0] === st.size && known[1] === st.mtimeMs && known[2] === st.ino && st.mtimeMs < scannedAt - racyMs(st.mtimeMs);
        const hash = reusable ? known[3] : await hashFile(abs);
        if (index) index.entries[rel] = [st.size, st.mtimeMs, st.ino, hash];
        files.set(hash, abs);
        const entry: TreeEntry = { path: rel, type: 'file', hash, size: st.size };
        if (st.mode & 0o111) entry.executable = true;
        entries.push(entry);
      } else {
        throw new MoltError('MOLT_ERR_UNSAFE_ARCHIVE', `${abs} is a device, FIFO or socket; only regular files and links can be uploaded`);
      }
    }
  };
  await walk(root);
  const tree: Tree = { entries };
  try {
    // The server checks the same; failing here names the directory before anything is sent.
    assertSafeTree(tree);
  } catch (err) {
    if (err instanceof MoltError) throw new MoltError(err.code, `${root}: ${err.message}`);
    throw err;
  }
  return { tree, files };
}
