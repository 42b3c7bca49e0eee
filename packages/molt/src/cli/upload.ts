import { PassThrough, type Readable } from 'node:stream';
import { c as createTar, Header } from 'tar';
import { TREE_ENTRY } from '../blobs/ingest-archive.js';
import { encodeTree, type ScannedTree } from '../blobs/tree.js';
import type { Client } from './client.js';

export interface UploadPlan {
  /** Paths (relative to the root) of the files whose blobs the server lacks, one per blob. */
  paths: string[];
  bytes: number;
}

/** Asks the server (at `missingPath`, a `…/blobs/missing` endpoint) which blobs of a tree it lacks. */
export async function planUpload(client: Client, missingPath: string, scanned: ScannedTree): Promise<UploadPlan> {
  const hashes = [...scanned.files.keys()];
  const { missing } = await client.request<{ missing: string[] }>('POST', missingPath, { hashes });
  const wanted = new Set(missing);
  const paths: string[] = [];
  let bytes = 0;
  for (const e of scanned.tree.entries) {
    if (e.type === 'file' && wanted.has(e.hash)) {
      wanted.delete(e.hash);
      paths.push(e.path);
      bytes += e.size;
    }
  }
  return { paths, bytes };
}

/** A tar stream: `MOLT-TREE.json` first, then only the files the server lacks. */
export function uploadArchive(root: string, scanned: ScannedTree, plan: UploadPlan): Readable {
  const out = new PassThrough();
  const treeBytes = Buffer.from(encodeTree(scanned.tree));
  const header = new Header({ path: TREE_ENTRY, mode: 0o644, size: treeBytes.length, mtime: new Date(0), type: 'File', uid: 0, gid: 0 });
  header.encode();
  out.write(header.block!);
  out.write(treeBytes);
  const pad = (512 - (treeBytes.length % 512)) % 512;
  if (pad) out.write(Buffer.alloc(pad));
  if (plan.paths.length === 0) {
    // The server has every blob: the archive is the tree alone, then the end-of-archive blocks.
    out.end(Buffer.alloc(1024));
    return out;
  }
  const tar = createTar({ cwd: root, portable: true, noDirRecurse: true, follow: false }, plan.paths);
  tar.pipe(out);
  return out;
}
