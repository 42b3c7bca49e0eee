import { type Kysely, Migrator, type Selectable, sql } from 'kysely';
import type { Store } from './store.js';
import { type Database, migrations } from './schema.js';
import { MoltError } from '../errors.js';
import { revisionStatus, rolloutPhase, type StateMachine, workerStatus } from './lifecycle.js';
import type { AppRow, DomainRow, EventRow, LeaseRow, NamespaceQuota, NamespaceRow, ReleaseRow, RevisionRow, RolloutPhase, RolloutProgress, RolloutRow, TimerRow, TokenRow, VolumeGrantRow, VolumeRevisionRow, VolumeRow, WorkerRow, WorkerStatus } from './types.js';

type Row<T extends keyof Database> = Selectable<Database[T]>;

const toApp = (r: Row<'apps'>): AppRow => ({
  ...r,
  immutable: !!r.immutable,
  paused: !!r.paused,
  currentRevision: Number(r.currentRevision),
  permanentRevision: r.permanentRevision === null || r.permanentRevision === undefined ? null : Number(r.permanentRevision),
  probationUntil: r.probationUntil ?? null,
});
const toRelease = (r: Row<'releases'>): ReleaseRow => ({ ...r, manifest: JSON.parse(r.manifest), size: Number(r.size), files: Number(r.files) });
const toRevision = (r: Row<'revisions'>): RevisionRow => ({ ...r, revision: Number(r.revision), spec: JSON.parse(r.spec), volumes: JSON.parse(r.volumes), status: r.status as RevisionRow['status'] });
const toVolume = (r: Row<'volumes'>): VolumeRow => ({ ...r, latestSeq: Number(r.latestSeq) });
const toVolumeRevision = (r: Row<'volumeRevisions'>): VolumeRevisionRow => ({ ...r, seq: Number(r.seq), files: Number(r.files), size: Number(r.size), addedBytes: Number(r.addedBytes) });
const toNamespace = (r: Row<'namespaces'>): NamespaceRow => ({ ...r, uidOffset: Number(r.uidOffset ?? 0), quota: r.quota ? (JSON.parse(r.quota) as NamespaceQuota) : null });
/** Rows per `IN (…)` list: well under every dialect's limit on bound parameters. */
const CHUNK = 500;
const chunks = <T>(all: T[]): T[][] => Array.from({ length: Math.ceil(all.length / CHUNK) }, (_, i) => all.slice(i * CHUNK, (i + 1) * CHUNK));
const toGrant = (r: Row<'volumeGrants'>): VolumeGrantRow => ({ ...r, write: !!r.write });
const toWorker = (r: Row<'workers'>): WorkerRow => ({ ...r, revision: Number(r.revision) }) as WorkerRow;
const toRollout = ({ progress: _, ...r }: Row<'rollouts'>): RolloutRow => ({ ...r, fromRevision: Number(r.fromRevision), toRevision: Number(r.toRevision) }) as RolloutRow;
const toTimer = (r: Row<'timers'>): TimerRow => ({ ...r, payload: JSON.parse(r.payload) });
const toEvent = (r: Row<'events'>): EventRow => ({ ...r, id: Number(r.id) }) as EventRow;

/**
 * One status write checked against its state machine: read the status, check the move, then write
 * only if the status is still the one read (compare-and-set); a concurrent write in between makes it
 * read and check again rather than be overwritten.
 */
async function transition<S extends string>(
  machine: StateMachine<S>,
  subject: string,
  to: S,
  read: () => Promise<S | undefined>,
  write: (from: S) => Promise<bigint | number>,
  missing: () => Error,
): Promise<void> {
  for (;;) {
    const from = await read();
    if (from === undefined) throw missing();
    machine.check(subject, from, to);
    if (Number(await write(from)) > 0) return;
  }
}

function boolPatch(patch: object): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(patch)) out[k] = typeof v === 'boolean' ? (v ? 1 : 0) : v;
  return out;
}

