import { MoltError } from '../errors.js';
import { NAME } from '../names.js';
import type { AppConfig, AppSpec } from './app-spec.js';

/** A volume of the app's namespace, or `owner-namespace/name`. */
const VOLUME_REF = /^([a-z][a-z0-9-]{0,62}\/)?[a-z][a-z0-9-]{0,62}$/;
const ENV_NAME = /^[A-Za-z_][A-Za-z0-9_]*$/;
const REVISION = /^\d{6}-[0-9a-f]{3}$/;
const KNOWN = new Set(['name', 'entry', 'workers', 'readiness', 'env', 'resources', 'volumes', 'updatable', 'public', 'rollout', 'hot', 'planTransform']);

/** Collects every problem of a config, so the user fixes them in one pass. */
class Problems {
  readonly list: string[] = [];
  add(field: string, problem: string, fix: string): void {
    this.list.push(`\`${field}\` ${problem}; ${fix}`);
  }
}

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function show(v: unknown): string {
  return JSON.stringify(v) ?? String(v);
}

function positiveInt(p: Problems, field: string, v: unknown, fallback: number, min = 1): number {
  if (v === undefined) return fallback;
  if (typeof v !== 'number' || !Number.isInteger(v) || v < min) {
    p.add(field, `must be an integer of at least ${min} (got ${show(v)})`, `set it to a number such as ${Math.max(min, fallback)}`);
    return fallback;
  }
  return v;
}

/**
 * Validates an app config (from `molt.config.ts`, YAML or JSON) and fills defaults.
 * Throws `MOLT_ERR_INVALID_CONFIG` naming every bad field, what is wrong and how to fix it.
 */
