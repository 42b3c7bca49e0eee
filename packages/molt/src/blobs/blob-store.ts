import { createHash } from 'node:crypto';
import { chmodSync, copyFileSync, createReadStream, existsSync, mkdirSync, mkdtempSync, readFileSync, renameSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { sha256 } from '../ids.js';
import type { Tree } from './tree.js';

/**
 * Content-addressed files (sha256), stored read-only at `<root>/sha256/ab/<hash>`.
 * Releases and volume revisions are trees of these blobs.
 */
export class BlobStore {
  /**
   * The inode change time (ctime) of each blob when this process last knew its content matched its
   * name: it hashed it, or stored it after hashing it. Any write, chmod or link changes the ctime,
   * and no user but root can set it back, so an unchanged ctime means an unchanged blob: `verify`
   * need not read it again.
   */
  private readonly intact = new Map<string, number>();

  constructor(readonly root: string) {
    mkdirSync(join(root, 'sha256'), { recursive: true });
    mkdirSync(join(root, 'staging'), { recursive: true });
  }

  /** Where the blob with this hash lives (whether or not it exists). */
  path(hash: string): string {
    return join(this.root, 'sha256', hash.slice(0, 2), hash);
  }

  has(hash: string): boolean {
    return existsSync(this.path(hash));
  }

  /** Bytes of a stored blob, or undefined when it is not stored. */
  size(hash: string): number | undefined {
    try {
      return statSync(this.path(hash)).size;
    } catch {
      return undefined;
    }
  }

  /**
   * Whether the stored blob's content still hashes to its name (false when it does not, or is gone).
   * A blob unchanged since this process last checked it (same ctime) is not read again.
   */
  verify(hash: string): Promise<boolean> {
    const known = this.intact.get(hash);
    if (known !== undefined && known === this.ctime(hash)) return Promise.resolve(true);
    return new Promise((resolvePromise) => {
      const h = createHash('sha256');
      createReadStream(this.path(hash), { highWaterMark: 256 * 1024 })
        .on('data', (chunk) => h.update(chunk))
        .on('error', () => resolvePromise(false))
        .on('end', () => {
          const ok = h.digest('hex') === hash;
          if (ok) this.markIntact(hash);
          resolvePromise(ok);
        });
    });
  }

  /**
   * Records that the blob is as it should be now: called after the server itself changed its inode
   * (stored it, hard-linked it) right after checking it.
   */
  markIntact(hash: string): void {
    const ctime = this.ctime(hash);
    if (ctime !== undefined) this.intact.set(hash, ctime);
  }

  private ctime(hash: string): number | undefined {
    try {
      return statSync(this.path(hash)).ctimeMs;
    } catch {
      return undefined;
    }
  }

  /**
   * Moves a blob whose content no longer matches its hash out of the store, to `corrupt/` (kept for
   * inspection): the store then lacks it, so the next upload that needs it sends it again.
   */
  quarantine(hash: string): string | undefined {
    this.intact.delete(hash);
    const dest = join(this.root, 'corrupt', `${hash}-${Date.now()}`);
    try {
      mkdirSync(join(this.root, 'corrupt'), { recursive: true });
      renameSync(this.path(hash), dest);
      return dest;
    } catch {
      return undefined;
    }
  }

  /** A fresh staging directory on the same file system, so that commits are renames. */
  stagingDir(): string {
    return mkdtempSync(join(this.root, 'staging', 'up-'));
  }

  /** Moves a verified file (its sha256 is `hash`) into the store. */
  commitFile(src: string, hash: string): void {
    const dest = this.path(hash);
    if (existsSync(dest)) {
      rmSync(src, { force: true });
      return;
    }
    mkdirSync(join(this.root, 'sha256', hash.slice(0, 2)), { recursive: true });
    chmodSync(src, 0o444);
    renameSync(src, dest);
    // Its content was hashed as it arrived.
    this.markIntact(hash);
  }

  /** A stored blob as UTF-8 text (trees and manifests). */
  readText(hash: string): string {
    return readFileSync(this.path(hash), 'utf8');
  }

  /** A stored tree (a release or a volume revision). */
  readTree(hash: string): Tree {
    return JSON.parse(this.readText(hash)) as Tree;
  }

  /** Stores bytes and returns their hash. */
  putBytes(data: string | Uint8Array): string {
    const hash = sha256(data);
    if (!this.has(hash)) {
      const dir = this.stagingDir();
      const tmp = join(dir, 'blob');
      writeFileSync(tmp, data);
      this.commitFile(tmp, hash);
      rmSync(dir, { recursive: true, force: true });
    }
    return hash;
  }

  /** Copies a local file whose hash is known into the store. */
  putFile(src: string, hash: string): void {
    if (this.has(hash)) return;
    const dir = this.stagingDir();
    const tmp = join(dir, 'blob');
    copyFileSync(src, tmp);
    this.commitFile(tmp, hash);
    rmSync(dir, { recursive: true, force: true });
  }
}
