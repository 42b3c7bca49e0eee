/**
 * The plain model of hot upgrades that the model-based test checks a real server against: OTP's
 * rules written as simply as they can be, with no knowledge of how molt carries them out.
 *
 * The app: up to three modules m0..m2; module mi may define process pi, whose state is
 * `{ value, log }`. A module's codeChange (when it has one) multiplies `value` by its factor going
 * up and subtracts the factor going down, and appends `up@<module version>` or
 * `down@<module version>` to `log`; a `throw` migration throws. The factor of version v is v + 1.
 */

export type Migration = 'none' | 'scale' | 'throw';

export interface ModSpec {
  ver: number;
  proc: boolean;
  mig: Migration;
  /** The module throws when it is loaded. */
  loadThrows: boolean;
  /** It imports the module before it (when that one is in the release). */
  dep: boolean;
}

export interface RelSpec {
  mods: (ModSpec | null)[];
  /** short: the test waits for it to become permanent; long: it stays on probation. */
  probation: 'short' | 'long';
}

export interface ProcState {
  value: number;
  log: string[];
}

export type RevStatus = 'pending' | 'deploying' | 'active' | 'superseded' | 'failed' | 'ghosted';

export interface Model {
  revisions: { spec: RelSpec; status: RevStatus }[];
  current: number;
  permanent: number | null;
  /** Releases (by key) whose hot upgrade failed. */
  ghosted: Set<string>;
  states: Record<string, ProcState>;
  /** codeChange calls the running worker made, in order (`up:p0`). */
  migrations: string[];
  /** Worker crashes so far (the replacement backoff doubles with each). */
  crashes: number;
  restarts: number;
}

const factor = (m: ModSpec) => m.ver + 1;

export function moduleSource(spec: RelSpec, i: number): string {
  const m = spec.mods[i]!;
  const dep = m.dep && i > 0 && spec.mods[i - 1] ? `import { version as before } from './m${i - 1}.ts';\nexport const chain = before;\n` : '';
  const version = `m${i}v${m.ver}`;
  const migration =
    m.mig === 'none'
      ? ''
      : `  codeChange: (s: any, change) => {
    ((globalThis as any).migrations ??= []).push(change.direction + ':p${i}');
    ${m.mig === 'throw' ? `throw new Error('p${i} refuses to migrate');` : ''}
    return change.direction === 'up'
      ? { value: s.value * ${factor(m)}, log: [...s.log, 'up@${version}'] }
      : { value: s.value - ${factor(m)}, log: [...s.log, 'down@${version}'] };
  },\n`;
  const proc = m.proc
    ? `export const proc = defineProcess({
  name: 'p${i}',
  init: () => ({ value: 0, log: [] as string[] }),
  handlers: {
    get: (s: { value: number; log: string[] }) => ({ reply: s }),
    bump: (s: { value: number; log: string[] }) => ({ state: { ...s, value: s.value + 1 }, reply: s.value + 1 }),
  },
${migration}});\n`
    : 'export const proc = undefined;\n';
  return `import { defineProcess } from '@molt/app';\n${dep}export const version = '${version}';\n${proc}${m.loadThrows ? `throw new Error('m${i} refuses to load');\n` : ''}`;
}

export function entrySource(spec: RelSpec): string {
  const present = spec.mods.map((m, i) => (m ? i : -1)).filter((i) => i >= 0);
  return `export const probation = '${spec.probation}';
${present.map((i) => `import * as m${i} from './m${i}.ts';`).join('\n')}
const mods: Record<string, { version: string; proc?: { name: string; call(h: string): Promise<unknown> } }> = { ${present.map((i) => `m${i}`).join(', ')} };
export default {
  async fetch(req: Request) {
    const path = new URL(req.url).pathname;
    if (path === '/healthz') return new Response('ok');
    if (path === '/code') return Response.json(Object.fromEntries(Object.entries(mods).map(([k, m]) => [k, m.version])));
    if (path === '/crash') { setTimeout(() => process.exit(3), 10); return new Response('bye'); }
    const procs = Object.values(mods).flatMap((m) => (m.proc ? [m.proc] : []));
    if (path === '/bump') { for (const p of procs) await p.call('bump'); return new Response('ok'); }
    const states: Record<string, unknown> = {};
    for (const p of procs) states[p.name] = await p.call('get');
    return Response.json({ states, migrations: (globalThis as any).migrations ?? [] });
  },
};
`;
}

export function codeOf(spec: RelSpec): Record<string, string> {
  const out: Record<string, string> = {};
  spec.mods.forEach((m, i) => {
    if (m) out[`m${i}`] = `m${i}v${m.ver}`;
  });
  return out;
}

/**
 * A release is its files: two specs that write the same sources (a module without a process
 * carries no migration) are the same release, as molt's content-addressed ids say.
 */
export const key = (spec: RelSpec): string => JSON.stringify([entrySource(spec), ...spec.mods.map((m, i) => (m ? moduleSource(spec, i) : null))]);

const processes = (spec: RelSpec) => spec.mods.flatMap((m, i) => (m?.proc ? [i] : []));

export function initialModel(spec: RelSpec): Model {
  const states: Record<string, ProcState> = {};
  for (const i of processes(spec)) states[`p${i}`] = { value: 0, log: [] };
  return { revisions: [{ spec, status: 'active' }], current: 1, permanent: null, ghosted: new Set(), states, migrations: [], crashes: 0, restarts: 0 };
}

