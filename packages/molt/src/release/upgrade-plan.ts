/**
 * Upgrade plans, our appup: from two release manifests, the instructions that take a running
 * worker from one to the other in place, ordered so that a module is upgraded after the modules it
 * imports, with the `down` twin for the way back. When hot is unsafe the plan says `rolling` and why
 * (DeployEx's "do not hot-upgrade if" list, checked by the machine).
 */
import type { AppSpec } from '../config/app-spec.js';
import type { UpgradeInstruction } from '../runtime/control-messages.js';
import type { ReleaseManifest, ReleaseModule } from '../store/types.js';

export interface UpgradePlan {
  from: string;
  to: string;
  strategy: 'hot' | 'rolling';
  /** Why hot is unsafe (rolling), or what the hot plan does. */
  reason: string;
  /** What makes hot unsafe between these releases, one entry per cause (empty when hot is safe). */
  blockers: string[];
  up: UpgradeInstruction[];
  down: UpgradeInstruction[];
  /** What a reviewer should look at before applying it. */
  warnings: string[];
  /** Import cycles found (each a list of modules); they keep a stable order. */
  cycles: string[][];
}

export interface PlanSide {
  id: string;
  manifest: ReleaseManifest;
  spec: AppSpec;
}

/** Config fields a worker reads at start: a change needs a new process unless the app handles it. */
const RUNTIME_CONFIG = ['entry', 'env', 'resources', 'volumes', 'readiness', 'public'] as const;

const same = (a: unknown, b: unknown) => JSON.stringify(a) === JSON.stringify(b);

/**
 * Orders modules so that every module comes after the modules it imports. Modules in an import
 * cycle keep their path order; the cycles are returned.
 */
export function dependencyOrder(modules: ReleaseModule[]): { order: string[]; cycles: string[][] } {
  const byPath = new Map(modules.map((m) => [m.path, m]));
  // Tarjan's strongly connected components; emitted in reverse topological order, i.e. dependencies first.
  let index = 0;
  const idx = new Map<string, number>();
  const low = new Map<string, number>();
  const stack: string[] = [];
  const onStack = new Set<string>();
  const order: string[] = [];
  const cycles: string[][] = [];
  const visit = (v: string) => {
    idx.set(v, index);
    low.set(v, index);
    index++;
    stack.push(v);
    onStack.add(v);
    for (const w of [...(byPath.get(v)?.imports ?? [])].sort()) {
      if (!byPath.has(w)) continue;
      if (!idx.has(w)) {
        visit(w);
        low.set(v, Math.min(low.get(v)!, low.get(w)!));
      } else if (onStack.has(w)) low.set(v, Math.min(low.get(v)!, idx.get(w)!));
    }
    if (low.get(v) === idx.get(v)) {
      const scc: string[] = [];
      let w: string;
      do {
        w = stack.pop()!;
        onStack.delete(w);
        scc.push(w);
      } while (w !== v);
      scc.sort();
      if (scc.length > 1 || byPath.get(v)!.imports.includes(v)) cycles.push(scc);
      order.push(...scc);
    }
  };
  for (const m of [...modules].sort((a, b) => (a.path < b.path ? -1 : 1))) if (!idx.has(m.path)) visit(m.path);
  return { order, cycles };
}

/** The instructions from one manifest to another (without the rolling checks). */
function instructions(from: ReleaseManifest, to: ReleaseManifest): { steps: UpgradeInstruction[]; cycles: string[][] } {
  const before = new Map(from.modules.map((m) => [m.path, m]));
  const after = new Map(to.modules.map((m) => [m.path, m]));
  const changed = new Set<string>();
  for (const m of to.modules) if (before.get(m.path)?.hash !== m.hash) changed.add(m.path);
  // Modules that import a changed module (directly or not) must be linked again to see it.
  const importers = new Map<string, string[]>();
  for (const m of to.modules) for (const i of m.imports) importers.set(i, [...(importers.get(i) ?? []), m.path]);
  const relinked = new Map<string, string>();
  const queue = [...changed];
  while (queue.length > 0) {
    const p = queue.shift()!;
    for (const importer of importers.get(p) ?? []) {
      if (changed.has(importer) || relinked.has(importer)) continue;
      relinked.set(importer, p);
      queue.push(importer);
    }
  }
  const { order, cycles } = dependencyOrder(to.modules);
  const steps: UpgradeInstruction[] = [];
  for (const path of order) {
    const m = after.get(path)!;
    const processes = m.processes ?? [];
    if (!before.has(path)) steps.push({ op: 'add', module: path, ...(processes.length ? { processes } : {}), reason: 'new module' });
    else if (changed.has(path)) {
      steps.push(
        processes.length
          ? { op: 'update', module: path, processes, reason: `changed; defines process${processes.length > 1 ? 'es' : ''} ${processes.join(', ')}` }
          : { op: 'load', module: path, reason: 'changed' },
      );
    } else if (relinked.has(path)) {
      steps.push({ op: 'load', module: path, ...(processes.length ? { processes } : {}), reason: `imports ${relinked.get(path)}, which changed` });
    }
  }
  // Removed modules go last, once nothing new imports them.
  for (const m of from.modules) {
    if (!after.has(m.path)) steps.push({ op: 'remove', module: m.path, ...(m.processes?.length ? { processes: m.processes } : {}), reason: 'not in the new release' });
  }
  return { steps, cycles };
}

