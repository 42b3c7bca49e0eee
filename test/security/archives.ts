import { createHash } from 'node:crypto';
import { existsSync, readdirSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { Header } from 'tar';

/** One entry of a hand-made tar; `size` may lie about the body, as an attacker's header would. */
export interface TarEntry {
  path: string;
  type?: string;
  body?: string | Buffer;
  linkpath?: string;
  size?: number;
}

/** Builds a tar by hand, so that entries a real tool would refuse to write can be sent. */
export function tarOf(entries: TarEntry[], end = true): Buffer {
  const blocks: Buffer[] = [];
  for (const e of entries) {
    const body = Buffer.isBuffer(e.body) ? e.body : Buffer.from(e.body ?? '');
    const isFile = !e.type || e.type === 'File';
    const h = new Header({ path: e.path, mode: 0o644, size: e.size ?? (isFile ? body.length : 0), mtime: new Date(0), type: (e.type ?? 'File') as never, linkpath: e.linkpath, uid: 0, gid: 0 });
    h.encode();
    blocks.push(h.block!);
    if (isFile) blocks.push(body, Buffer.alloc((512 - (body.length % 512)) % 512));
  }
  if (end) blocks.push(Buffer.alloc(1024));
  return Buffer.concat(blocks);
}

/** The `MOLT-TREE.json` entry declaring `entries`. */
export const treeWith = (entries: unknown[]): TarEntry => ({ path: 'MOLT-TREE.json', body: JSON.stringify({ entries }) });

/** A file entry of a tree with its real hash and size (or a declared one). */
export function fileEntry(path: string, content: string | Buffer, declaredSize?: number) {
  const body = Buffer.isBuffer(content) ? content : Buffer.from(content);
  return { path, type: 'file', hash: createHash('sha256').update(body).digest('hex'), size: declaredSize ?? body.length };
}

export const sha256 = (content: string | Buffer) => createHash('sha256').update(content).digest('hex');

/** Files under a directory, recursively (0 when it does not exist). */
export function countFiles(dir: string): number {
  if (!existsSync(dir)) return 0;
  let n = 0;
  for (const name of readdirSync(dir)) {
    const p = join(dir, name);
    n += statSync(p).isDirectory() ? countFiles(p) : 1;
  }
  return n;
}

/** Names under `dir` (recursively) that look like a half-built tree or a staged upload. */
export function leftovers(dataDir: string): string[] {
  const out: string[] = [];
  const walk = (dir: string, depth: number) => {
    if (!existsSync(dir) || depth > 5) return;
    for (const name of readdirSync(dir)) {
      const p = join(dir, name);
      if (name.includes('.tmp-')) out.push(p);
      else if (statSync(p).isDirectory() && !/^[0-9a-f]{64}$/.test(name)) walk(p, depth + 1);
    }
  };
  walk(join(dataDir, 'apps'), 0);
  walk(join(dataDir, 'trees'), 0);
  for (const name of existsSync(join(dataDir, 'blobs', 'staging')) ? readdirSync(join(dataDir, 'blobs', 'staging')) : []) out.push(join(dataDir, 'blobs', 'staging', name));
  return out;
}
