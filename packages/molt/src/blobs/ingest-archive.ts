import { createHash } from 'node:crypto';
import { createWriteStream, rmSync } from 'node:fs';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { Parser, type ReadEntry } from 'tar';
import { MoltError } from '../errors.js';
import type { BlobStore } from './blob-store.js';
import { assertSafeTree, encodeTree, treeHash, treeSize, unsafePathReason, type Tree } from './tree.js';

/** Files up to this size are written in one call; larger ones stream to disk. */
const SMALL_FILE = 4 * 1024 * 1024;
/** Bytes of small files that may wait to be written before the upload is paused. */
const MAX_PENDING_BYTES = 64 * 1024 * 1024;

/** The tar entry that carries the tree; every other entry is a file of that tree. */
export const TREE_ENTRY = 'MOLT-TREE.json';

export interface IngestLimits {
  /** Most bytes the upload body may have. */
  maxBytes: number;
  /** Most entries a tree may have. */
  maxFiles: number;
  /** Most bytes the tree's files may hold in all, with the server flag that sets it. */
  maxTreeBytes?: { bytes: number; flag: string };
}

export interface IngestResult {
  tree: Tree;
  hash: string;
  /** Blobs this upload added to the store. */
  added: number;
  /** Bytes of file content the upload carried. */
  receivedBytes: number;
}

/**
 * Reads an upload (a tar holding `MOLT-TREE.json` and the files whose blobs the server lacks),
 * checks it, and only then commits the new blobs and the tree to the store. Anything unsafe —
 * a `..` or absolute path, a link, a device, a FIFO, an entry over the size limit, a file whose
 * content does not match its hash, a blob the tree needs but nobody sent — is refused with the
 * entry named, and nothing is stored.
 */
