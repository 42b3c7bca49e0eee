import { type Kysely, type Migration, sql } from 'kysely';

/** Table shapes as stored: JSON as text and booleans as 0/1, the same in SQLite and PostgreSQL. */
export interface Database {
  namespaces: { name: string; createdAt: string; uidOffset: number | null; quota: string | null };
  tokens: { id: string; name: string; namespace: string; role: string; hash: string; createdAt: string; revokedAt: string | null };
  releases: { id: string; namespace: string; app: string; manifest: string; files: number; size: number; createdAt: string };
  apps: {
    namespace: string;
    name: string;
    id: string;
    currentRevision: number;
    permanentRevision: number | null;
    probationUntil: string | null;
    immutable: number;
    paused: number;
    rolloutId: string | null;
    createdAt: string;
    updatedAt: string;
  };
  revisions: {
    namespace: string;
    app: string;
    revision: number;
    releaseId: string;
    spec: string;
    status: string;
    reason: string | null;
    cause: string;
    createdAt: string;
    volumes: string;
  };
  workers: {
    id: string;
    namespace: string;
    app: string;
    revision: number;
    status: string;
    detailStatus: string | null;
    detail: string | null;
    pid: number | null;
    port: number | null;
    createdAt: string;
    deletedAt: string | null;
    limits: string | null;
    isolation: string | null;
  };
  rollouts: {
    id: string;
    namespace: string;
    app: string;
    fromRevision: number;
    toRevision: number;
    strategy: string;
    phase: string;
    reason: string | null;
    createdAt: string;
    finishedAt: string | null;
    progress: string | null;
  };
  domains: { domain: string; namespace: string; app: string; createdAt: string };
  settings: { name: string; value: string };
  timers: { key: string; id: string; kind: string; namespace: string; app: string; dueAt: string; payload: string };
  volumes: { id: string; namespace: string; name: string; latestSeq: number; createdAt: string; updatedAt: string };
  heartbeats: { name: string; at: string };
  leases: { name: string; holder: string; info: string; expiresAt: string };
  blobs: { hash: string; data: Buffer };
  volumeRevisions: { volumeId: string; seq: number; revision: string; treeHash: string; files: number; size: number; createdAt: string; createdBy: string; addedBytes: number };
  blobAccess: { namespace: string; hash: string };
  volumeGrants: { volumeId: string; namespace: string; write: number; createdAt: string };
  events: {
    id: number;
    ts: string;
    namespace: string;
    app: string | null;
    rolloutId: string | null;
    workerId: string | null;
    level: string;
    type: string;
    message: string;
  };
}

