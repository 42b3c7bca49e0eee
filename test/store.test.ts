/**
 * The store's contract, run on both of its databases: SQLite in a temp dir and the suite's real
 * PostgreSQL (a fresh database per run of each test). What one promises, the other keeps.
 */
import { randomUUID } from 'node:crypto';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { openStore } from '../packages/molt/src/store/open-store.js';
import type { Store } from '../packages/molt/src/store/store.js';
import type { AppRow, RevisionRow, TokenRow, WorkerRow } from '../packages/molt/src/store/types.js';
import { tempDir } from './helpers.js';
import { databaseFor } from './postgres.js';

const now = () => new Date().toISOString();
const app = (name: string): AppRow => ({ namespace: 'default', name, id: randomUUID(), currentRevision: 0, permanentRevision: null, probationUntil: null, immutable: false, paused: false, rolloutId: null, createdAt: now(), updatedAt: now() });
const revision = (appName: string, n: number): RevisionRow =>
  ({ namespace: 'default', app: appName, revision: n, releaseId: `r${n}`, spec: { workers: n, env: { A: 'ü' } }, status: 'pending', reason: null, cause: 'create', createdAt: now(), volumes: [] }) as unknown as RevisionRow;
const worker = (id: string, appName: string): WorkerRow => ({ id, namespace: 'default', app: appName, revision: 1, status: 'PENDING', detailStatus: null, detail: null, pid: null, port: null, createdAt: now(), deletedAt: null, limits: null, isolation: null }) as WorkerRow;

