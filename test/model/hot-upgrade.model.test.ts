/**
 * Model-based test of hot upgrades: fast-check generates sequences of releases (modules changed,
 * added, removed; processes added, removed, reshaped with migrations; a codeChange that throws; a
 * module that throws on load) and of operations (hot update, in-place rollback, rolling update,
 * worker crash, server restart), runs them on a real server with a real worker, and checks after
 * each step what serves, each process's state, which codeChange calls ran, the current and
 * permanent revisions and every revision's status against the plain model in hot-model.ts.
 *
 * MOLT_MODEL_RUNS (default 4) and MOLT_MODEL_STEPS (default 8) bound it; MOLT_MODEL_SEED replays a run.
 */
import { mkdirSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { processes, ServerProcess, sleep, tempDir, waitFor } from '../helpers.js';
import * as model from './hot-model.js';
import type { Model, ModSpec, RelSpec } from './hot-model.js';

const RUNS = Number(process.env.MOLT_MODEL_RUNS ?? 4);
const STEPS = Number(process.env.MOLT_MODEL_STEPS ?? 8);
const SEED = process.env.MOLT_MODEL_SEED ? Number(process.env.MOLT_MODEL_SEED) : Date.now() % 2 ** 31;

interface Real {
  server: ServerProcess;
  app: string;
  dir: string;
  steps: string[];
}

const INITIAL: RelSpec = {
  mods: [
    { ver: 1, proc: true, mig: 'scale', loadThrows: false, dep: false },
    { ver: 1, proc: true, mig: 'none', loadThrows: false, dep: true },
    null,
  ],
  probation: 'long',
};

function writeRelease(r: Real, spec: RelSpec): void {
  for (const f of readdirSync(r.dir)) if (/^m\d\.ts$/.test(f)) rmSync(join(r.dir, f));
  spec.mods.forEach((m, i) => m && writeFileSync(join(r.dir, `m${i}.ts`), model.moduleSource(spec, i)));
  writeFileSync(join(r.dir, 'index.ts'), model.entrySource(spec));
  writeFileSync(
    join(r.dir, 'molt.config.json'),
    JSON.stringify({
      name: r.app,
      entry: 'index.ts',
      workers: 1,
      readiness: { path: '/healthz', timeoutMs: 10_000 },
      hot: { canaryWindowMs: 50, permanentAfterMs: spec.probation === 'short' ? 300 : 600_000 },
      rollout: { drainTimeoutMs: 300, stopGraceMs: 500 },
    }),
  );
}

async function call(r: Real, path: string): Promise<{ status: number; text: string }> {
  const res = await fetch(r.server.route('default', r.app, path), { headers: { authorization: `Bearer ${r.server.adminToken}` } });
  return { status: res.status, text: await res.text() };
}

async function appRow(r: Real): Promise<{ currentRevision: number; permanentRevision: number | null; rolloutId: string | null }> {
  const res = await r.server.api("GET", `/api/v1/namespaces/default/apps/${r.app}`);
  if (!res.body?.app) throw new Error(`GET app: ${res.status} ${JSON.stringify(res.body)}\n${r.server.output.slice(-6000)}`);
  return res.body.app;
}

async function liveWorkers(r: Real): Promise<{ id: string; status: string; detailStatus: string | null; revision: number }[]> {
  return (await r.server.api('GET', `/api/v1/namespaces/default/apps/${r.app}/workers`)).body.workers;
}

/** Waits until no rollout holds the app and one worker of its current revision serves (the server's output says why not). */
async function settle(r: Real): Promise<void> {
  await settled(r).catch((err) => {
    throw new Error(`${(err as Error).message}\n${r.server.output.slice(-4000)}`);
  });
}

async function settled(r: Real): Promise<void> {
  await waitFor(
    async () => {
      const app = await appRow(r);
      const ws = await liveWorkers(r);
      return !app.rolloutId && ws.length === 1 && ws[0]!.status === 'RUNNING' && ws[0]!.detailStatus !== 'UPGRADING' && ws[0]!.revision === app.currentRevision;
    },
    45_000,
    `app ${r.app} to settle on one running worker`,
  );
}

/** What the user sees, against the model. */
async function check(m: Model, r: Real): Promise<void> {
  const where = `after ${r.steps.join(' → ')}`;
  const app = await appRow(r);
  expect({ current: app.currentRevision, permanent: app.permanentRevision }, where).toEqual({ current: m.current, permanent: m.permanent });
  const history = (await r.server.api('GET', `/api/v1/namespaces/default/apps/${r.app}/history`)).body.revisions as { revision: number; status: string }[];
  expect(history.map((h) => h.status), where).toEqual(m.revisions.map((x) => x.status));
  const code = await call(r, '/code');
  expect(code.status, `${where}: ${code.text}`).toBe(200);
  expect(JSON.parse(code.text), where).toEqual(model.codeOf(model.serving(m)));
  const state = JSON.parse((await call(r, '/state')).text);
  expect(state.states, where).toEqual(m.states);
  expect(state.migrations, where).toEqual(m.migrations);
}

const modArb: fc.Arbitrary<ModSpec | null> = fc.option(
  fc.record({
    ver: fc.integer({ min: 1, max: 3 }),
    proc: fc.boolean(),
    mig: fc.constantFrom<model.Migration>('none', 'scale', 'scale', 'scale', 'throw'),
    loadThrows: fc.integer({ min: 0, max: 9 }).map((n) => n === 0),
    dep: fc.boolean(),
  }),
  { freq: 5 },
);
/** A change of one module of what serves: a new release that differs in one place, as real changes do. */
const changeArb = fc.record({ slot: fc.integer({ min: 0, max: 2 }), mod: modArb, probation: fc.constantFrom<'short' | 'long'>('long', 'long', 'short') });
type Change = { slot: number; mod: ModSpec | null; probation: 'short' | 'long' };
const apply = (spec: RelSpec, c: Change): RelSpec => ({ mods: spec.mods.map((m, i) => (i === c.slot ? c.mod : m)), probation: c.probation });
const show = (c: Change) => `m${c.slot}=${c.mod ? `v${c.mod.ver}${c.mod.proc ? `+p/${c.mod.mig}` : ''}${c.mod.loadThrows ? '/throws' : ''}${c.mod.dep ? '/dep' : ''}` : 'gone'}/${c.probation}`;

/** After a hot change with a short probation, it becomes permanent (the model says when). */
async function awaitProbation(m: Model, r: Real): Promise<void> {
  if (m.permanent === null && model.serving(m).probation === 'short') {
    await waitFor(async () => (await appRow(r)).permanentRevision === null, 10_000, 'the short probation to end');
  }
}

/**
 * One generated operation: what it does to the model and to the real server (asserting what the
 * user is told), then, after every step alike, wait for the app to settle and compare.
 */
function operation(label: string, act: (m: Model, r: Real) => Promise<void>, allowed: (m: Readonly<Model>) => boolean = () => true): fc.AsyncCommand<Model, Real> {
  return {
    check: allowed,
    async run(m, r) {
      r.steps.push(label);
      await act(m, r);
      await settle(r);
      await awaitProbation(m, r);
      await check(m, r);
    },
    toString: () => label,
  };
}

const hotUpdate = (c: Change) =>
  operation(`hot(${show(c)})`, async (m, r) => {
    const target = apply(model.serving(m), c);
    const expected = model.hotUpdate(m, target);
    writeRelease(r, target);
    const res = await r.server.molt(['app', 'update'], { cwd: r.dir });
    if (expected === 'ghosted') expect(res.stderr, r.steps.join(' → ')).toContain('MOLT_ERR_RELEASE_GHOSTED');
    else if (expected === 'none') expect(res.code, res.stderr).toBe(0);
    else {
      expect(res.stdout, res.stderr).toContain('strategy: hot');
      expect(res.code, `${r.steps.join(' → ')}\n${res.stdout}\n${res.stderr}`).toBe(expected === 'ok' ? 0 : 1);
    }
  });

const rollingUpdate = (c: Change) =>
  operation(`rolling(${show(c)})`, async (m, r) => {
    const target = apply(model.serving(m), c);
    const expected = model.rollingUpdate(m, target);
    writeRelease(r, target);
    const res = await r.server.molt(['app', 'update', '--strategy', 'rolling'], { cwd: r.dir });
    expect(res.code, `${r.steps.join(' → ')}\n${res.stderr}`).toBe(expected === 'failed' ? 1 : 0);
  });

const rollback = operation('rollback', async (m, r) => {
  const expected = model.rollback(m);
  const res = await r.server.molt(['app', 'rollback', '--app', r.app]);
  if (expected === 'none') expect(res.stderr).toContain('MOLT_ERR_REVISION_NOT_FOUND');
  else expect(res.code, `${r.steps.join(' → ')}\n${res.stderr}`).toBe(expected === 'ok' ? 0 : 1);
});

const bump = operation('bump', async (m, r) => {
  model.bump(m);
  expect((await call(r, '/bump')).status).toBe(200);
});

const crash = operation(
  'crash',
  async (m, r) => {
    const [before] = await liveWorkers(r);
    model.crash(m);
    await call(r, '/crash');
    await waitFor(async () => !(await liveWorkers(r)).some((w) => w.id === before!.id), 10_000, 'the crashed worker to be gone');
  },
  // Replacements back off (1 s, 2 s, …): two crashes per run keep it short.
  (m) => m.crashes < 2,
);

/**
 * A hot update whose control plane is killed (kill -9) once the rollout has started: the next one
 * goes on with it, and what the user sees in the end is what the update alone would have left.
 */
const cutShort = (c: Change) =>
  operation(`cut-short(${show(c)})`, async (m, r) => {
    const target = apply(model.serving(m), c);
    model.hotUpdate(m, target);
    writeRelease(r, target);
    let done = false;
    const update = r.server.molt(['app', 'update'], { cwd: r.dir }).finally(() => (done = true));
    // No rollout starts for a release that is what serves, or ghosted.
    const started = await waitFor(async () => (await appRow(r)).rolloutId ?? (done ? 'none' : undefined), 30_000, 'the update to start');
    if (started !== 'none') {
      const cp = processes().find((p) => p.argv[0] === `molt: control-plane ${r.server.dataDir}`);
      if (cp) process.kill(cp.pid, 'SIGKILL');
    }
    await update;
  }, (m) => m.restarts < 2);

const restart = operation(
  'restart',
  async (m, r) => {
    model.restart(m);
    await r.server.stop('SIGKILL');
    await r.server.start();
  },
  (m) => m.restarts < 1,
);

describe('hot upgrades against a model', () => {
  const server = new ServerProcess(tempDir());
  beforeAll(() => server.start());
  afterAll(() => server.stop());

  it('follows OTP rules through generated releases and operations, checked step by step against a plain model', { timeout: Math.max(600_000, RUNS * STEPS * 5000) }, async () => {
    let run = 0;
    let steps = 0;
    const kinds = new Map<string, number>();
    const commands = [
      changeArb.map(hotUpdate),
      changeArb.map(hotUpdate),
      changeArb.map(cutShort),
      changeArb.map(rollingUpdate),
      fc.constant(rollback),
      fc.constant(rollback),
      fc.constant(bump),
      fc.constant(bump),
      fc.constant(crash),
      fc.constant(restart),
    ];
    console.log(`model-based hot upgrade test: seed ${SEED} (MOLT_MODEL_SEED=${SEED} replays it), ${RUNS} run(s) of up to ${STEPS} steps`);
    await fc.assert(
      fc.asyncProperty(fc.commands(commands, { maxCommands: STEPS, size: 'max' }), async (cmds) => {
        const app = `model${++run}`;
        const dir = join(tempDir('molt-app-'), app);
        const r: Real = { server, app, dir, steps: ['create'] };
        try {
          mkdirSync(dir, { recursive: true });
          writeRelease(r, INITIAL);
          const created = await server.molt(['app', 'create'], { cwd: dir });
          expect(created.code, created.stderr).toBe(0);
          const m = model.initialModel(INITIAL);
          await call(r, '/bump');
          model.bump(m);
          await check(m, r);
          await fc.asyncModelRun(() => ({ model: m, real: r }), cmds);
          steps += r.steps.length - 1;
          for (const step of r.steps.slice(1)) kinds.set(step.split('(')[0]!, (kinds.get(step.split('(')[0]!) ?? 0) + 1);
        } finally {
          await server.molt(['app', 'delete', '--app', app]);
          rmSync(join(dir, '..'), { recursive: true, force: true });
          await sleep(0);
        }
      }),
      { numRuns: RUNS, seed: SEED, endOnFailure: true },
    );
    console.log(`model-based hot upgrade test: seed ${SEED}, ${run} run(s), ${steps} step(s) checked (${[...kinds].map(([k, n]) => `${n} ${k}`).join(', ')})`);
  });
});