/** The plan from one release to another for an app whose config goes from `from.spec` to `to.spec`. */
export function generatePlan(from: PlanSide, to: PlanSide): UpgradePlan {
  const rolling: string[] = [];
  if (from.manifest.node !== to.manifest.node) rolling.push(`the Node version changes (${from.manifest.node} → ${to.manifest.node})`);
  if (from.manifest.dependencyHash !== to.manifest.dependencyHash) rolling.push('the production dependencies changed (lockfile, versions or native addons)');
  const configFields = RUNTIME_CONFIG.filter((f) => !same(from.spec[f], to.spec[f]));
  const entry = to.manifest.modules.find((m) => m.path === to.manifest.entry);
  if (configFields.length > 0) {
    const hookable = configFields.every((f) => f === 'env') && entry?.configChange;
    if (!hookable) {
      rolling.push(
        `the runtime config changed (${configFields.join(', ')})${configFields.every((f) => f === 'env') ? ' and the entry exports no configChange hook' : ''}`,
      );
    }
  }
  const up = instructions(from.manifest, to.manifest);
  const down = instructions(to.manifest, from.manifest);
  const warnings: string[] = [];
  const prior = new Map(from.manifest.modules.map((m) => [m.path, m]));
  for (const s of up.steps) {
    const mod = to.manifest.modules.find((m) => m.path === s.module);
    if (s.op === 'update' && !mod?.codeChange) warnings.push(`${s.module} changes process ${s.processes!.join(', ')} but defines no codeChange: the state is kept as it is`);
    if (s.op === 'remove' && s.processes?.length) warnings.push(`${s.module} is removed with process ${s.processes.join(', ')}: its live state is dropped`);
    if (s.op === 'add' && s.processes?.length) warnings.push(`${s.module} adds process ${s.processes.join(', ')} (its init runs after the swap)`);
    if (s.op === 'update' && prior.get(s.module)?.processes?.some((p) => !s.processes!.includes(p))) {
      warnings.push(`${s.module} no longer defines ${prior.get(s.module)!.processes!.filter((p) => !s.processes!.includes(p)).join(', ')}`);
    }
  }
  for (const c of up.cycles) warnings.push(`import cycle: ${c.join(' → ')}; these modules keep path order`);
  const changedCount = up.steps.filter((s) => s.op !== 'load' || s.reason === 'changed').length;
  if (rolling.length > 0) {
    const reason = `hot is unsafe: ${rolling.join('; ')}`;
    warnings.push(`rolling instead of hot: ${rolling.join('; ')}`);
    return { from: from.id, to: to.id, strategy: 'rolling', reason, blockers: rolling, up: up.steps, down: down.steps, warnings, cycles: up.cycles };
  }
  const reason = up.steps.length === 0 ? 'no module changed' : `${changedCount} module(s) changed, ${up.steps.length} step(s) in place`;
  return { from: from.id, to: to.id, strategy: 'hot', reason, blockers: [], up: up.steps, down: down.steps, warnings, cycles: up.cycles };
}

/** Checks a plan written by hand against the two releases; returns the problems (empty when fine). */
export function validatePlan(plan: unknown, from: ReleaseManifest, to: ReleaseManifest): string[] {
  const problems: string[] = [];
  const p = plan as Partial<UpgradePlan>;
  if (!p || typeof p !== 'object' || !Array.isArray(p.up) || !Array.isArray(p.down)) return ['a plan needs `up` and `down` lists of instructions'];
  const check = (list: UpgradeInstruction[], side: string, target: ReleaseManifest, source: ReleaseManifest) => {
    const inTarget = new Set(target.modules.map((m) => m.path));
    const inSource = new Set(source.modules.map((m) => m.path));
    list.forEach((i, n) => {
      const at = `${side}[${n}]`;
      if (!['update', 'load', 'add', 'remove', 'apply'].includes(i?.op)) problems.push(`${at}: op must be update, load, add, remove or apply (got ${JSON.stringify(i?.op)})`);
      else if (typeof i.module !== 'string') problems.push(`${at}: module must be a path`);
      else if (i.op === 'remove' ? !inSource.has(i.module) : !inTarget.has(i.module)) {
        problems.push(`${at}: ${i.op} names module ${i.module}, which the ${i.op === 'remove' ? 'old' : 'new'} release lacks`);
      } else if (i.op === 'apply' && typeof i.fn !== 'string') problems.push(`${at}: apply needs fn, the exported function to run`);
    });
  };
  check(p.up, 'up', to, from);
  check(p.down, 'down', from, to);
  return problems;
}
