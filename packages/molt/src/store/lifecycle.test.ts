import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { IllegalTransition, revisionStatus, rolloutPhase, workerStatus } from './lifecycle.js';
import { createSqliteStore } from './sqlite/sqlite-store.js';
import type { RevisionRow } from './types.js';

describe('state machines', () => {
  it('allow only the moves in their tables; final states allow none', () => {
    expect(workerStatus.can('RUNNING', 'TERMINATING')).toBe(true);
    expect(workerStatus.can('RUNNING', 'RUNNING')).toBe(true);
    expect(workerStatus.can('TERMINATED', 'RUNNING')).toBe(false);
    expect(workerStatus.can('TERMINATED', 'TERMINATED')).toBe(false);
    expect(revisionStatus.can('deploying', 'ghosted')).toBe(true);
    expect(revisionStatus.can('superseded', 'active')).toBe(true);
    expect(revisionStatus.can('failed', 'active')).toBe(false);
    expect(rolloutPhase.can('succeeded', 'failed')).toBe(false);
    for (const m of [workerStatus, revisionStatus, rolloutPhase] as const) {
      for (const s of m.states() as string[]) if (m.isFinal(s as never)) for (const t of m.states() as string[]) expect(m.can(s as never, t as never)).toBe(false);
    }
    expect(() => revisionStatus.check('revision 2 of default/app', 'failed', 'active')).toThrow(IllegalTransition);
    expect(() => revisionStatus.check('revision 2 of default/app', 'failed', 'active')).toThrow(/illegal revision status transition of revision 2 of default\/app: failed → active/);
  });

  it('are enforced by the store: an illegal write throws and changes nothing', async () => {
    const store = createSqliteStore(join(mkdtempSync(join(tmpdir(), 'molt-test-')), 'molt.db'));
    await store.migrate();
    await store.createNamespace('default');
    const now = new Date().toISOString();
    await store.insertApp({ namespace: 'default', name: 'a', id: 'a1', currentRevision: 0, permanentRevision: null, probationUntil: null, immutable: false, paused: false, rolloutId: null, createdAt: now, updatedAt: now });
    const rev = { namespace: 'default', app: 'a', revision: 1, releaseId: 'r', spec: {}, status: 'pending', reason: null, cause: 'create', createdAt: now, volumes: [] } as unknown as RevisionRow;
    await store.insertRevision(rev);
    await store.setRevisionStatus('default', 'a', 1, 'deploying');
    await store.setRevisionStatus('default', 'a', 1, 'failed', 'boom');
    await expect(store.setRevisionStatus('default', 'a', 1, 'active')).rejects.toThrow(/failed → active/);
    expect((await store.getRevision('default', 'a', 1))?.status).toBe('failed');
    await store.insertRollout({ id: 'r1', namespace: 'default', app: 'a', fromRevision: 0, toRevision: 1, strategy: 'rolling', phase: 'running', reason: null, createdAt: now, finishedAt: null });
    await store.finishRollout('r1', 'failed', 'boom');
    await expect(store.finishRollout('r1', 'succeeded')).rejects.toThrow(IllegalTransition);
    await store.close();
  });
});
