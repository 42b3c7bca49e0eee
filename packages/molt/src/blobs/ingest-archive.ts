import { createHash } from 'node:crypto';
import { createWriteStream, readFileSync, rmSync, type WriteStream } from 'node:fs';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { Readable } from 'node:stream';
import { Parser, type ReadEntry } from 'tar';
import { MoltError } from '../errors.js';
import type { BlobStore } from './blob-store.js';
import { assertSafeTree, encodeTree, treeHash, unsafePathReason, type Tree, writeHashed } from './tree.js';

/** Files up to this size are written in one call; larger ones stream to disk. */
const SMALL_FILE = 4 * 1024 * 1024;
/** Bytes of small files that may wait to be written before the upload is paused. */
const MAX_PENDING_BYTES = 64 * 1024 * 1024;
/** Bytes of `MOLT-TREE.json` per allowed entry (paths are at most a few hundred bytes). */
const TREE_BYTES_PER_ENTRY = 1024;

/** The tar entry that carries the tree; every other entry is a file of that tree. */
export const TREE_ENTRY = 'MOLT-TREE.json';

export interface IngestLimits {
  /** Most bytes the upload may have, both as sent and once decompressed, with the flag that sets it. */
  maxBytes: number;
  maxBytesFlag: string;
  /** Most entries a tree may have. */
  maxFiles: number;
  /** Most bytes the tree's files may hold in all, with the server flag that sets it. */
  maxTreeBytes?: { bytes: number; flag: string };
}

/**
 * An upload that checked out, its new blobs still staged: the caller runs its own checks (manifest,
 * quota), then `commit`s, and `discard`s in every case (after a commit it only removes the rest).
 */
export interface StagedUpload {
  tree: Tree;
  hash: string;
  /** Bytes of file content the upload carried, decompressed. */
  receivedBytes: number;
  /** A file of the tree as text, from the upload or the store (e.g. a manifest to check before committing). */
  readText(hash: string): string;
  /** Moves the staged blobs the tree uses and the tree itself into the store; returns how many were new. */
  commit(): number;
  /** Removes whatever is still staged. */
  discard(): void;
}

const tooLarge = (message: string) => new MoltError('MOLT_ERR_UPLOAD_TOO_LARGE', message);

/**
 * Reads an upload (a tar, plain or gzip/zstd-compressed, holding `MOLT-TREE.json` and the files whose
 * blobs the server lacks) into a staging directory and checks it: anything unsafe — a `..` or absolute
 * path, a link, a device, a FIFO, a tree that is unsafe as a whole, an entry or a total over a limit
 * (counted in real, decompressed bytes, refused from the tar header before the bytes are read), a
 * declared size that is not the file's, a blob the tree needs but nobody sent and `mayReference` does
 * not allow — is refused with the entry named. Nothing reaches the store until `commit`; a refused
 * upload leaves no file behind, and no write outlives the call.
 */