export async function ingestArchive(body: Readable, blobs: BlobStore, limits: IngestLimits): Promise<IngestResult> {
  const staging = blobs.stagingDir();
  const staged = new Map<string, string>(); // hash -> staged file
  let treeJson = '';
  let treeSeen = false;
  let receivedBytes = 0;
  let failure: MoltError | undefined;
  const writes: Promise<void>[] = [];
  let counter = 0;

  const fail = (err: MoltError): void => {
    failure ??= err;
  };

  const parser = new Parser({
    strict: true,
    onReadEntry: (entry: ReadEntry) => {
      const path = entry.path.replace(/^\.\//, '');
      if (failure) return entry.resume();
      if (entry.type === 'Directory') return entry.resume();
      const reason = unsafePathReason(path.replace(/\/$/, ''));
      if (reason) {
        fail(new MoltError('MOLT_ERR_UNSAFE_ARCHIVE', `archive entry ${JSON.stringify(entry.path)} ${reason}; upload only paths inside the tree`));
        return entry.resume();
      }
      if (entry.type !== 'File' && entry.type !== 'OldFile' && entry.type !== 'ContiguousFile') {
        const kind = entry.type === 'SymbolicLink' || entry.type === 'Link' ? `a link to ${JSON.stringify(entry.linkpath)}` : `of type ${entry.type}`;
        fail(new MoltError('MOLT_ERR_UNSAFE_ARCHIVE', `archive entry ${JSON.stringify(entry.path)} is ${kind}; archives may hold regular files only (links are declared in ${TREE_ENTRY})`));
        return entry.resume();
      }
      if (path === TREE_ENTRY) {
        treeSeen = true;
        entry.on('data', (chunk: Buffer) => {
          treeJson += chunk.toString('utf8');
        });
        return;
      }
      const file = join(staging, `f${counter++}`);
      const hash = createHash('sha256');
      entry.on('data', (chunk: Buffer) => {
        hash.update(chunk);
        receivedBytes += chunk.length;
      });
      if (entry.size > SMALL_FILE) {
        writes.push(pipeline(entry, createWriteStream(file)).then(() => void staged.set(hash.digest('hex'), file)));
        return;
      }
      // Small files are gathered and written in one call, off the parser's path: the parser goes
      // on to the next entry at once instead of waiting for open, write and close of each file.
      const chunks: Buffer[] = [];
      entry.on('data', (chunk: Buffer) => chunks.push(chunk));
      entry.on('end', () => {
        const data = Buffer.concat(chunks);
        pendingBytes += data.length;
        writes.push(
          writeFile(file, data).then(() => {
            staged.set(hash.digest('hex'), file);
            pendingBytes -= data.length;
            if (pendingBytes <= MAX_PENDING_BYTES) resumeBody();
          }),
        );
      });
    },
  });

  let bodyBytes = 0;
  let pendingBytes = 0;
  let resumeBody = () => {};
  try {
    await new Promise<void>((resolvePromise, reject) => {
      body.on('data', (chunk: Buffer) => {
        bodyBytes += chunk.length;
        if (bodyBytes > limits.maxBytes) {
          body.destroy();
          reject(new MoltError('MOLT_ERR_UPLOAD_TOO_LARGE', `upload is over the limit of ${limits.maxBytes} bytes; raise --max-upload-bytes on the server or upload less`));
          return;
        }
        // Paused while the parser is full or too many small files wait to be written.
        if (!parser.write(chunk) || pendingBytes > MAX_PENDING_BYTES) body.pause();
      });
      resumeBody = () => {
        if (pendingBytes <= MAX_PENDING_BYTES) body.resume();
      };
      parser.on('drain', resumeBody);
      body.on('end', () => parser.end());
      body.on('error', reject);
      parser.on('error', (err: Error) =>
        reject(new MoltError('MOLT_ERR_UNSAFE_ARCHIVE', `upload is not a valid tar archive: ${err.message}`, { cause: err })),
      );
      parser.on('end', resolvePromise);
    });
    await Promise.all(writes);
    if (failure) throw failure;
    if (!treeSeen) throw new MoltError('MOLT_ERR_BAD_REQUEST', `upload has no ${TREE_ENTRY}; use \`molt\` to upload, it writes one`);
    let tree: unknown;
    try {
      tree = JSON.parse(treeJson);
    } catch (err) {
      throw new MoltError('MOLT_ERR_BAD_REQUEST', `${TREE_ENTRY} is not valid JSON: ${(err as Error).message}`);
    }
    assertSafeTree(tree);
    if (tree.entries.length > limits.maxFiles) {
      throw new MoltError('MOLT_ERR_UPLOAD_TOO_LARGE', `tree has ${tree.entries.length} entries, over the limit of ${limits.maxFiles}; raise the server's file limit or upload fewer files`);
    }
    const size = treeSize(tree);
    if (limits.maxTreeBytes && size > limits.maxTreeBytes.bytes) {
      throw new MoltError('MOLT_ERR_UPLOAD_TOO_LARGE', `tree holds ${size} bytes, over the limit of ${limits.maxTreeBytes.bytes}; remove files or raise ${limits.maxTreeBytes.flag} on the server`);
    }
    for (const entry of tree.entries) {
      if (entry.type === 'file' && !staged.has(entry.hash) && !blobs.has(entry.hash)) {
        throw new MoltError('MOLT_ERR_MISSING_BLOB', `file ${entry.path} (sha256 ${entry.hash.slice(0, 12)}…) was neither uploaded nor stored; upload it with the archive`);
      }
    }
    // Only blobs the tree uses enter the store; anything else sent is dropped with the staging dir.
    const used = new Set(tree.entries.flatMap((e) => (e.type === 'file' ? [e.hash] : [])));
    let added = 0;
    for (const [hash, file] of staged) {
      if (!used.has(hash)) continue;
      if (!blobs.has(hash)) added++;
      blobs.commitFile(file, hash);
    }
    const hash = treeHash(tree);
    blobs.putBytes(encodeTree(tree));
    return { tree, hash, added, receivedBytes };
  } finally {
    rmSync(staging, { recursive: true, force: true });
  }
}
