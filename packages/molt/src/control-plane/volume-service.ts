import type { Readable } from 'node:stream';
import { NAME } from '../names.js';
import { ingestArchive } from '../blobs/ingest-archive.js';
import { fileHashes, type Tree, treeSize } from '../blobs/tree.js';
import type { AppSpec } from '../config/app-spec.js';
import { MoltError } from '../errors.js';
import { newId } from '../ids.js';
import type { ResolvedVolume, VolumeGrantRow, VolumeRevisionRow, VolumeRow } from '../store/types.js';
import { type Principal, requireRole } from './auth.js';
import type { ControlPlane } from './control-plane.js';


/** `NNNNNN-xxx`: the sequence, a dash, the first 3 hex digits of the tree hash. */
export function revisionName(seq: number, treeHash: string): string {
  return `${String(seq).padStart(6, '0')}-${treeHash.slice(0, 3)}`;
}

/** `vol` (the app's own namespace) or `owner-ns/vol` (a volume shared with it). */
export function parseVolumeRef(ref: string, namespace: string): { namespace: string; name: string } {
  const slash = ref.indexOf('/');
  return slash < 0 ? { namespace, name: ref } : { namespace: ref.slice(0, slash), name: ref.slice(slash + 1) };
}

/** What a caller may do with a volume. */
export type VolumeRight = 'read' | 'write' | 'own';

const RIGHT_WORDS: Record<VolumeRight, string> = { read: 'read or mount', write: 'push to', own: 'delete or share' };

export interface VolumeDetail {
  volume: VolumeRow;
  latest: VolumeRevisionRow | undefined;
  grants: VolumeGrantRow[];
  /** Every revision, oldest first. */
  revisions: VolumeRevisionRow[];
}

export interface PushResult {
  volume: VolumeRow;
  /** The new revision, or the latest one when nothing changed. */
  revision: VolumeRevisionRow;
  changed: boolean;
  uploaded: { blobs: number; bytes: number };
  /** Apps that follow the volume's latest revision and are being rolled to it. */
  rolling: string[];
}

/**
 * Versioned volumes: trees of blobs like releases. A push that changes the tree makes the next
 * revision; apps that follow the latest are rolled to it; pinned apps stay where they are.
 */
export class VolumeService {
  constructor(private readonly cp: ControlPlane) {}

  /**
   * The volume `name` of `namespace` if `p` has `right` on it: its own namespace's roles
   * (invoker reads, deployer pushes, admin shares), or a grant to the caller's namespace.
   */
  async access(p: Principal, namespace: string, name: string, right: VolumeRight): Promise<VolumeRow> {
    const volume = await this.cp.store.getVolume(namespace, name);
    const own = p.namespace === '*' || p.namespace === namespace;
    if (own) {
      if (!volume) throw new MoltError('MOLT_ERR_VOLUME_NOT_FOUND', `no volume ${name} in namespace ${namespace}; create it with \`molt volume create ${name}\``);
      requireRole(p, namespace, right === 'read' ? 'invoker' : right === 'write' ? 'deployer' : 'admin');
      return volume;
    }
    const grant = volume && (await this.grantTo(volume, p.namespace));
    // A foreign caller learns nothing about volumes it was not given.
    if (!volume || !grant) {
      throw new MoltError(
        'MOLT_ERR_FORBIDDEN',
        `namespace ${p.namespace} has no right to ${RIGHT_WORDS[right]} volume ${namespace}/${name}; an admin of ${namespace} can share it with \`molt volume grant ${name} --namespace ${p.namespace}${right === 'write' ? ' --write' : ''} --owner ${namespace}\``,
      );
    }
    if (right === 'own') {
      throw new MoltError('MOLT_ERR_FORBIDDEN', `only namespace ${namespace} can ${RIGHT_WORDS.own} volume ${namespace}/${name}; namespace ${p.namespace} has a ${grant.write ? 'write' : 'read'} grant`);
    }
    if (right === 'write' && !grant.write) {
      throw new MoltError(
        'MOLT_ERR_FORBIDDEN',
        `namespace ${p.namespace} may read volume ${namespace}/${name} but not push to it; an admin of ${namespace} can allow it with \`molt volume grant ${name} --namespace ${p.namespace} --write --owner ${namespace}\``,
      );
    }
    if (right === 'write') requireRole(p, p.namespace, 'deployer');
    return volume;
  }

