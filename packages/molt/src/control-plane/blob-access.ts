import type { BlobStore } from '../blobs/blob-store.js';
import { MoltError } from '../errors.js';
import { fileHashes, type Tree } from '../blobs/tree.js';
import type { Store } from '../store/store.js';

/**
 * Which stored blobs each namespace may use. A content hash is not a capability: a namespace learns
 * that the server has a blob, and may reference it in a tree without sending it, only if it sent
 * that blob itself or can read a tree that holds it (its own releases and volumes, volumes shared
 * with it). Everything else must be uploaded, which proves the uploader has the bytes.
 */
export class BlobAccess {
  constructor(
    private readonly store: Store,
    private readonly blobs: BlobStore,
  ) {}

  /** The hashes among `hashes` that `namespace` may use without sending them (and that are stored). */
  async usable(namespace: string, hashes: string[]): Promise<Set<string>> {
    const stored = [...new Set(hashes)].filter((h) => this.blobs.has(h));
    const usable = await this.store.grantedBlobs(namespace, stored);
    let rest = stored.filter((h) => !usable.has(h));
    // Volumes shared with the namespace: their trees are readable, so their blobs are usable.
    for (const volume of rest.length > 0 ? await this.store.listSharedVolumes(namespace) : []) {
      for (const rev of await this.store.listVolumeRevisions(volume.id)) {
        const inTree = new Set(fileHashes(this.blobs.readTree(rev.treeHash)));
        for (const h of rest) if (inTree.has(h)) usable.add(h);
        rest = rest.filter((h) => !usable.has(h));
        if (rest.length === 0) return usable;
      }
    }
    return usable;
  }

  /**
   * What `blobs/missing` answers a namespace: the hashes it must send, each once. A question about
   * more files than a tree may hold (`maxFiles`) is refused before any lookup.
   */
  async missing(namespace: string, hashes: string[], maxFiles: number): Promise<string[]> {
    if (hashes.length > maxFiles) {
      throw new MoltError('MOLT_ERR_UPLOAD_TOO_LARGE', `the tree has ${hashes.length} files, over the limit of ${maxFiles}; raise --max-upload-files on the server or upload fewer files`);
    }
    const usable = await this.usable(namespace, hashes);
    return [...new Set(hashes)].filter((h) => !usable.has(h));
  }

  /** The namespace holds a tree now: it may use every blob of it. */
  async record(namespace: string, tree: Tree): Promise<void> {
    await this.store.grantBlobs(namespace, fileHashes(tree));
  }

  /**
   * Grants each namespace the blobs of the trees it already holds, once, on a store that predates
   * grants (otherwise every existing blob would have to be sent again).
   */
  async backfill(): Promise<void> {
    if (await this.store.hasBlobGrants()) return;
    for (const ns of await this.store.listNamespaces()) {
      for (const release of await this.store.listReleases(ns.name)) await this.recordStored(ns.name, release.id);
      for (const volume of await this.store.listVolumes(ns.name)) {
        for (const rev of await this.store.listVolumeRevisions(volume.id)) await this.recordStored(ns.name, rev.treeHash);
      }
    }
  }

  private async recordStored(namespace: string, treeHash: string): Promise<void> {
    if (this.blobs.has(treeHash)) await this.record(namespace, this.blobs.readTree(treeHash));
  }
}