async function insertEvent(db: Kysely<Database>, event: Omit<EventRow, 'id'>): Promise<EventRow> {
  const row = await db.insertInto('events').values(event as Database['events']).returning('id').executeTakeFirstOrThrow();
  return { ...event, id: Number(row.id) };
}

/** The Store over any kysely dialect; the dialect folders only build the `Kysely` instance. */
/** Rolls a claim of hostnames back when one of them is another app's. */
class DomainTaken extends Error {
  constructor(readonly holder: DomainRow) {
    super(`${holder.domain} is held by ${holder.namespace}/${holder.app}`);
  }
}

export class KyselyStore implements Store {
  constructor(
    private readonly db: Kysely<Database>,
    readonly dialect: 'sqlite' | 'postgres',
  ) {}

  async migrate(): Promise<void> {
    const all = migrations(this.dialect);
    const migrator = new Migrator({ db: this.db, provider: { getMigrations: async () => all } });
    const { error } = await migrator.migrateToLatest();
    if (error) throw error;
  }

  async close(): Promise<void> {
    await this.db.destroy();
  }

  async createNamespace(name: string): Promise<boolean> {
    for (let attempt = 0; ; attempt++) {
      try {
        // The next uid offset in the same statement; a concurrent create taking it fails the unique index.
        const res = await this.db
          .insertInto('namespaces')
          .columns(['name', 'createdAt', 'uidOffset'])
          .expression((eb) =>
            eb
              .selectFrom('namespaces')
              .select([sql<string>`cast(${name} as text)`.as('name'), sql<string>`cast(${new Date().toISOString()} as text)`.as('createdAt'), sql<number>`coalesce(max(${sql.ref('uidOffset')}), -1) + 1`.as('uidOffset')])
              // SQLite needs a WHERE in INSERT … SELECT … ON CONFLICT, or it cannot parse it.
              .where(sql<boolean>`true`),
          )
          .onConflict((oc) => oc.column('name').doNothing())
          .executeTakeFirst();
        return Number(res.numInsertedOrUpdatedRows ?? 0) > 0;
      } catch (err) {
        if (attempt >= 5 || (await this.getNamespace(name))) throw err;
      }
    }
  }

  async listNamespaces(): Promise<NamespaceRow[]> {
    return (await this.db.selectFrom('namespaces').selectAll().orderBy('name').execute()).map(toNamespace);
  }

  async getNamespace(name: string): Promise<NamespaceRow | undefined> {
    const r = await this.db.selectFrom('namespaces').selectAll().where('name', '=', name).executeTakeFirst();
    return r && toNamespace(r);
  }

  async setNamespaceQuota(name: string, quota: NamespaceQuota | null): Promise<void> {
    await this.db
      .updateTable('namespaces')
      .set({ quota: quota && Object.keys(quota).length > 0 ? JSON.stringify(quota) : null })
      .where('name', '=', name)
      .execute();
  }

  async grantBlobs(namespace: string, hashes: Iterable<string>): Promise<void> {
    for (const part of chunks([...new Set(hashes)])) {
      await this.db
        .insertInto('blobAccess')
        .values(part.map((hash) => ({ namespace, hash })))
        .onConflict((oc) => oc.columns(['namespace', 'hash']).doNothing())
        .execute();
    }
  }

  async grantedBlobs(namespace: string, hashes: string[]): Promise<Set<string>> {
    const out = new Set<string>();
    for (const part of chunks([...new Set(hashes)])) {
      const rows = await this.db.selectFrom('blobAccess').select('hash').where('namespace', '=', namespace).where('hash', 'in', part).execute();
      for (const r of rows) out.add(r.hash);
    }
    return out;
  }

  async hasBlobGrants(): Promise<boolean> {
    return (await this.db.selectFrom('blobAccess').select('hash').limit(1).executeTakeFirst()) !== undefined;
  }