  async create(p: Principal, namespace: string, name: string): Promise<VolumeRow> {
    requireRole(p, namespace, 'deployer');
    if (!NAME.test(name)) {
      throw new MoltError('MOLT_ERR_BAD_REQUEST', `volume name ${JSON.stringify(name)} is invalid; use lower-case letters, digits and dashes, starting with a letter (at most 63)`);
    }
    if (!(await this.cp.store.getNamespace(namespace))) {
      throw new MoltError('MOLT_ERR_NAMESPACE_NOT_FOUND', `namespace ${namespace} does not exist; create it with \`molt namespace create ${namespace}\``);
    }
    if (await this.cp.store.getVolume(namespace, name)) {
      throw new MoltError('MOLT_ERR_ALREADY_EXISTS', `volume ${name} already exists in namespace ${namespace}; push to it with \`molt volume push ${name}\``);
    }
    const now = new Date().toISOString();
    const volume: VolumeRow = { id: newId(), namespace, name, latestSeq: 0, createdAt: now, updatedAt: now };
    await this.cp.store.insertVolume(volume);
    await this.cp.events.append({ namespace, type: 'volume.created', message: `volume ${name} created` });
    return volume;
  }

  /** The namespace's volumes and those shared with it, each with its latest revision. */
  async list(p: Principal, namespace: string): Promise<(VolumeRow & { latest: VolumeRevisionRow | undefined; shared?: 'read' | 'write' })[]> {
    requireRole(p, namespace, 'invoker');
    const own = await this.cp.store.listVolumes(namespace);
    const shared = await this.cp.store.listSharedVolumes(namespace);
    const out = [];
    for (const v of own) out.push({ ...v, latest: await this.latest(v) });
    for (const v of shared) {
      const { write, ...volume } = v;
      out.push({ ...volume, latest: await this.latest(volume), shared: write ? ('write' as const) : ('read' as const) });
    }
    return out;
  }

  async detail(p: Principal, namespace: string, name: string): Promise<VolumeDetail> {
    const volume = await this.access(p, namespace, name, 'read');
    const revisions = await this.cp.store.listVolumeRevisions(volume.id);
    return { volume, latest: revisions.find((r) => r.seq === volume.latestSeq), grants: await this.cp.store.listVolumeGrants(volume.id), revisions };
  }

  /** One revision (default: the latest) with its tree. */
  async tree(p: Principal, namespace: string, name: string, revision?: string): Promise<{ revision: VolumeRevisionRow; tree: Tree }> {
    const volume = await this.access(p, namespace, name, 'read');
    const rev = await this.revision(volume, revision);
    return { revision: rev, tree: this.cp.blobs.readTree(rev.treeHash) };
  }

