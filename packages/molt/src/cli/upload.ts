import { createWriteStream } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { pipeline } from 'node:stream/promises';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { Header } from 'tar';
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

/** A tar header block for a regular file, padded data follows it. */
function headerBlock(path: string, size: number): Buffer {
  const header = new Header({ path, mode: 0o644, size, mtime: new Date(0), type: 'File', uid: 0, gid: 0 });
  header.encode();
  return header.block!;
}

const padding = (size: number) => Buffer.alloc((512 - (size % 512)) % 512);

/** How many files are read ahead of the one being sent. */
const READ_AHEAD = 16;

/**
 * A tar stream: `MOLT-TREE.json` first, then only the files the server lacks. Files are read
 * whole, several ahead of the one being sent, so that a tree of many small files is not paced
 * by one open/read/close after another.
 */
export function uploadArchive(root: string, scanned: ScannedTree, plan: UploadPlan): Readable {
  async function* blocks(): AsyncGenerator<Buffer> {
    const treeBytes = Buffer.from(encodeTree(scanned.tree));
    yield headerBlock(TREE_ENTRY, treeBytes.length);
    yield treeBytes;
    yield padding(treeBytes.length);
    const reads: Promise<Buffer>[] = [];
    let next = 0;
    const fill = () => {
      while (next < plan.paths.length && reads.length < READ_AHEAD) reads.push(readFile(join(root, plan.paths[next++]!)));
    };
    fill();
    for (const path of plan.paths) {
      const data = await reads.shift()!;
      fill();
      yield headerBlock(path, data.length);
      yield data;
      yield padding(data.length);
    }
    yield Buffer.alloc(1024); // end of archive
  }
  return Readable.from(blocks(), { objectMode: false });
}

/**
 * A release (or any tree) as one file: the same archive an upload sends, holding every file.
 * `POST …/releases` takes it as it is (what the dashboard's upload does).
 */
export async function writeTreeFile(root: string, scanned: ScannedTree, file: string): Promise<void> {
  const seen = new Set<string>();
  const all: UploadPlan = { paths: [], bytes: 0 };
  for (const e of scanned.tree.entries) {
    if (e.type !== 'file' || seen.has(e.hash)) continue;
    seen.add(e.hash);
    all.paths.push(e.path);
    all.bytes += e.size;
  }
  await pipeline(uploadArchive(root, scanned, all), createWriteStream(file));
}