  async volumeBytes(namespace: string): Promise<number> {
    const row = await this.db
      .selectFrom('volumeRevisions')
      .innerJoin('volumes', 'volumes.id', 'volumeRevisions.volumeId')
      .select((eb) => eb.fn.coalesce(eb.fn.sum<number>('volumeRevisions.addedBytes'), sql<number>`0`).as('bytes'))
      .where('volumes.namespace', '=', namespace)
      .executeTakeFirst();
    return Number(row?.bytes ?? 0);
  }

  async countReleases(namespace: string): Promise<number> {
    const row = await this.db.selectFrom('releases').select((eb) => eb.fn.countAll<number>().as('n')).where('namespace', '=', namespace).executeTakeFirst();
    return Number(row?.n ?? 0);
  }

  async insertToken(token: TokenRow): Promise<void> {
    await this.db.insertInto('tokens').values(token).execute();
  }

  async tokenByHash(hash: string): Promise<TokenRow | undefined> {
    return (await this.db.selectFrom('tokens').selectAll().where('hash', '=', hash).executeTakeFirst()) as TokenRow | undefined;
  }

  async getToken(id: string): Promise<TokenRow | undefined> {
    return (await this.db.selectFrom('tokens').selectAll().where('id', '=', id).executeTakeFirst()) as TokenRow | undefined;
  }

  async listTokens(namespace?: string): Promise<TokenRow[]> {
    let q = this.db.selectFrom('tokens').selectAll().orderBy('createdAt');
    if (namespace) q = q.where('namespace', '=', namespace);
    return (await q.execute()) as TokenRow[];
  }

  async revokeToken(id: string, at: string): Promise<boolean> {
    const res = await this.db.updateTable('tokens').set({ revokedAt: at }).where('id', '=', id).where('revokedAt', 'is', null).executeTakeFirst();
    return Number(res.numUpdatedRows) > 0;
  }

  async insertRelease(release: ReleaseRow): Promise<void> {
    await this.db
      .insertInto('releases')
      .values({ ...release, manifest: JSON.stringify(release.manifest) })
      .onConflict((oc) => oc.columns(['namespace', 'id']).doNothing())
      .execute();
  }

  async getRelease(namespace: string, id: string): Promise<ReleaseRow | undefined> {
    const r = await this.db.selectFrom('releases').selectAll().where('namespace', '=', namespace).where('id', '=', id).executeTakeFirst();
    return r && toRelease(r);
  }

  async deleteRelease(namespace: string, id: string): Promise<void> {
    await this.db.deleteFrom('releases').where('namespace', '=', namespace).where('id', '=', id).execute();
  }

  async listReleases(namespace: string, app?: string): Promise<ReleaseRow[]> {
    let q = this.db.selectFrom('releases').selectAll().where('namespace', '=', namespace).orderBy('createdAt', 'desc');
    if (app) q = q.where('app', '=', app);
    return (await q.execute()).map(toRelease);
  }

  async insertApp(app: AppRow): Promise<void> {
    await this.db.insertInto('apps').values(boolPatch(app) as Database['apps']).execute();
  }

  async getApp(namespace: string, name: string): Promise<AppRow | undefined> {
    const r = await this.db.selectFrom('apps').selectAll().where('namespace', '=', namespace).where('name', '=', name).executeTakeFirst();
    return r && toApp(r);
  }

  async listApps(namespace?: string): Promise<AppRow[]> {
    let q = this.db.selectFrom('apps').selectAll().orderBy('namespace').orderBy('name');
    if (namespace) q = q.where('namespace', '=', namespace);
    return (await q.execute()).map(toApp);
  }

  async updateApp(namespace: string, name: string, patch: Partial<Omit<AppRow, 'namespace' | 'name'>>): Promise<void> {
    await this.db
      .updateTable('apps')
      .set({ ...boolPatch(patch), updatedAt: new Date().toISOString() })
      .where('namespace', '=', namespace)
      .where('name', '=', name)
      .execute();
  }