export const serving = (m: Model): RelSpec => m.revisions[m.current - 1]!.spec;

/** A fresh worker of the current revision: every process starts from init. */
function freshWorker(m: Model): void {
  m.states = {};
  for (const i of processes(serving(m))) m.states[`p${i}`] = { value: 0, log: [] };
  m.migrations = [];
}

function addRevision(m: Model, spec: RelSpec): number {
  m.revisions.push({ spec, status: 'pending' });
  return m.revisions.length;
}

function serve(m: Model, rev: number): void {
  if (m.revisions[m.current - 1]!.status === 'active') m.revisions[m.current - 1]!.status = 'superseded';
  m.revisions[rev - 1]!.status = 'active';
  m.current = rev;
}

/** What `molt app update` (strategy auto) does: 'none' when nothing changed, else the outcome. */
export function hotUpdate(m: Model, target: RelSpec): 'none' | 'ghosted' | 'ok' | 'failed' {
  if (key(target) === key(serving(m))) return 'none';
  if (m.ghosted.has(key(target))) return 'ghosted';
  const rev = addRevision(m, target);
  return inPlace(m, rev, 'up') ? 'ok' : 'failed';
}

/** Carries the running worker to revision `rev` in place; false (and nothing changed) on failure. */
function inPlace(m: Model, rev: number, direction: 'up' | 'down'): boolean {
  const from = serving(m);
  const to = m.revisions[rev - 1]!.spec;
  if (direction === 'up' && to.mods.some((x) => x?.loadThrows)) return fail(m, rev, 'ghosted');
  const changed = (i: number) => moduleSource(from, i) !== moduleSource(to, i);
  const both = processes(to).filter((i) => from.mods[i]?.proc && changed(i));
  const order = direction === 'up' ? both : [...both].reverse();
  const next: Record<string, ProcState> = {};
  for (const i of order) {
    const code = (direction === 'up' ? to : from).mods[i]!;
    if (code.mig === 'none') continue;
    m.migrations.push(`${direction}:p${i}`);
    if (code.mig === 'throw') return fail(m, rev, 'ghosted');
    const s = m.states[`p${i}`]!;
    const version = `m${i}v${code.ver}`;
    next[`p${i}`] = direction === 'up' ? { value: s.value * factor(code), log: [...s.log, `up@${version}`] } : { value: s.value - factor(code), log: [...s.log, `down@${version}`] };
  }
  const states: Record<string, ProcState> = {};
  for (const i of processes(to)) states[`p${i}`] = next[`p${i}`] ?? (from.mods[i]?.proc ? m.states[`p${i}`]! : { value: 0, log: [] });
  m.states = states;
  const previous = m.current;
  serve(m, rev);
  m.permanent = m.permanent ?? previous;
  if (to.probation === 'short') m.permanent = null;
  return true;
}

function fail(m: Model, rev: number, status: 'failed' | 'ghosted'): false {
  m.revisions[rev - 1]!.status = status;
  if (status === 'ghosted') m.ghosted.add(key(m.revisions[rev - 1]!.spec));
  return false;
}

/** `molt app update --strategy rolling`. */
export function rollingUpdate(m: Model, target: RelSpec): 'none' | 'ok' | 'failed' {
  if (key(target) === key(serving(m))) return 'none';
  const rev = addRevision(m, target);
  if (target.mods.some((x) => x?.loadThrows)) return (fail(m, rev, 'failed'), 'failed');
  serve(m, rev);
  m.permanent = null;
  freshWorker(m);
  return 'ok';
}

/** `molt app rollback`: to the last revision before the current one that served. */
export function rollback(m: Model): 'none' | 'ok' | 'failed' {
  let target = 0;
  for (let r = m.current - 1; r >= 1; r--) {
    const s = m.revisions[r - 1]!.status;
    if (s === 'superseded' || s === 'active') {
      target = r;
      break;
    }
  }
  if (target === 0) return 'none';
  const spec = m.revisions[target - 1]!.spec;
  const rev = addRevision(m, spec);
  if (key(spec) === key(serving(m))) {
    serve(m, rev);
    m.permanent = null;
    freshWorker(m);
    return 'ok';
  }
  return inPlace(m, rev, 'down') ? 'ok' : 'failed';
}

/** The worker crashes: on probation the app goes back to its permanent revision, else it restarts. */
export function crash(m: Model): void {
  m.crashes++;
  if (m.permanent !== null) revert(m, 'ghosted');
  freshWorker(m);
}

/**
 * molt is killed and started again: its workers outlive it and are adopted, so nothing changes —
 * the same worker keeps its state, and a probation goes on to its deadline.
 */
export function restart(m: Model): void {
  m.restarts++;
}

function revert(m: Model, status: 'failed' | 'ghosted'): void {
  const rev = m.revisions[m.current - 1]!;
  // The permanent revision's own release is not ghosted by going back to it.
  if (key(rev.spec) === key(m.revisions[m.permanent! - 1]!.spec)) status = 'failed';
  rev.status = status;
  if (status === 'ghosted') m.ghosted.add(key(rev.spec));
  m.revisions[m.permanent! - 1]!.status = 'active';
  m.current = m.permanent!;
  m.permanent = null;
}

export function bump(m: Model): void {
  for (const s of Object.values(m.states)) s.value += 1;
}
