/**
 * The local copy of a volume: `<cache>/molt/volumes/<volume id>/` holds its files, which the user
 * may edit; `<volume id>.json` beside it records the revision they came from, so that
 * `molt app prepare` knows what changed and a push can refuse to overwrite someone else's.
 */
import { createHash } from 'node:crypto';
import { chmodSync, copyFileSync, createWriteStream, existsSync, mkdirSync, readdirSync, readFileSync, renameSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { homedir } from 'node:os';
import { dirname, join } from 'node:path';
import { pipeline } from 'node:stream/promises';
import { Parser, type ReadEntry } from 'tar';
import { type HashIndex, type ScannedTree, scanTree, type Tree, treeHash, writeHashed } from '../blobs/tree.js';
import { MoltError } from '../errors.js';
import type { VolumeRevisionRow, VolumeRow } from '../store/types.js';
import type { Client } from './client.js';
import { planUpload, uploadArchive } from './upload.js';

export interface CacheState {
  server: string;
  namespace: string;
  name: string;
  /** The revision the files came from ('' for an empty new volume). */
  revision: string;
  treeHash: string;
}

export interface PushOutcome {
  changed: boolean;
  revision: VolumeRevisionRow;
  uploaded: { blobs: number; bytes: number };
  rolling: string[];
  /** Files and bytes the upload plan said were missing on the server. */
  sent: { files: number; bytes: number };
}

const EMPTY_TREE_HASH = treeHash({ entries: [] });

function cacheRoot(): string {
  return join(process.env.MOLT_CACHE_DIR ?? join(process.env.XDG_CACHE_HOME ?? join(homedir(), '.cache'), 'molt'), 'volumes');
}

/**
 * Scans a directory with a hash index kept in the cache, so that a push or a check of a large
 * volume only hashes the files that changed since the last one.
 */
export async function scanIndexed(root: string): Promise<ScannedTree> {
  const file = join(cacheRoot(), 'index', `${createHash('sha256').update(root).digest('hex').slice(0, 32)}.json`);
  let index: HashIndex = { indexedAt: 0, entries: {} };
  try {
    index = JSON.parse(readFileSync(file, 'utf8')) as HashIndex;
  } catch {
    // no index yet: every file is hashed
  }
  const scanned = await scanTree(root, () => false, index);
  mkdirSync(dirname(file), { recursive: true });
  writeFileSync(file, JSON.stringify(index));
  return scanned;
}

export function volumePath(volumeId: string): string {
  return join(cacheRoot(), volumeId);
}

function statePath(volumeId: string): string {
  return join(cacheRoot(), `${volumeId}.json`);
}

/** The local copy of `namespace/name`, if one was made on this machine (for `molt app run`). */
export function findLocalCopy(namespace: string, name: string): { dir: string; state: CacheState } | undefined {
  let files: string[];
  try {
    files = readdirSync(cacheRoot()).filter((f) => f.endsWith('.json'));
  } catch {
    return undefined;
  }
  for (const f of files) {
    const id = f.slice(0, -'.json'.length);
    const state = readState(id);
    if (state?.namespace === namespace && state.name === name && existsSync(volumePath(id))) return { dir: volumePath(id), state };
  }
  return undefined;
}

export function readState(volumeId: string): CacheState | undefined {
  try {
    return JSON.parse(readFileSync(statePath(volumeId), 'utf8')) as CacheState;
  } catch {
    return undefined;
  }
}

function writeState(volumeId: string, state: CacheState): void {
  mkdirSync(cacheRoot(), { recursive: true });
  writeFileSync(statePath(volumeId), `${JSON.stringify(state, null, 2)}\n`);
}

/** Whether the local copy differs from the revision it came from. */
export async function localChanges(volumeId: string): Promise<{ state: CacheState; scanned: ScannedTree; changed: boolean } | undefined> {
  const state = readState(volumeId);
  const dir = volumePath(volumeId);
  if (!state || !existsSync(dir)) return undefined;
  const scanned = await scanIndexed(dir);
  return { state, scanned, changed: treeHash(scanned.tree) !== state.treeHash };
}

const base = (v: { namespace: string; name: string }) => `/api/v1/namespaces/${v.namespace}/volumes/${v.name}`;

/**
 * Makes the local copy of a revision (default: the latest): files it already has are reused,
 * only missing ones are downloaded. Refuses to drop local changes unless `force`.
 */
export async function pull(client: Client, volume: VolumeRow, opts: { revision?: string; force?: boolean } = {}): Promise<{ revision: VolumeRevisionRow; downloaded: number; dir: string }> {
  const dir = volumePath(volume.id);
  const local = await localChanges(volume.id);
  if (local?.changed && !opts.force) {
    throw new MoltError(
      'MOLT_ERR_CONFLICT',
      `${dir} has changes not pushed yet (based on revision ${local.state.revision || '(none)'}); push them with \`molt volume push ${volume.name}\`, or pull with --force to drop them`,
    );
  }
  const query = opts.revision ? `?revision=${encodeURIComponent(opts.revision)}` : '';
  const { revision, tree } = await client.request<{ revision: VolumeRevisionRow; tree: Tree }>('GET', `${base(volume)}/tree${query}`);
  const have = new Map<string, string>(); // hash -> a local file with that content
  if (local) for (const [hash, file] of local.scanned.files) have.set(hash, file);
  const needed = [...new Set(tree.entries.flatMap((e) => (e.type === 'file' && !have.has(e.hash) ? [e.hash] : [])))];
  mkdirSync(cacheRoot(), { recursive: true });
  const staging = `${dir}.pull-${process.pid}`;
  const incoming = `${staging}-blobs`;
  rmSync(staging, { recursive: true, force: true });
  rmSync(incoming, { recursive: true, force: true });
  mkdirSync(incoming, { recursive: true });
  try {
    if (needed.length > 0) {
      const wanted = new Set(needed);
      const body = await client.download(`${base(volume)}/download`, { revision: revision.revision, hashes: needed });
      const writes: Promise<void>[] = [];
      const parser = new Parser({
        strict: true,
        onReadEntry: (entry: ReadEntry) => {
          const hash = entry.path.split('/').pop() ?? '';
          if (entry.type !== 'File' || !wanted.has(hash)) return entry.resume();
          const file = join(incoming, hash);
          writes.push(
            writeHashed(entry, createWriteStream(file)).then((written) => {
              if (written.hash !== hash) throw new MoltError('MOLT_ERR_INTERNAL', `downloaded file ${hash.slice(0, 12)}… does not match its hash; pull again`);
              have.set(hash, file);
            }),
          );
        },
      });
      await pipeline(body, parser);
      await Promise.all(writes);
      const lacking = needed.find((h) => !have.has(h));
      if (lacking) throw new MoltError('MOLT_ERR_INTERNAL', `the server did not send file ${lacking.slice(0, 12)}…; pull again`);
    }
    mkdirSync(staging, { recursive: true });
    for (const e of tree.entries) {
      const target = join(staging, e.path);
      mkdirSync(dirname(target), { recursive: true });
      if (e.type === 'symlink') symlinkSync(e.target, target);
      else {
        copyFileSync(have.get(e.hash)!, target);
        chmodSync(target, e.executable ? 0o755 : 0o644);
      }
    }
    const old = `${dir}.old-${process.pid}`;
    if (existsSync(dir)) renameSync(dir, old);
    renameSync(staging, dir);
    rmSync(old, { recursive: true, force: true });
  } finally {
    rmSync(staging, { recursive: true, force: true });
    rmSync(incoming, { recursive: true, force: true });
  }
  writeState(volume.id, { server: client.server, namespace: volume.namespace, name: volume.name, revision: revision.revision, treeHash: revision.treeHash });
  return { revision, downloaded: needed.length, dir };
}

/** Makes an empty local copy of a volume with no revision yet, so that files can be added there. */
export function initEmpty(client: Client, volume: VolumeRow): string {
  const dir = volumePath(volume.id);
  mkdirSync(dir, { recursive: true });
  if (!readState(volume.id)) writeState(volume.id, { server: client.server, namespace: volume.namespace, name: volume.name, revision: '', treeHash: EMPTY_TREE_HASH });
  return dir;
}

/**
 * Pushes a directory (default: the local copy) as the volume's next revision, sending only the
 * files the server lacks. From the local copy, the push is refused if someone else pushed since
 * it was pulled, unless `force`.
 */
export async function push(client: Client, volume: VolumeRow, dir?: string, opts: { force?: boolean } = {}): Promise<PushOutcome> {
  const fromCache = dir === undefined;
  const root = dir ?? volumePath(volume.id);
  if (!existsSync(root)) {
    throw new MoltError('MOLT_ERR_BAD_REQUEST', `${root} does not exist; pass the directory to push, or run \`molt volume get ${volume.name}\` to make the local copy`);
  }
  const scanned = await scanIndexed(root);
  const plan = await planUpload(client, `${base(volume)}/blobs/missing`, scanned);
  const state = fromCache ? readState(volume.id) : undefined;
  const guard = fromCache && state && !opts.force ? `?base=${encodeURIComponent(state.revision)}` : '';
  const res = await client.upload<{ changed: boolean; revision: VolumeRevisionRow; uploaded: { blobs: number; bytes: number }; rolling: string[] }>(
    `${base(volume)}/revisions${guard}`,
    uploadArchive(root, scanned, plan),
  );
  if (fromCache) writeState(volume.id, { server: client.server, namespace: volume.namespace, name: volume.name, revision: res.revision.revision, treeHash: res.revision.treeHash });
  return { ...res, sent: { files: plan.paths.length, bytes: plan.bytes } };
}