export function validateAppConfig(input: unknown, source = 'app config'): AppSpec {
  const p = new Problems();
  if (!isObject(input)) {
    throw new MoltError('MOLT_ERR_INVALID_CONFIG', `${source}: must be an object (got ${show(input)}); export defineApp({ name: ... })`);
  }
  const c = input as Partial<AppConfig> & Record<string, unknown>;
  for (const key of Object.keys(c)) {
    if (!KNOWN.has(key)) p.add(key, 'is not a known field', `remove it or use one of ${[...KNOWN].join(', ')}`);
  }
  if (typeof c.name !== 'string' || !NAME.test(c.name)) {
    p.add('name', `must be lower-case letters, digits and dashes, starting with a letter (got ${show(c.name)})`, 'set e.g. name: "my-app"');
  }
  const entry = c.entry ?? 'index.ts';
  if (typeof entry !== 'string' || entry.length === 0 || entry.startsWith('/') || entry.split(/[\\/]/).includes('..')) {
    p.add('entry', `must be a relative path inside the app directory (got ${show(c.entry)})`, 'set e.g. entry: "app.ts"');
  }
  const workers = positiveInt(p, 'workers', c.workers, 1, 0);

  const readiness = { path: '/', timeoutMs: 30_000 };
  if (c.readiness !== undefined) {
    if (!isObject(c.readiness)) p.add('readiness', `must be an object (got ${show(c.readiness)})`, 'set e.g. readiness: { path: "/health" }');
    else {
      if (c.readiness.path !== undefined) {
        if (typeof c.readiness.path !== 'string' || !c.readiness.path.startsWith('/')) {
          p.add('readiness.path', `must start with "/" (got ${show(c.readiness.path)})`, 'set e.g. path: "/health"');
        } else readiness.path = c.readiness.path;
      }
      readiness.timeoutMs = positiveInt(p, 'readiness.timeoutMs', c.readiness.timeoutMs, readiness.timeoutMs, 100);
    }
  }

  const env: Record<string, string> = {};
  if (c.env !== undefined) {
    if (!isObject(c.env)) p.add('env', `must be an object of strings (got ${show(c.env)})`, 'set e.g. env: { LOG_LEVEL: "info" }');
    else {
      for (const [k, v] of Object.entries(c.env)) {
        if (!ENV_NAME.test(k)) p.add(`env.${k}`, 'is not a valid variable name', 'use letters, digits and _');
        else if (k.startsWith('MOLT_')) p.add(`env.${k}`, 'uses the MOLT_ prefix, which the runtime reserves', 'rename it');
        else if (typeof v !== 'string') p.add(`env.${k}`, `must be a string (got ${show(v)})`, `quote it: "${String(v)}"`);
        else env[k] = v;
      }
    }
  }

  const resources: AppSpec['resources'] = {};
  if (c.resources !== undefined) {
    if (!isObject(c.resources)) p.add('resources', `must be an object (got ${show(c.resources)})`, 'set e.g. resources: { cpu: 1, memoryMb: 512 }');
    else {
      const r = c.resources;
      for (const key of Object.keys(r)) {
        if (!['cpu', 'memoryMb', 'gpu', 'gpuConstraints'].includes(key)) p.add(`resources.${key}`, 'is not a known resource', 'use cpu, memoryMb, gpu or gpuConstraints');
      }
      if (r.cpu !== undefined) {
        if (typeof r.cpu !== 'number' || !(r.cpu > 0)) p.add('resources.cpu', `must be a number of cores above 0 (got ${show(r.cpu)})`, 'set e.g. cpu: 0.5');
        else resources.cpu = r.cpu;
      }
      if (r.memoryMb !== undefined) resources.memoryMb = positiveInt(p, 'resources.memoryMb', r.memoryMb, 512, 16);
      if (r.gpu !== undefined) resources.gpu = positiveInt(p, 'resources.gpu', r.gpu, 0, 0);
      if (r.gpuConstraints !== undefined) {
        if (!Array.isArray(r.gpuConstraints) || !r.gpuConstraints.every((g) => typeof g === 'string' && g.trim() !== '')) {
          p.add('resources.gpuConstraints', `must be a list of GPU model names (got ${show(r.gpuConstraints)})`, 'set e.g. gpuConstraints: ["A100 40G", "RTX 4090"]');
        } else resources.gpuConstraints = r.gpuConstraints as string[];
      }
    }
  }

  const volumes: AppSpec['volumes'] = [];
  if (c.volumes !== undefined) {
    if (!Array.isArray(c.volumes)) p.add('volumes', `must be a list (got ${show(c.volumes)})`, 'set e.g. volumes: [{ name: "data" }]');
    else {
      c.volumes.forEach((v: unknown, i: number) => {
        const field = `volumes[${i}]`;
        if (!isObject(v) || typeof v.name !== 'string' || !VOLUME_REF.test(v.name)) {
          p.add(field, `must be { name, revision? | useLatest? } with a valid name, or owner-namespace/name for a shared volume (got ${show(v)})`, 'set e.g. { name: "my-volume" }');
          return;
        }
        const init = v.init;
        if (init !== undefined && (typeof init !== 'string' || init.length === 0)) {
          p.add(`${field}.init`, `must be a directory path (got ${show(init)})`, 'set e.g. init: "./volume-data", or leave it out');
          return;
        }
        const extra = init === undefined ? {} : { init: init as string };
        if (v.revision !== undefined && v.useLatest !== undefined) {
          p.add(field, 'sets both revision and useLatest', 'keep one: a pinned revision or useLatest: true');
        } else if (v.revision !== undefined) {
          if (typeof v.revision !== 'string' || !REVISION.test(v.revision)) p.add(`${field}.revision`, `must look like 000001-08a (got ${show(v.revision)})`, 'copy it from `molt volume get`');
          else volumes.push({ name: v.name, revision: v.revision, ...extra });
        } else if (v.useLatest !== undefined && v.useLatest !== true) {
          p.add(`${field}.useLatest`, `must be true when set (got ${show(v.useLatest)})`, 'pin a revision instead to stop following the latest');
        } else volumes.push({ name: v.name, useLatest: true, ...extra });
      });
    }
  }

  for (const flag of ['updatable', 'public'] as const) {
    if (c[flag] !== undefined && typeof c[flag] !== 'boolean') p.add(flag, `must be true or false (got ${show(c[flag])})`, `set ${flag}: true`);
  }

  const rollout = { maxSurge: 1, maxUnavailable: 0, drainTimeoutMs: 30_000, stopGraceMs: 5_000 };
  if (c.rollout !== undefined) {
    if (!isObject(c.rollout)) p.add('rollout', `must be an object (got ${show(c.rollout)})`, 'set e.g. rollout: { maxSurge: 1 }');
    else {
      rollout.maxSurge = positiveInt(p, 'rollout.maxSurge', c.rollout.maxSurge, 1, 0);
      rollout.maxUnavailable = positiveInt(p, 'rollout.maxUnavailable', c.rollout.maxUnavailable, 0, 0);
      if (rollout.maxSurge === 0 && rollout.maxUnavailable === 0) {
        p.add('rollout', 'has maxSurge 0 and maxUnavailable 0, so no worker could ever be replaced', 'set maxSurge: 1 (a new worker beside the old ones) or maxUnavailable: 1 (replace in place)');
      }
      rollout.drainTimeoutMs = positiveInt(p, 'rollout.drainTimeoutMs', c.rollout.drainTimeoutMs, 30_000, 0);
      rollout.stopGraceMs = positiveInt(p, 'rollout.stopGraceMs', c.rollout.stopGraceMs, 5_000, 0);
    }
  }

  if (c.planTransform !== undefined && typeof c.planTransform !== 'function') {
    p.add('planTransform', `must be a function (got ${show(c.planTransform)})`, 'set it in molt.config.ts: planTransform: (plan) => ({ up: plan.up, down: plan.down })');
  }
  const hot = { canaryWindowMs: 1000, suspendTimeoutMs: 5000, maxRetainedModules: 2000, permanentAfterMs: 10_000 };
  if (c.hot !== undefined) {
    if (!isObject(c.hot)) p.add('hot', `must be an object (got ${show(c.hot)})`, 'set e.g. hot: { canaryWindowMs: 1000 }');
    else {
      for (const key of Object.keys(c.hot)) {
        if (!(key in hot)) p.add(`hot.${key}`, 'is not a known setting', 'use canaryWindowMs, suspendTimeoutMs, maxRetainedModules or permanentAfterMs');
      }
      hot.canaryWindowMs = positiveInt(p, 'hot.canaryWindowMs', c.hot.canaryWindowMs, 1000, 0);
      hot.suspendTimeoutMs = positiveInt(p, 'hot.suspendTimeoutMs', c.hot.suspendTimeoutMs, 5000, 1);
      hot.maxRetainedModules = positiveInt(p, 'hot.maxRetainedModules', c.hot.maxRetainedModules, 2000, 1);
      hot.permanentAfterMs = positiveInt(p, 'hot.permanentAfterMs', c.hot.permanentAfterMs, 10_000, 0);
    }
  }

  if (p.list.length > 0) {
    throw new MoltError('MOLT_ERR_INVALID_CONFIG', `${source} is invalid:\n  - ${p.list.join('\n  - ')}`);
  }
  return {
    name: c.name as string,
    entry: entry as string,
    workers,
    readiness,
    env,
    resources,
    volumes,
    updatable: c.updatable ?? true,
    public: c.public ?? false,
    rollout,
    hot,
  };
}