  /**
   * Takes an upload (the tree and the blobs the server lacks), and makes the next revision if the
   * tree differs from the latest. With `base`, refuses when someone else pushed since that revision.
   */
  async push(p: Principal, namespace: string, name: string, body: Readable, base?: string): Promise<PushResult> {
    const volume = await this.access(p, namespace, name, 'write');
    const { maxVolumeBytes, maxUploadFiles } = this.cp.opts;
    const limits = {
      maxBytes: maxVolumeBytes + 64 * 1024 * 1024,
      maxBytesFlag: '--max-volume-bytes',
      maxFiles: maxUploadFiles,
      maxTreeBytes: { bytes: maxVolumeBytes, flag: '--max-volume-bytes' },
    };
    // The uploader's namespace (the volume's own for the server admin) decides which blobs it may skip sending.
    const uploader = p.namespace === '*' ? namespace : p.namespace;
    return this.cp.uploads.run(async () => {
      const upload = await ingestArchive(body, this.cp.blobs, limits, (hashes) => this.cp.blobAccess.usable(uploader, hashes));
      try {
        const latest = await this.latest(volume);
        if (base !== undefined && (latest?.revision ?? '') !== base) {
          throw new MoltError(
            'MOLT_ERR_CONFLICT',
            `volume ${name} changed since revision ${base || '(none)'}: the latest is ${latest?.revision ?? '(none)'}; pull it (\`molt volume pull ${name}\`), redo your change and push again, or push with --force to replace it`,
          );
        }
        const changed = !latest || latest.treeHash !== upload.hash;
        const addedBytes = changed ? this.addedBytes(latest, upload.tree) : 0;
        // Committed even when the tree is unchanged: a push after a corrupt blob was removed restores it.
        const store = async (): Promise<PushResult> => {
          const uploaded = { blobs: upload.commit(), bytes: upload.receivedBytes };
          await this.cp.blobAccess.record(namespace, upload.tree);
          if (!changed) return { volume, revision: latest!, changed: false, uploaded, rolling: [] };
          const seq = volume.latestSeq + 1;
          const rev: VolumeRevisionRow = {
            volumeId: volume.id,
            seq,
            revision: revisionName(seq, upload.hash),
            treeHash: upload.hash,
            files: upload.tree.entries.length,
            size: treeSize(upload.tree),
            createdAt: new Date().toISOString(),
            createdBy: p.tokenId,
            addedBytes,
          };
          await this.cp.sharedBlobs.publish(upload.hash);
          if (!(await this.cp.store.insertVolumeRevision(rev, volume.latestSeq))) {
            throw new MoltError('MOLT_ERR_CONFLICT', `another push to volume ${name} finished first; pull it and push again`);
          }
          const updated = { ...volume, latestSeq: seq, updatedAt: rev.createdAt };
          await this.cp.events.append({ namespace, type: 'volume.pushed', message: `volume ${name} revision ${rev.revision}: ${rev.files} file(s), ${rev.size} B` });
          return { volume: updated, revision: rev, changed: true, uploaded, rolling: [] };
        };
        if (!changed) return await store();
        const pushed = await this.cp.quotas.admit(namespace, () => this.cp.quotas.checkVolumeBytes(namespace, name, addedBytes), store);
        // Outside the admission: rolling the apps that follow the volume admits changes of its own.
        return { ...pushed, rolling: await this.cp.apps.followVolume(pushed.volume, pushed.revision) };
      } finally {
        upload.discard();
      }
    });
  }

  /** Bytes of the distinct blobs of `tree` that the revision before it did not hold. */
  private addedBytes(before: VolumeRevisionRow | undefined, tree: Tree): number {
    const held = new Set(before ? fileHashes(this.cp.blobs.readTree(before.treeHash)) : []);
    let added = 0;
    for (const e of tree.entries) {
      if (e.type !== 'file' || held.has(e.hash)) continue;
      held.add(e.hash);
      added += e.size;
    }
    return added;
  }

  async delete(p: Principal, namespace: string, name: string): Promise<void> {
    const volume = await this.access(p, namespace, name, 'own');
    const users = (await this.cp.apps.usersOf((r) => r.volumes.some((v) => v.volumeId === volume.id))).map((a) => `${a.namespace}/${a.name}`);
    if (users.length > 0) {
      throw new MoltError('MOLT_ERR_VOLUME_IN_USE', `volume ${name} is used by app(s) ${users.join(', ')}; remove it from their config and update them, or delete them, first`);
    }
    await this.cp.store.deleteVolume(volume.id);
    await this.cp.events.append({ namespace, type: 'volume.deleted', message: `volume ${name} deleted` });
  }

