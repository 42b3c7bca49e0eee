import { readFileSync } from 'node:fs';
import type { BlobStore } from '../blobs/blob-store.js';
import { fileHashes } from '../blobs/tree.js';
import { MoltError } from '../errors.js';
import { sha256 } from '../ids.js';
import type { Store } from '../store/store.js';

/** Bytes sent to the database in one statement. */
const BATCH_BYTES = 8 * 1024 * 1024;

/**
 * On a shared database (PostgreSQL), the blobs of every release and volume revision are kept in it
 * as well as in the data dir, so whichever server leads next can run any app: a tree is published
 * (its blob and its files' blobs) before the release or revision naming it is recorded, and fetched
 * into a data dir that lacks it before it is materialized. On SQLite the data dir is the only copy
 * and both do nothing.
 */
export class SharedBlobs {
  constructor(
    private readonly store: Store,
    private readonly blobs: BlobStore,
  ) {}

  get shared(): boolean {
    return this.store.dialect === 'postgres';
  }

  /** Copies the blobs of a tree that the database lacks into it. */
  async publish(treeHash: string): Promise<void> {
    if (!this.shared) return;
    const missing = await this.store.missingBlobs([treeHash, ...fileHashes(this.blobs.readTree(treeHash))]);
    let batch: { hash: string; data: Buffer }[] = [];
    let bytes = 0;
    for (const hash of missing) {
      const data = readFileSync(this.blobs.path(hash));
      batch.push({ hash, data });
      bytes += data.length;
      if (bytes >= BATCH_BYTES) {
        await this.store.putBlobs(batch);
        batch = [];
        bytes = 0;
      }
    }
    await this.store.putBlobs(batch);
  }

  /** Brings the blobs of a tree that the data dir lacks from the database. */
  async fetch(treeHash: string): Promise<void> {
    if (!this.shared) return;
    await this.fetchOne(treeHash);
    for (const hash of new Set(fileHashes(this.blobs.readTree(treeHash)))) await this.fetchOne(hash);
  }

  /**
   * Brings the tree blobs (not their files) of every release and volume revision the database
   * records, that another server may have pushed: what the control plane reads of them is then here.
   */
  async fetchTrees(): Promise<void> {
    if (!this.shared) return;
    for (const ns of await this.store.listNamespaces()) {
      for (const r of await this.store.listReleases(ns.name)) await this.fetchOne(r.id);
      for (const v of await this.store.listVolumes(ns.name)) for (const rev of await this.store.listVolumeRevisions(v.id)) await this.fetchOne(rev.treeHash);
    }
  }

  private async fetchOne(hash: string): Promise<void> {
    if (this.blobs.has(hash)) return;
    const data = await this.store.getBlob(hash);
    if (!data) throw new MoltError('MOLT_ERR_MISSING_BLOB', `blob ${hash} is neither in this data dir nor in the database; push the release or volume again`);
    if (sha256(data) !== hash) throw new MoltError('MOLT_ERR_CORRUPT_BLOB', `blob ${hash} in the database does not match its hash; push the release or volume again`);
    this.blobs.putBytes(data);
  }
}