  async claimRollout(namespace: string, name: string, rolloutId: string): Promise<boolean> {
    // One conditional UPDATE: atomic in both dialects, so two control planes cannot both win.
    const res = await this.db
      .updateTable('apps')
      .set({ rolloutId, updatedAt: new Date().toISOString() })
      .where('namespace', '=', namespace)
      .where('name', '=', name)
      .where('rolloutId', 'is', null)
      .executeTakeFirst();
    return Number(res.numUpdatedRows) > 0;
  }

  async beat(name: string, at: string): Promise<void> {
    await this.db.insertInto('heartbeats').values({ name, at }).onConflict((oc) => oc.column('name').doUpdateSet({ at })).execute();
  }

  async acquireLease(name: string, holder: string, info: string, now: string, expiresAt: string): Promise<LeaseRow> {
    // One statement: of two standbys racing for a lapsed lease, one updates it and the other's WHERE fails.
    await this.db
      .insertInto('leases')
      .values({ name, holder, info, expiresAt })
      .onConflict((oc) =>
        oc
          .column('name')
          .doUpdateSet({ holder, info, expiresAt })
          .where((eb) => eb.or([eb('leases.holder', '=', holder), eb('leases.expiresAt', '<', now)])),
      )
      .execute();
    return (await this.db.selectFrom('leases').selectAll().where('name', '=', name).executeTakeFirstOrThrow()) as LeaseRow;
  }

  async releaseLease(name: string, holder: string): Promise<void> {
    await this.db.deleteFrom('leases').where('name', '=', name).where('holder', '=', holder).execute();
  }

  async putBlobs(blobs: { hash: string; data: Buffer }[]): Promise<void> {
    if (blobs.length === 0) return;
    await this.db
      .insertInto('blobs')
      .values(blobs)
      .onConflict((oc) => oc.column('hash').doNothing())
      .execute();
  }

  async missingBlobs(hashes: string[]): Promise<string[]> {
    const have = new Set<string>();
    for (const part of chunks([...new Set(hashes)])) for (const r of await this.db.selectFrom('blobs').select('hash').where('hash', 'in', part).execute()) have.add(r.hash);
    return [...new Set(hashes)].filter((h) => !have.has(h));
  }

  async getBlob(hash: string): Promise<Buffer | undefined> {
    const r = await this.db.selectFrom('blobs').select('data').where('hash', '=', hash).executeTakeFirst();
    return r && Buffer.from(r.data);
  }

  async lastBeat(name: string): Promise<string | undefined> {
    return (await this.db.selectFrom('heartbeats').select('at').where('name', '=', name).executeTakeFirst())?.at;
  }

  async deleteApp(namespace: string, name: string): Promise<void> {
    await this.db.transaction().execute(async (trx) => {
      for (const table of ['revisions', 'workers', 'rollouts', 'events', 'timers'] as const) {
        await trx.deleteFrom(table).where('namespace', '=', namespace).where('app', '=', name).execute();
      }
      await trx.deleteFrom('domains').where('namespace', '=', namespace).where('app', '=', name).execute();
      await trx.deleteFrom('apps').where('namespace', '=', namespace).where('name', '=', name).execute();
    });
  }

  async insertRevision(rev: RevisionRow): Promise<void> {
    await this.db.insertInto('revisions').values({ ...rev, spec: JSON.stringify(rev.spec), volumes: JSON.stringify(rev.volumes) }).execute();
  }

  async getRevision(namespace: string, app: string, revision: number): Promise<RevisionRow | undefined> {
    const r = await this.db
      .selectFrom('revisions')
      .selectAll()
      .where('namespace', '=', namespace)
      .where('app', '=', app)
      .where('revision', '=', revision)
      .executeTakeFirst();
    return r && toRevision(r);
  }

  async listRevisions(namespace: string, app: string): Promise<RevisionRow[]> {
    const rows = await this.db.selectFrom('revisions').selectAll().where('namespace', '=', namespace).where('app', '=', app).orderBy('revision').execute();
    return rows.map(toRevision);
  }