  async grant(p: Principal, namespace: string, name: string, to: string, write: boolean): Promise<VolumeGrantRow> {
    const volume = await this.access(p, namespace, name, 'own');
    if (to === namespace) throw new MoltError('MOLT_ERR_BAD_REQUEST', `volume ${name} already belongs to namespace ${namespace}`);
    if (!(await this.cp.store.getNamespace(to))) throw new MoltError('MOLT_ERR_NAMESPACE_NOT_FOUND', `namespace ${to} does not exist`);
    const grant: VolumeGrantRow = { volumeId: volume.id, namespace: to, write, createdAt: new Date().toISOString() };
    await this.cp.store.putVolumeGrant(grant);
    await this.cp.events.append({ namespace, type: 'volume.granted', message: `volume ${name} shared with ${to} (${write ? 'read and write' : 'read'})` });
    return grant;
  }

  async revoke(p: Principal, namespace: string, name: string, from: string): Promise<void> {
    const volume = await this.access(p, namespace, name, 'own');
    if (!(await this.cp.store.deleteVolumeGrant(volume.id, from))) {
      throw new MoltError('MOLT_ERR_NOT_FOUND', `volume ${name} is not shared with namespace ${from}; see \`molt volume get ${name}\``);
    }
    await this.cp.events.append({ namespace, type: 'volume.revoked', message: `volume ${name} no longer shared with ${from}` });
  }

  /**
   * The volume revisions an app revision of `namespace` runs with: pinned ones as given,
   * `useLatest` ones at the volume's latest. Refuses volumes the namespace may not read and
   * volumes with nothing pushed yet.
   */
  async resolve(namespace: string, refs: AppSpec['volumes']): Promise<ResolvedVolume[]> {
    const out: ResolvedVolume[] = [];
    for (const ref of refs) {
      const where = parseVolumeRef(ref.name, namespace);
      const volume = await this.cp.store.getVolume(where.namespace, where.name);
      const granted = volume && (where.namespace === namespace || (await this.grantTo(volume, namespace)) !== undefined);
      if (!volume || !granted) {
        throw new MoltError(
          where.namespace === namespace ? 'MOLT_ERR_VOLUME_NOT_FOUND' : 'MOLT_ERR_FORBIDDEN',
          where.namespace === namespace
            ? `the app uses volume ${ref.name}, which does not exist in namespace ${namespace}; run \`molt app prepare\` or \`molt volume create ${ref.name}\` and push to it`
            : `the app uses volume ${ref.name}, which namespace ${namespace} may not read; an admin of ${where.namespace} can share it with \`molt volume grant ${where.name} --namespace ${namespace} --owner ${where.namespace}\``,
        );
      }
      const pinned = 'revision' in ref ? ref.revision : undefined;
      const rev = await this.revision(volume, pinned, true);
      out.push({ ref: ref.name, volumeId: volume.id, namespace: volume.namespace, name: volume.name, revision: rev.revision, treeHash: rev.treeHash, useLatest: pinned === undefined });
    }
    return out;
  }

  /** The grant a namespace holds on a volume of another, if any. */
  private async grantTo(volume: VolumeRow, namespace: string): Promise<VolumeGrantRow | undefined> {
    return (await this.cp.store.listVolumeGrants(volume.id)).find((g) => g.namespace === namespace);
  }

  private async latest(volume: VolumeRow): Promise<VolumeRevisionRow | undefined> {
    if (volume.latestSeq === 0) return undefined;
    return (await this.cp.store.listVolumeRevisions(volume.id)).find((r) => r.seq === volume.latestSeq);
  }

  private async revision(volume: VolumeRow, revision: string | undefined, forApp = false): Promise<VolumeRevisionRow> {
    const all = await this.cp.store.listVolumeRevisions(volume.id);
    const rev = revision === undefined ? all.find((r) => r.seq === volume.latestSeq) : all.find((r) => r.revision === revision);
    if (!rev) {
      const label = `${volume.namespace}/${volume.name}`;
      if (revision === undefined) {
        throw new MoltError('MOLT_ERR_VOLUME_NOT_FOUND', `volume ${label} has no revision yet; push files to it with \`molt volume push ${volume.name}\`${forApp ? ' or `molt app prepare`' : ''}`);
      }
      throw new MoltError('MOLT_ERR_REVISION_NOT_FOUND', `volume ${label} has no revision ${revision}; see \`molt volume get ${volume.name}\` for its revisions`);
    }
    return rev;
  }

}