/** Migrations, in order. A migration is never edited once released; add the next one. */
export function migrations(dialect: 'sqlite' | 'postgres'): Record<string, Migration> {
  const autoId = dialect === 'sqlite' ? sql`integer primary key autoincrement` : sql`bigserial primary key`;
  return {
    '0001-core': {
      async up(db: Kysely<any>) {
        await db.schema.createTable('namespaces').addColumn('name', 'text', (c) => c.primaryKey()).addColumn('createdAt', 'text', (c) => c.notNull()).execute();
        await db.schema
          .createTable('tokens')
          .addColumn('id', 'text', (c) => c.primaryKey())
          .addColumn('name', 'text', (c) => c.notNull())
          .addColumn('namespace', 'text', (c) => c.notNull())
          .addColumn('role', 'text', (c) => c.notNull())
          .addColumn('hash', 'text', (c) => c.notNull().unique())
          .addColumn('createdAt', 'text', (c) => c.notNull())
          .addColumn('revokedAt', 'text')
          .execute();
        await db.schema
          .createTable('releases')
          .addColumn('id', 'text', (c) => c.notNull())
          .addColumn('namespace', 'text', (c) => c.notNull())
          .addColumn('app', 'text', (c) => c.notNull())
          .addColumn('manifest', 'text', (c) => c.notNull())
          .addColumn('files', 'integer', (c) => c.notNull())
          .addColumn('size', 'bigint', (c) => c.notNull())
          .addColumn('createdAt', 'text', (c) => c.notNull())
          .addPrimaryKeyConstraint('releases_pk', ['namespace', 'id'])
          .execute();
        await db.schema
          .createTable('apps')
          .addColumn('namespace', 'text', (c) => c.notNull())
          .addColumn('name', 'text', (c) => c.notNull())
          .addColumn('id', 'text', (c) => c.notNull().unique())
          .addColumn('currentRevision', 'integer', (c) => c.notNull())
          .addColumn('immutable', 'integer', (c) => c.notNull())
          .addColumn('paused', 'integer', (c) => c.notNull())
          .addColumn('rolloutId', 'text')
          .addColumn('createdAt', 'text', (c) => c.notNull())
          .addColumn('updatedAt', 'text', (c) => c.notNull())
          .addPrimaryKeyConstraint('apps_pk', ['namespace', 'name'])
          .execute();
        await db.schema
          .createTable('revisions')
          .addColumn('namespace', 'text', (c) => c.notNull())
          .addColumn('app', 'text', (c) => c.notNull())
          .addColumn('revision', 'integer', (c) => c.notNull())
          .addColumn('releaseId', 'text', (c) => c.notNull())
          .addColumn('spec', 'text', (c) => c.notNull())
          .addColumn('status', 'text', (c) => c.notNull())
          .addColumn('reason', 'text')
          .addColumn('cause', 'text', (c) => c.notNull())
          .addColumn('createdAt', 'text', (c) => c.notNull())
          .addPrimaryKeyConstraint('revisions_pk', ['namespace', 'app', 'revision'])
          .execute();
        await db.schema
          .createTable('workers')
          .addColumn('id', 'text', (c) => c.primaryKey())
          .addColumn('namespace', 'text', (c) => c.notNull())
          .addColumn('app', 'text', (c) => c.notNull())
          .addColumn('revision', 'integer', (c) => c.notNull())
          .addColumn('status', 'text', (c) => c.notNull())
          .addColumn('detailStatus', 'text')
          .addColumn('detail', 'text')
          .addColumn('pid', 'integer')
          .addColumn('port', 'integer')
          .addColumn('createdAt', 'text', (c) => c.notNull())
          .addColumn('deletedAt', 'text')
          .execute();
        await db.schema.createIndex('workers_app').on('workers').columns(['namespace', 'app']).execute();
        await db.schema
          .createTable('rollouts')
          .addColumn('id', 'text', (c) => c.primaryKey())
          .addColumn('namespace', 'text', (c) => c.notNull())
          .addColumn('app', 'text', (c) => c.notNull())
          .addColumn('fromRevision', 'integer', (c) => c.notNull())
          .addColumn('toRevision', 'integer', (c) => c.notNull())
          .addColumn('strategy', 'text', (c) => c.notNull())
          .addColumn('phase', 'text', (c) => c.notNull())
          .addColumn('reason', 'text')
          .addColumn('createdAt', 'text', (c) => c.notNull())
          .addColumn('finishedAt', 'text')
          .execute();
        await db.schema
          .createTable('events')
          .addColumn('id', autoId)
          .addColumn('ts', 'text', (c) => c.notNull())
          .addColumn('namespace', 'text', (c) => c.notNull())
          .addColumn('app', 'text')
          .addColumn('rolloutId', 'text')
          .addColumn('workerId', 'text')
          .addColumn('level', 'text', (c) => c.notNull())
          .addColumn('type', 'text', (c) => c.notNull())
          .addColumn('message', 'text', (c) => c.notNull())
          .execute();
        await db.schema.createIndex('events_app').on('events').columns(['namespace', 'app', 'id']).execute();
      },
    },
    '0002-volumes': {
      async up(db: Kysely<any>) {
        await db.schema
          .createTable('volumes')
          .addColumn('id', 'text', (c) => c.primaryKey())
          .addColumn('namespace', 'text', (c) => c.notNull())
          .addColumn('name', 'text', (c) => c.notNull())
          .addColumn('latestSeq', 'integer', (c) => c.notNull())
          .addColumn('createdAt', 'text', (c) => c.notNull())
          .addColumn('updatedAt', 'text', (c) => c.notNull())
          .addUniqueConstraint('volumes_name', ['namespace', 'name'])
          .execute();
        await db.schema
          .createTable('volumeRevisions')
          .addColumn('volumeId', 'text', (c) => c.notNull())
          .addColumn('seq', 'integer', (c) => c.notNull())
          .addColumn('revision', 'text', (c) => c.notNull())
          .addColumn('treeHash', 'text', (c) => c.notNull())
          .addColumn('files', 'integer', (c) => c.notNull())
          .addColumn('size', 'bigint', (c) => c.notNull())
          .addColumn('createdAt', 'text', (c) => c.notNull())
          .addColumn('createdBy', 'text', (c) => c.notNull())
          .addPrimaryKeyConstraint('volume_revisions_pk', ['volumeId', 'seq'])
          .execute();
        await db.schema
          .createTable('volumeGrants')
          .addColumn('volumeId', 'text', (c) => c.notNull())
          .addColumn('namespace', 'text', (c) => c.notNull())
          .addColumn('write', 'integer', (c) => c.notNull())
          .addColumn('createdAt', 'text', (c) => c.notNull())
          .addPrimaryKeyConstraint('volume_grants_pk', ['volumeId', 'namespace'])
          .execute();
        // The volume revisions an app revision runs with, resolved when the revision is made.
        await db.schema.alterTable('revisions').addColumn('volumes', 'text', (c) => c.notNull().defaultTo('[]')).execute();
      },
    },
    '0003-worker-limits': {
      async up(db: Kysely<any>) {
        // How the worker's resources are held: limits and whether they are enforced, GPUs given.
        await db.schema.alterTable('workers').addColumn('limits', 'text').execute();
      },
    },
    '0004-permanent-revision': {
      async up(db: Kysely<any>) {
        // OTP's permanent release: what a restarting worker boots while a hot upgrade is on probation.
        await db.schema.alterTable('apps').addColumn('permanentRevision', 'integer').execute();
      },
    },
    '0005-tenant-isolation': {
      async up(db: Kysely<any>) {
        // A namespace's workers run as uid (range start + uidOffset); quotas as JSON.
        await db.schema.alterTable('namespaces').addColumn('uidOffset', 'integer').execute();
        await db.schema.alterTable('namespaces').addColumn('quota', 'text').execute();
        const names = await db.selectFrom('namespaces').select('name').orderBy('createdAt').orderBy('name').execute();
        for (const [i, n] of names.entries()) await db.updateTable('namespaces').set({ uidOffset: i }).where('name', '=', n.name).execute();
        await db.schema.createIndex('namespaces_uid').on('namespaces').column('uidOffset').unique().execute();
        // How a worker is sandboxed, or why it is not.
        await db.schema.alterTable('workers').addColumn('isolation', 'text').execute();
        // Bytes of blobs a volume revision added over the one before it (what quotas count).
        await db.schema.alterTable('volumeRevisions').addColumn('addedBytes', 'bigint', (c) => c.notNull().defaultTo(0)).execute();
        await db.updateTable('volumeRevisions').set((eb: any) => ({ addedBytes: eb.ref('size') })).execute();
        // The blobs each namespace may use without sending them: a hash alone grants nothing.
        await db.schema
          .createTable('blobAccess')
          .addColumn('namespace', 'text', (c) => c.notNull())
          .addColumn('hash', 'text', (c) => c.notNull())
          .addPrimaryKeyConstraint('blob_access_pk', ['namespace', 'hash'])
          .execute();
      },
    },
    '0006-durable-probation': {
      async up(db: Kysely<any>) {
        // When a hot-upgraded revision's probation ends: a deadline in the store, not a timer in memory.
        await db.schema.alterTable('apps').addColumn('probationUntil', 'text').execute();
        // The last time each server was seen alive: a probation is over only if it was watched to its end.
        await db.schema
          .createTable('heartbeats')
          .addColumn('name', 'text', (c) => c.primaryKey())
          .addColumn('at', 'text', (c) => c.notNull())
          .execute();
      },
    },
    '0007-leadership-and-blobs': {
      async up(db: Kysely<any>) {
        // Which control plane leads, until when: renewed while it lives, taken by a standby when it lapses.
        await db.schema
          .createTable('leases')
          .addColumn('name', 'text', (c) => c.primaryKey())
          .addColumn('holder', 'text', (c) => c.notNull())
          .addColumn('info', 'text', (c) => c.notNull())
          .addColumn('expiresAt', 'text', (c) => c.notNull())
          .execute();
        // Blobs of releases and volumes kept in a shared database, for any server that leads next.
        await db.schema
          .createTable('blobs')
          .addColumn('hash', 'text', (c) => c.primaryKey())
          .addColumn('data', dialect === 'postgres' ? 'bytea' : 'blob', (c) => c.notNull())
          .execute();
      },
    },
    '0008-durable-rollouts': {
      async up(db: Kysely<any>) {
        // What a rollout under way needs to go on after a restart (a hot plan, its canary's deadline, the worker a recycle replaces).
        await db.schema.alterTable('rollouts').addColumn('progress', 'text').execute();
        // Work the control plane has promised for later (a crashed worker's replacement after its backoff,
        // a volume roll waiting for an update, a recycle): written before it waits, armed again at every start.
        await db.schema
          .createTable('timers')
          .addColumn('key', 'text', (c) => c.primaryKey())
          .addColumn('id', 'text', (c) => c.notNull())
          .addColumn('kind', 'text', (c) => c.notNull())
          .addColumn('namespace', 'text', (c) => c.notNull())
          .addColumn('app', 'text', (c) => c.notNull())
          .addColumn('dueAt', 'text', (c) => c.notNull())
          .addColumn('payload', 'text', (c) => c.notNull())
          .execute();
        await db.schema.createIndex('workers_failed').on('workers').columns(['namespace', 'app', 'status', 'deletedAt']).execute();
      },
    },
    '0009-domains-and-settings': {
      async up(db: Kysely<any>) {
        // Hostnames apps claimed; the primary key is what makes a claim unique across the server.
        await db.schema
          .createTable('domains')
          .addColumn('domain', 'text', (c) => c.primaryKey())
          .addColumn('namespace', 'text', (c) => c.notNull())
          .addColumn('app', 'text', (c) => c.notNull())
          .addColumn('createdAt', 'text', (c) => c.notNull())
          .execute();
        // Values the whole server shares once made (the key that signs browser sessions).
        await db.schema.createTable('settings').addColumn('name', 'text', (c) => c.primaryKey()).addColumn('value', 'text', (c) => c.notNull()).execute();
      },
    },
  };
}