  async setRevisionStatus(namespace: string, app: string, revision: number, status: RevisionRow['status'], reason: string | null = null): Promise<void> {
    await transition(
      revisionStatus,
      `revision ${revision} of ${namespace}/${app}`,
      status,
      async () => (await this.db.selectFrom('revisions').select('status').where('namespace', '=', namespace).where('app', '=', app).where('revision', '=', revision).executeTakeFirst())?.status as RevisionRow['status'] | undefined,
      async (from) =>
        (await this.db.updateTable('revisions').set({ status, reason }).where('namespace', '=', namespace).where('app', '=', app).where('revision', '=', revision).where('status', '=', from).executeTakeFirst()).numUpdatedRows,
      () => new MoltError('MOLT_ERR_REVISION_NOT_FOUND', `app ${namespace}/${app} has no revision ${revision}`),
    );
  }

  async insertWorker(worker: WorkerRow): Promise<void> {
    await this.db.insertInto('workers').values(worker).execute();
  }

  async updateWorker(id: string, patch: Partial<Omit<WorkerRow, 'id' | 'status'>>): Promise<void> {
    if ('status' in patch) throw new TypeError('a worker status changes through setWorkerStatus');
    await this.db.updateTable('workers').set(patch).where('id', '=', id).execute();
  }

  async setWorkerStatus(id: string, status: WorkerStatus, patch: Partial<Omit<WorkerRow, 'id' | 'status'>> = {}): Promise<void> {
    await transition(
      workerStatus,
      `worker ${id}`,
      status,
      async () => (await this.db.selectFrom('workers').select('status').where('id', '=', id).executeTakeFirst())?.status as WorkerStatus | undefined,
      async (from) => (await this.db.updateTable('workers').set({ ...patch, status }).where('id', '=', id).where('status', '=', from).executeTakeFirst()).numUpdatedRows,
      () => new MoltError('MOLT_ERR_NOT_FOUND', `no worker ${id}`),
    );
  }

  async listWorkers(namespace: string, app: string, all = false): Promise<WorkerRow[]> {
    let q = this.db.selectFrom('workers').selectAll().where('namespace', '=', namespace).where('app', '=', app).orderBy('createdAt').orderBy('id');
    if (!all) q = q.where('status', 'not in', ['TERMINATED', 'ERROR']);
    return (await q.execute()).map(toWorker);
  }

  async listLiveWorkers(): Promise<WorkerRow[]> {
    const rows = await this.db.selectFrom('workers').selectAll().where('status', 'not in', ['TERMINATED', 'ERROR']).execute();
    return rows.map(toWorker);
  }

  async insertRollout(rollout: RolloutRow): Promise<void> {
    await this.db.insertInto('rollouts').values(rollout).execute();
  }

  async finishRollout(id: string, phase: RolloutPhase, reason: string | null = null, event?: Omit<EventRow, 'id'>): Promise<EventRow | undefined> {
    return this.db.transaction().execute(async (tx) => {
      await transition(
        rolloutPhase,
        `rollout ${id}`,
        phase,
        async () => (await tx.selectFrom('rollouts').select('phase').where('id', '=', id).executeTakeFirst())?.phase as RolloutPhase | undefined,
        async (from) => (await tx.updateTable('rollouts').set({ phase, reason, finishedAt: new Date().toISOString() }).where('id', '=', id).where('phase', '=', from).executeTakeFirst()).numUpdatedRows,
        () => new MoltError('MOLT_ERR_NOT_FOUND', `no rollout ${id}`),
      );
      return event ? insertEvent(tx, event) : undefined;
    });
  }

  async lastRollout(namespace: string, app: string): Promise<RolloutRow | undefined> {
    const r = await this.db.selectFrom('rollouts').selectAll().where('namespace', '=', namespace).where('app', '=', app).orderBy('createdAt', 'desc').orderBy('id', 'desc').limit(1).executeTakeFirst();
    return r && toRollout(r);
  }

  async getRollout(id: string): Promise<RolloutRow | undefined> {
    const r = await this.db.selectFrom('rollouts').selectAll().where('id', '=', id).executeTakeFirst();
    return r && toRollout(r);
  }