describe.each(['sqlite', 'postgres'] as const)('the store on %s', (dialect) => {
  const open: Store[] = [];
  afterEach(async () => {
    await Promise.all(open.splice(0).map((s) => s.close()));
  });
  /** A fresh store; `url` opens the same database again (a second server on it). */
  async function fresh(url?: string): Promise<{ store: Store; url: string }> {
    const dir = tempDir();
    const where = url ?? (dialect === 'postgres' ? await databaseFor(randomUUID()) : join(dir, 'molt.db'));
    const store = await openStore(dir, where);
    open.push(store);
    expect(store.dialect).toBe(dialect);
    return { store, url: where };
  }

  it('migrates a fresh database, and again without harm', async () => {
    const { store, url } = await fresh();
    await store.createNamespace('default');
    const again = await fresh(url);
    expect((await again.store.listNamespaces()).map((n) => n.name)).toEqual(['default']);
  });

  it('gives namespaces distinct uid offsets, even when created at once from two connections', async () => {
    const { store, url } = await fresh();
    const other = (await fresh(url)).store;
    const made = await Promise.all(Array.from({ length: 12 }, (_, i) => (i % 2 ? store : other).createNamespace(`ns${i}`)));
    expect(made.every(Boolean)).toBe(true);
    expect(await store.createNamespace('ns0')).toBe(false);
    const offsets = (await store.listNamespaces()).map((n) => n.uidOffset);
    expect(new Set(offsets).size).toBe(12);
    await store.setNamespaceQuota('ns1', { workers: 3 });
    expect((await store.getNamespace('ns1'))?.quota).toEqual({ workers: 3 });
    await store.setNamespaceQuota('ns1', {});
    expect((await store.getNamespace('ns1'))?.quota).toBeNull();
  });

  it('keeps tokens by hash; a revocation happens once', async () => {
    const { store } = await fresh();
    const token: TokenRow = { id: 't1', name: 'ci', namespace: 'default', role: 'deployer', hash: 'h'.repeat(64), createdAt: now(), revokedAt: null };
    await store.insertToken(token);
    expect(await store.tokenByHash(token.hash)).toEqual(token);
    expect(await store.revokeToken('t1', now())).toBe(true);
    expect(await store.revokeToken('t1', now())).toBe(false);
    expect((await store.listTokens('default'))[0]?.revokedAt).not.toBeNull();
    expect(await store.listTokens('other')).toEqual([]);
  });

  it('gives an app\'s rollout lock to exactly one of many claims at once', async () => {
    const { store, url } = await fresh();
    const other = (await fresh(url)).store;
    await store.createNamespace('default');
    await store.insertApp(app('locked'));
    await expect(store.insertApp(app('locked'))).rejects.toThrow();
    const claims = await Promise.all(Array.from({ length: 10 }, (_, i) => (i % 2 ? store : other).claimRollout('default', 'locked', `r${i}`)));
    expect(claims.filter(Boolean)).toHaveLength(1);
    const row = await store.getApp('default', 'locked');
    expect(row?.rolloutId).toBe(`r${claims.indexOf(true)}`);
    await store.updateApp('default', 'locked', { rolloutId: null, paused: true, probationUntil: now() });
    expect(await store.getApp('default', 'locked')).toMatchObject({ rolloutId: null, paused: true, immutable: false });
  });

  it('gives a domain to exactly one of many apps claiming it at once; a claim is all or none', async () => {
    const { store, url } = await fresh();
    // Two servers on PostgreSQL. One SQLite file has one server (the data dir's lock), whose claims
    // queue on its connection; two connections in one process would block each other's event loop.
    const other = dialect === 'postgres' ? (await fresh(url)).store : store;
    const claims = await Promise.all(Array.from({ length: 8 }, (_, i) => (i % 2 ? store : other).claimDomains('default', `app${i}`, [`a${i}.example.com`, 'shared.example.com'])));
    const winners = claims.map((holder, i) => (holder ? undefined : `app${i}`)).filter(Boolean);
    expect(winners).toHaveLength(1);
    // The losers hold nothing, not even their own name: a claim rolls back whole.
    expect((await store.listDomains()).map((d) => [d.domain, d.app])).toEqual([
      [`a${winners[0]!.slice(3)}.example.com`, winners[0]],
      ['shared.example.com', winners[0]],
    ]);
    for (const holder of claims.filter(Boolean)) expect(holder).toMatchObject({ domain: 'shared.example.com', namespace: 'default', app: winners[0] });
    // A new claim replaces the app's set; a dry run changes nothing.
    expect(await store.claimDomains('default', 'late', ['shared.example.com'], true)).toMatchObject({ app: winners[0] });
    expect(await store.claimDomains('default', winners[0]!, ['new.example.com'])).toBeUndefined();
    expect((await store.listDomains()).map((d) => d.domain)).toEqual(['new.example.com']);
    expect(await store.claimDomains('default', 'late', ['shared.example.com'])).toBeUndefined();
    expect(await store.setting('k', 'first')).toBe('first');
    expect(await other.setting('k', 'second')).toBe('first');
  });

  it('keeps revisions in order with their spec, and enforces their state machine', async () => {
    const { store } = await fresh();
    await store.createNamespace('default');
    await store.insertApp(app('a'));
    await store.insertRevision(revision('a', 1));
    await store.insertRevision(revision('a', 2));
    await expect(store.insertRevision(revision('a', 2))).rejects.toThrow();
    expect((await store.listRevisions('default', 'a')).map((r) => [r.revision, r.spec])).toEqual([
      [1, { workers: 1, env: { A: 'ü' } }],
      [2, { workers: 2, env: { A: 'ü' } }],
    ]);
    await store.setRevisionStatus('default', 'a', 1, 'deploying');
    await store.setRevisionStatus('default', 'a', 1, 'failed', 'boom');
    await expect(store.setRevisionStatus('default', 'a', 1, 'active')).rejects.toThrow(/failed → active/);
    expect(await store.getRevision('default', 'a', 1)).toMatchObject({ status: 'failed', reason: 'boom' });
  });

  it('lists live workers only, and deleting an app takes its workers, revisions and rollouts', async () => {
    const { store } = await fresh();
    await store.createNamespace('default');
    await store.insertApp(app('w'));
    await store.insertRevision(revision('w', 1));
    await store.insertWorker(worker('w1', 'w'));
    await store.insertWorker(worker('w2', 'w'));
    await store.setWorkerStatus('w1', 'CREATED');
    await store.setWorkerStatus('w1', 'INITIALIZED');
    await store.setWorkerStatus('w1', 'RUNNING', { pid: 42, port: 8080 });
    await store.setWorkerStatus('w2', 'TERMINATED', { deletedAt: now() });
    expect((await store.listLiveWorkers()).map((w) => [w.id, w.pid, w.port])).toEqual([['w1', 42, 8080]]);
    expect((await store.listWorkers('default', 'w', true)).map((w) => w.id).sort()).toEqual(['w1', 'w2']);
    await store.insertRollout({ id: 'ro', namespace: 'default', app: 'w', fromRevision: 0, toRevision: 1, strategy: 'rolling', phase: 'running', reason: null, createdAt: now(), finishedAt: null });
    expect((await store.listRunningRollouts()).map((r) => r.id)).toEqual(['ro']);
    await store.deleteApp('default', 'w');
    expect(await store.listLiveWorkers()).toEqual([]);
    expect(await store.listRevisions('default', 'w')).toEqual([]);
    expect(await store.getRollout('ro')).toBeUndefined();
  });

  it('lets one of two concurrent pushes of a volume win', async () => {
    const { store, url } = await fresh();
    // One server per SQLite file (its data dir's lock): there, both pushes go through its one connection.
    const other = dialect === 'postgres' ? (await fresh(url)).store : store;
    await store.createNamespace('default');
    await store.insertVolume({ id: 'v1', namespace: 'default', name: 'data', latestSeq: 0, createdAt: now(), updatedAt: now() });
    const push = (s: Store, tree: string) => s.insertVolumeRevision({ volumeId: 'v1', seq: 1, revision: `1-${tree}`, treeHash: tree, files: 1, size: 5, createdAt: now(), createdBy: 't', addedBytes: 5 }, 0);
    const won = await Promise.all([push(store, 'a'), push(other, 'b')]);
    expect(won.filter(Boolean)).toHaveLength(1);
    expect((await store.listVolumeRevisions('v1')).map((r) => r.seq)).toEqual([1]);
    expect((await store.getVolume('default', 'data'))?.latestSeq).toBe(1);
  });

  it('numbers events in order and filters them by app and id', async () => {
    const { store } = await fresh();
    const ids: number[] = [];
    for (let i = 0; i < 5; i++) ids.push((await store.appendEvent({ namespace: 'default', app: i % 2 ? 'odd' : 'even', rolloutId: null, workerId: null, level: 'info', type: 't', message: `m${i}`, ts: now() })).id);
    expect(ids).toEqual([...ids].sort((a, b) => a - b));
    expect((await store.listEvents({ app: 'even' })).map((e) => e.message)).toEqual(['m0', 'm2', 'm4']);
    expect((await store.listEvents({ afterId: ids[2], limit: 1 })).map((e) => e.message)).toEqual(['m3']);
  });

  it('gives the leader lease to one holder at a time; a lapsed lease goes to the next', async () => {
    const { store, url } = await fresh();
    const other = (await fresh(url)).store;
    const at = (ms: number) => new Date(Date.parse('2026-01-01T00:00:00.000Z') + ms).toISOString();
    // Two take it at once: one gets it.
    const [a, b] = await Promise.all([store.acquireLease('cp', 'A', '{}', at(0), at(5000)), other.acquireLease('cp', 'B', '{}', at(0), at(5000))]);
    expect(a.holder).toBe(b.holder);
    const [first, second] = a.holder === 'A' ? [{ s: store, n: 'A' }, { s: other, n: 'B' }] : [{ s: other, n: 'B' }, { s: store, n: 'A' }];
    // While it lasts, only its holder renews it (and says where it serves).
    expect((await second.s.acquireLease('cp', second.n, '{}', at(4000), at(9000))).holder).toBe(first.n);
    expect(await first.s.acquireLease('cp', first.n, '{"url":"x"}', at(4000), at(9000))).toMatchObject({ holder: first.n, info: '{"url":"x"}', expiresAt: at(9000) });
    // Lapsed, the other takes it; the old holder cannot take it back.
    expect((await second.s.acquireLease('cp', second.n, '{}', at(9001), at(14001))).holder).toBe(second.n);
    expect((await first.s.acquireLease('cp', first.n, '{}', at(9002), at(14002))).holder).toBe(second.n);
    // Given up, it is free at once; a release by one who does not hold it does nothing.
    await first.s.releaseLease('cp', first.n);
    expect((await first.s.acquireLease('cp', first.n, '{}', at(9003), at(14003))).holder).toBe(second.n);
    await second.s.releaseLease('cp', second.n);
    expect((await first.s.acquireLease('cp', first.n, '{}', at(9004), at(14004))).holder).toBe(first.n);
  });

  it('keeps blobs byte for byte, each once', async () => {
    const { store } = await fresh();
    const data = Buffer.from(Array.from({ length: 70_000 }, (_, i) => i % 256));
    await store.putBlobs([{ hash: 'h1', data }]);
    await store.putBlobs([{ hash: 'h1', data: Buffer.from('other') }, { hash: 'h2', data: Buffer.alloc(0) }]);
    expect((await store.getBlob('h1'))?.equals(data)).toBe(true);
    expect((await store.getBlob('h2'))?.length).toBe(0);
    expect(await store.getBlob('h3')).toBeUndefined();
    expect(await store.missingBlobs(['h1', 'h3', 'h2', 'h3'])).toEqual(['h3']);
  });
});