export async function ingestArchive(
  body: Readable,
  blobs: BlobStore,
  limits: IngestLimits,
  /** Which stored blobs the uploader may use without sending them (a hash is not a capability). */
  mayReference: (hashes: string[]) => Promise<Set<string>>,
): Promise<StagedUpload> {
  const staging = blobs.stagingDir();
  const staged = new Map<string, { file: string; size: number }>();
  const writes = new Set<Promise<void>>();
  const maxTreeJson = limits.maxFiles * TREE_BYTES_PER_ENTRY + 64 * 1024;
  let treeJson = '';
  let treeSeen = false;
  /** Bytes of file content received; with the tree's own, what the decompressed limit counts. */
  let receivedBytes = 0;
  let inflatedBytes = 0;
  let failure: MoltError | undefined;
  let counter = 0;
  let pendingBytes = 0;
  let resumeBody = () => {};
  let abort: (err: MoltError) => void = () => {};
  /** Files being streamed to disk: closed at once if the upload is refused, so no write waits on a dead entry. */
  const streaming = new Set<WriteStream>();

  const fail = (err: MoltError): void => {
    failure ??= err;
    if (err.code === 'MOLT_ERR_UPLOAD_TOO_LARGE') abort(err);
  };
  /** Tracks a write so that none outlives the call, and none rejects unhandled. */
  const track = (write: Promise<void>): void => {
    const settled = write.catch((err: Error) => fail(new MoltError('MOLT_ERR_INTERNAL', `could not stage an uploaded file: ${err.message}`, { cause: err }))).finally(() => writes.delete(settled));
    writes.add(settled);
  };
  const count = (bytes: number): boolean => {
    inflatedBytes += bytes;
    if (inflatedBytes <= limits.maxBytes) return true;
    fail(tooLarge(`upload holds more than ${limits.maxBytes} bytes once decompressed; raise ${limits.maxBytesFlag} on the server or upload less`));
    return false;
  };

  const parser = new Parser({
    strict: true,
    onReadEntry: (entry: ReadEntry) => {
      const path = entry.path.replace(/^\.\//, '');
      if (failure || entry.type === 'Directory') return entry.resume();
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
      // The header says how big the entry is: a bomb is refused before its bytes are inflated.
      if (inflatedBytes + entry.size > limits.maxBytes) {
        fail(tooLarge(`archive entry ${JSON.stringify(entry.path)} declares ${entry.size} bytes, over the upload limit of ${limits.maxBytes}; raise ${limits.maxBytesFlag} on the server or upload less`));
        return entry.resume();
      }
      if (path === TREE_ENTRY) {
        treeSeen = true;
        if (entry.size > maxTreeJson) {
          fail(tooLarge(`${TREE_ENTRY} has ${entry.size} bytes, more than a tree of ${limits.maxFiles} entries needs; upload fewer files`));
          return entry.resume();
        }
        entry.on('data', (chunk: Buffer) => {
          if (count(chunk.length)) treeJson += chunk.toString('utf8');
        });
        return;
      }
      if (++counter > limits.maxFiles) {
        fail(tooLarge(`archive holds more than ${limits.maxFiles} files, over the limit of ${limits.maxFiles}; raise --max-upload-files on the server or upload fewer files`));
        return entry.resume();
      }
      const file = join(staging, `f${counter}`);
      const counted = (chunk: Buffer) => {
        receivedBytes += chunk.length;
        count(chunk.length);
      };
      if (entry.size > SMALL_FILE) {
        const out = createWriteStream(file);
        streaming.add(out);
        track(
          writeHashed(entry, out, counted)
            .then(({ hash, size }) => void staged.set(hash, { file, size }))
            .finally(() => streaming.delete(out)),
        );
        return;
      }
      // Small files are gathered and written in one call, off the parser's path: the parser goes
      // on to the next entry at once instead of waiting for open, write and close of each file.
      const hash = createHash('sha256');
      let size = 0;
      const done = () => void staged.set(hash.digest('hex'), { file, size });
      const chunks: Buffer[] = [];
      entry.on('data', (chunk: Buffer) => {
        hash.update(chunk);
        size += chunk.length;
        counted(chunk);
        chunks.push(chunk);
      });
      entry.on('end', () => {
        if (failure) return;
        const data = Buffer.concat(chunks);
        pendingBytes += data.length;
        track(
          writeFile(file, data)
            .then(done)
            .finally(() => {
              pendingBytes -= data.length;
              resumeBody();
            }),
        );
      });
    },
  });

  let bodyBytes = 0;
  let ended = false;
  const onData = (chunk: Buffer) => {
    if (ended) return;
    bodyBytes += chunk.length;
    if (bodyBytes > limits.maxBytes) {
      fail(tooLarge(`upload is over the limit of ${limits.maxBytes} bytes; raise ${limits.maxBytesFlag} on the server or upload less`));
      return;
    }
    // Paused while the parser is full or too many small files wait to be written.
    if (!parser.write(chunk) || pendingBytes > MAX_PENDING_BYTES) body.pause();
  };
  /**
   * Stops reading the upload. The rest of the body is read and dropped rather than the connection
   * cut, so the client gets the error (the reply closes the connection after it).
   */
  const stopReading = () => {
    ended = true;
    body.off('data', onData);
    body.resume();
    for (const out of streaming) out.destroy(new Error('upload refused'));
  };
  try {
    await new Promise<void>((resolvePromise, reject) => {
      abort = (err) => {
        if (ended) return;
        stopReading();
        parser.abort(err);
        reject(err);
      };
      body.on('data', onData);
      resumeBody = () => {
        if (!ended && pendingBytes <= MAX_PENDING_BYTES) body.resume();
      };
      parser.on('drain', resumeBody);
      body.on('end', () => parser.end());
      body.on('error', (err) => {
        ended = true;
        reject(err);
      });
      parser.on('error', (err: Error) => {
        if (ended) return;
        ended = true;
        // tar's own guard against compression bombs: the data inflates too much.
        const bomb = /decompression ratio/.test(err.message);
        reject(
          bomb
            ? tooLarge(`upload inflates too much to be a real archive (${err.message}); send it uncompressed or as a smaller archive`)
            : new MoltError('MOLT_ERR_UNSAFE_ARCHIVE', `upload is not a valid tar archive: ${err.message}`, { cause: err }),
        );
      });
      parser.on('end', () => {
        ended = true;
        resolvePromise();
      });
    });
    await settle(writes);
    if (failure) throw failure;
    const tree = parseTree(treeSeen, treeJson, limits);
    const sent = new Set<string>();
    const unsent: string[] = [];
    for (const e of tree.entries) {
      if (e.type !== 'file') continue;
      const mine = staged.get(e.hash);
      if (mine) {
        sent.add(e.hash);
        if (mine.size !== e.size) throw wrongSize(e.path, e.size, mine.size, 'sent');
      } else unsent.push(e.hash);
    }
    const usable = await mayReference([...new Set(unsent)]);
    for (const e of tree.entries) {
      if (e.type !== 'file' || sent.has(e.hash)) continue;
      const stored = usable.has(e.hash) ? blobs.size(e.hash) : undefined;
      if (stored === undefined) {
        throw new MoltError('MOLT_ERR_MISSING_BLOB', `file ${e.path} (sha256 ${e.hash.slice(0, 12)}…) was not in the upload; send its content with the archive (ask \`blobs/missing\` which files to send)`);
      }
      if (stored !== e.size) throw wrongSize(e.path, e.size, stored, 'stored');
    }
    const hash = treeHash(tree);
    return {
      tree,
      hash,
      receivedBytes,
      readText: (h) => (sent.has(h) ? readFileSync(staged.get(h)!.file, 'utf8') : blobs.readText(h)),
      commit() {
        let added = 0;
        // Only blobs the tree uses enter the store; anything else sent goes with the staging dir.
        for (const h of sent) {
          if (!blobs.has(h)) added++;
          blobs.commitFile(staged.get(h)!.file, h);
        }
        blobs.putBytes(encodeTree(tree));
        return added;
      },
      discard: () => rmSync(staging, { recursive: true, force: true }),
    };
  } catch (err) {
    stopReading();
    await settle(writes);
    rmSync(staging, { recursive: true, force: true });
    throw err;
  }
}

async function settle(writes: Set<Promise<void>>): Promise<void> {
  while (writes.size > 0) await Promise.all([...writes]);
}

function wrongSize(path: string, declared: number, actual: number, how: 'sent' | 'stored'): MoltError {
  return new MoltError('MOLT_ERR_BAD_REQUEST', `file ${path} declares ${declared} bytes in ${TREE_ENTRY}, but the content ${how} has ${actual}; declare the real size`);
}

function parseTree(seen: boolean, json: string, limits: IngestLimits): Tree {
  if (!seen) throw new MoltError('MOLT_ERR_BAD_REQUEST', `upload has no ${TREE_ENTRY}; use \`molt\` to upload, it writes one`);
  let tree: unknown;
  try {
    tree = JSON.parse(json);
  } catch (err) {
    throw new MoltError('MOLT_ERR_BAD_REQUEST', `${TREE_ENTRY} is not valid JSON: ${(err as Error).message}`);
  }
  if (tree && typeof tree === 'object' && Array.isArray((tree as Tree).entries) && (tree as Tree).entries.length > limits.maxFiles) {
    throw tooLarge(`tree has ${(tree as Tree).entries.length} entries, over the limit of ${limits.maxFiles}; raise --max-upload-files on the server or upload fewer files`);
  }
  assertSafeTree(tree);
  const size = tree.entries.reduce((n, e) => n + (e.type === 'file' ? e.size : 0), 0);
  if (limits.maxTreeBytes && size > limits.maxTreeBytes.bytes) {
    throw tooLarge(`tree holds ${size} bytes, over the limit of ${limits.maxTreeBytes.bytes}; remove files or raise ${limits.maxTreeBytes.flag} on the server`);
  }
  return tree;
}