  async listRunningRollouts(): Promise<RolloutRow[]> {
    return (await this.db.selectFrom('rollouts').selectAll().where('phase', '=', 'running').orderBy('createdAt').execute()).map(toRollout);
  }

  async setRolloutProgress(id: string, progress: RolloutProgress): Promise<void> {
    await this.db.updateTable('rollouts').set({ progress: JSON.stringify(progress) }).where('id', '=', id).execute();
  }

  async getRolloutProgress(id: string): Promise<RolloutProgress | undefined> {
    const r = await this.db.selectFrom('rollouts').select('progress').where('id', '=', id).executeTakeFirst();
    return r?.progress ? (JSON.parse(r.progress) as RolloutProgress) : undefined;
  }

  async countFailedWorkers(namespace: string, app: string, since: string): Promise<number> {
    const r = await this.db
      .selectFrom('workers')
      .select((eb) => eb.fn.countAll<number>().as('n'))
      .where('namespace', '=', namespace)
      .where('app', '=', app)
      .where('status', '=', 'ERROR')
      .where('deletedAt', '>=', since)
      .executeTakeFirst();
    return Number(r?.n ?? 0);
  }

  async claimDomains(namespace: string, app: string, domains: string[], dryRun = false): Promise<DomainRow | undefined> {
    const heldByOther = (db: Kysely<Database>) =>
      domains.length === 0
        ? Promise.resolve(undefined)
        : db
            .selectFrom('domains')
            .selectAll()
            .where('domain', 'in', domains)
            .where((eb) => eb.or([eb('namespace', '!=', namespace), eb('app', '!=', app)]))
            .orderBy('domain')
            .executeTakeFirst();
    if (dryRun) return heldByOther(this.db);
    try {
      await this.db.transaction().execute(async (tx) => {
        const createdAt = new Date().toISOString();
        // A concurrent claim of the same name waits on its key, then finds it held below.
        for (const domain of domains) await tx.insertInto('domains').values({ domain, namespace, app, createdAt }).onConflict((oc) => oc.column('domain').doNothing()).execute();
        const holder = await heldByOther(tx);
        if (holder) throw new DomainTaken(holder);
        let gone = tx.deleteFrom('domains').where('namespace', '=', namespace).where('app', '=', app);
        if (domains.length > 0) gone = gone.where('domain', 'not in', domains);
        await gone.execute();
      });
    } catch (err) {
      if (err instanceof DomainTaken) return err.holder;
      throw err;
    }
    return undefined;
  }

  async listDomains(): Promise<DomainRow[]> {
    return this.db.selectFrom('domains').selectAll().orderBy('domain').execute();
  }

  async setting(name: string, initial: string): Promise<string> {
    await this.db.insertInto('settings').values({ name, value: initial }).onConflict((oc) => oc.column('name').doNothing()).execute();
    return (await this.db.selectFrom('settings').select('value').where('name', '=', name).executeTakeFirstOrThrow()).value;
  }

  async putTimer(timer: TimerRow): Promise<void> {
    const row = { ...timer, payload: JSON.stringify(timer.payload) };
    await this.db
      .insertInto('timers')
      .values(row)
      .onConflict((oc) => oc.column('key').doUpdateSet({ id: row.id, kind: row.kind, namespace: row.namespace, app: row.app, dueAt: row.dueAt, payload: row.payload }))
      .execute();
  }

  async deleteTimer(key: string, id: string): Promise<void> {
    await this.db.deleteFrom('timers').where('key', '=', key).where('id', '=', id).execute();
  }

  async listTimers(): Promise<TimerRow[]> {
    return (await this.db.selectFrom('timers').selectAll().orderBy('dueAt').orderBy('key').execute()).map(toTimer);
  }

  async insertVolume(volume: VolumeRow): Promise<void> {
    await this.db.insertInto('volumes').values(volume).execute();
  }

  async getVolume(namespace: string, name: string): Promise<VolumeRow | undefined> {
    const r = await this.db.selectFrom('volumes').selectAll().where('namespace', '=', namespace).where('name', '=', name).executeTakeFirst();
    return r && toVolume(r);
  }

  async listVolumes(namespace: string): Promise<VolumeRow[]> {
    return (await this.db.selectFrom('volumes').selectAll().where('namespace', '=', namespace).orderBy('name').execute()).map(toVolume);
  }

  async listSharedVolumes(namespace: string): Promise<(VolumeRow & { write: boolean })[]> {
    const rows = await this.db
      .selectFrom('volumes')
      .innerJoin('volumeGrants', 'volumeGrants.volumeId', 'volumes.id')
      .selectAll('volumes')
      .select('volumeGrants.write as write')
      .where('volumeGrants.namespace', '=', namespace)
      .orderBy('volumes.namespace')
      .orderBy('volumes.name')
      .execute();
    return rows.map((r) => ({ ...toVolume(r), write: !!r.write }));
  }

  async insertVolumeRevision(rev: VolumeRevisionRow, expectedSeq: number): Promise<boolean> {
    return this.db.transaction().execute(async (tx) => {
      const moved = await tx
        .updateTable('volumes')
        .set({ latestSeq: rev.seq, updatedAt: rev.createdAt })
        .where('id', '=', rev.volumeId)
        .where('latestSeq', '=', expectedSeq)
        .executeTakeFirst();
      if (Number(moved.numUpdatedRows) === 0) return false;
      await tx.insertInto('volumeRevisions').values(rev).execute();
      return true;
    });
  }

  async listVolumeRevisions(volumeId: string): Promise<VolumeRevisionRow[]> {
    return (await this.db.selectFrom('volumeRevisions').selectAll().where('volumeId', '=', volumeId).orderBy('seq').execute()).map(toVolumeRevision);
  }

  async deleteVolume(volumeId: string): Promise<void> {
    await this.db.transaction().execute(async (tx) => {
      await tx.deleteFrom('volumeGrants').where('volumeId', '=', volumeId).execute();
      await tx.deleteFrom('volumeRevisions').where('volumeId', '=', volumeId).execute();
      await tx.deleteFrom('volumes').where('id', '=', volumeId).execute();
    });
  }

  async putVolumeGrant(grant: VolumeGrantRow): Promise<void> {
    const row = { ...grant, write: grant.write ? 1 : 0 };
    await this.db
      .insertInto('volumeGrants')
      .values(row)
      .onConflict((oc) => oc.columns(['volumeId', 'namespace']).doUpdateSet({ write: row.write }))
      .execute();
  }

  async deleteVolumeGrant(volumeId: string, namespace: string): Promise<boolean> {
    const res = await this.db.deleteFrom('volumeGrants').where('volumeId', '=', volumeId).where('namespace', '=', namespace).executeTakeFirst();
    return Number(res.numDeletedRows) > 0;
  }

  async listVolumeGrants(volumeId: string): Promise<VolumeGrantRow[]> {
    return (await this.db.selectFrom('volumeGrants').selectAll().where('volumeId', '=', volumeId).orderBy('namespace').execute()).map(toGrant);
  }

  async appendEvent(event: Omit<EventRow, 'id'>): Promise<EventRow> {
    return insertEvent(this.db, event);
  }

  async listEvents(filter: { namespace?: string; app?: string; rolloutId?: string; afterId?: number; limit?: number }): Promise<EventRow[]> {
    let q = this.db.selectFrom('events').selectAll().orderBy('id').limit(filter.limit ?? 1000);
    if (filter.namespace) q = q.where('namespace', '=', filter.namespace);
    if (filter.app) q = q.where('app', '=', filter.app);
    if (filter.rolloutId) q = q.where('rolloutId', '=', filter.rolloutId);
    if (filter.afterId !== undefined) q = q.where('id', '>', filter.afterId);
    return (await q.execute()).map(toEvent);
  }
}
