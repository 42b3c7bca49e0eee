import { MoltError } from '../errors.js';
import { NAME } from '../names.js';
import type { AppConfig, AppSpec } from './app-spec.js';

/** How long a worker taken out of service has for its requests in flight, unless its config says (`rollout.drainTimeoutMs`). */
export const DEFAULT_DRAIN_TIMEOUT_MS = 30_000;
export const DEFAULT_STOP_GRACE_MS = 5_000;
/** A volume of the app's namespace, or `owner-namespace/name`. */
const VOLUME_REF = /^([a-z][a-z0-9-]{0,62}\/)?[a-z][a-z0-9-]{0,62}$/;
const ENV_NAME = /^[A-Za-z_][A-Za-z0-9_]*$/;
const REVISION = /^\d{6}-[0-9a-f]{3}$/;
const KNOWN = new Set(['name', 'entry', 'workers', 'readiness', 'env', 'resources', 'volumes', 'updatable', 'public', 'domains', 'rollout', 'hot', 'planTransform']);
/** A hostname: dot-separated labels of letters, digits and inner dashes, lower case, at least two. */
export const HOSTNAME = /^(?=.{1,253}$)([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$/;

/** A domain the server routes apps under: a hostname, or one label such as `localhost` (browsers send *.localhost to this machine). */
export const SERVER_DOMAIN = /^(?=.{1,253}$)([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)*[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$/;

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

/**
 * Bounds on what a config may ask for, so that every request is bounded before anything is
 * allocated for it. `maxWorkers` is the server's (`--max-workers-per-app`); the rest are fixed.
 */
export interface ConfigLimits {
  maxWorkers: number;
}

/** A client checks everything but the server's own limits, which the server checks again. */
const NO_SERVER_LIMITS: ConfigLimits = { maxWorkers: Number.MAX_SAFE_INTEGER };

export const LIMITS = {
  envVars: 256,
  envBytes: 64 * 1024,
  envNameLength: 256,
  volumes: 32,
  gpuConstraints: 16,
  textLength: 1024,
  domains: 32,
  cpu: 1024,
  memoryMb: 16 * 1024 * 1024,
  gpu: 64,
  /** An hour: longer than any readiness, drain or canary wait needs to be. */
  longestWaitMs: 60 * 60 * 1000,
  permanentAfterMs: 24 * 60 * 60 * 1000,
  maxRetainedModules: 1_000_000,
} as const;

function positiveInt(p: Problems, field: string, v: unknown, fallback: number, min = 1, max: number = Number.MAX_SAFE_INTEGER, limitNote = ''): number {
  if (v === undefined) return fallback;
  if (typeof v !== 'number' || !Number.isInteger(v) || v < min || v > max) {
    const range = max === Number.MAX_SAFE_INTEGER ? `of at least ${min}` : `from ${min} to ${max}${limitNote}`;
    p.add(field, `must be an integer ${range} (got ${show(v)})`, `set it to a number such as ${Math.min(max, Math.max(min, fallback))}`);
    return fallback;
  }
  return v;
}

/**
 * Validates an app config (from `molt.config.ts`, YAML or JSON) and fills defaults.
 * Throws `MOLT_ERR_INVALID_CONFIG` naming every bad field, what is wrong and how to fix it.
 */
export function validateAppConfig(input: unknown, source = 'app config', limits: ConfigLimits = NO_SERVER_LIMITS): AppSpec {
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
  if (typeof entry !== 'string' || entry.length === 0 || entry.length > LIMITS.textLength || entry.startsWith('/') || entry.split(/[\\/]/).includes('..')) {
    p.add('entry', `must be a relative path inside the app directory (got ${show(c.entry)})`, 'set e.g. entry: "app.ts"');
  }
  const workers = positiveInt(p, 'workers', c.workers, 1, 0, limits.maxWorkers, ", the server's limit per app (--max-workers-per-app)");

  const readiness = { path: '/', timeoutMs: 30_000 };
  if (c.readiness !== undefined) {
    if (!isObject(c.readiness)) p.add('readiness', `must be an object (got ${show(c.readiness)})`, 'set e.g. readiness: { path: "/health" }');
    else {
      if (c.readiness.path !== undefined) {
        if (typeof c.readiness.path !== 'string' || !c.readiness.path.startsWith('/') || c.readiness.path.length > LIMITS.textLength || /[\s\0]/.test(c.readiness.path)) {
          p.add('readiness.path', `must start with "/", hold no spaces and be at most ${LIMITS.textLength} characters (got ${show(c.readiness.path).slice(0, 80)})`, 'set e.g. path: "/health"');
        } else readiness.path = c.readiness.path;
      }
      readiness.timeoutMs = positiveInt(p, 'readiness.timeoutMs', c.readiness.timeoutMs, readiness.timeoutMs, 100, LIMITS.longestWaitMs);
    }
  }

  const env: Record<string, string> = {};
  if (c.env !== undefined) {
    if (!isObject(c.env)) p.add('env', `must be an object of strings (got ${show(c.env)})`, 'set e.g. env: { LOG_LEVEL: "info" }');
    else {
      const entries = Object.entries(c.env);
      const bytes = entries.reduce((n, [k, v]) => n + k.length + (typeof v === 'string' ? Buffer.byteLength(v) : 0) + 2, 0);
      if (entries.length > LIMITS.envVars) p.add('env', `has ${entries.length} variables, over the limit of ${LIMITS.envVars}`, 'keep large or many settings in a volume and read them from there');
      else if (bytes > LIMITS.envBytes) p.add('env', `holds ${bytes} bytes, over the limit of ${LIMITS.envBytes}`, 'keep large settings in a volume and read them from there');
      else for (const [k, v] of entries) {
        if (!ENV_NAME.test(k) || k.length > LIMITS.envNameLength) p.add(`env.${k.slice(0, 80)}`, `is not a valid variable name (letters, digits and _, at most ${LIMITS.envNameLength})`, 'use letters, digits and _');
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
        if (typeof r.cpu !== 'number' || !(r.cpu > 0) || r.cpu > LIMITS.cpu) p.add('resources.cpu', `must be a number of cores above 0 and at most ${LIMITS.cpu} (got ${show(r.cpu)})`, 'set e.g. cpu: 0.5');
        else resources.cpu = r.cpu;
      }
      if (r.memoryMb !== undefined) resources.memoryMb = positiveInt(p, 'resources.memoryMb', r.memoryMb, 512, 16, LIMITS.memoryMb);
      if (r.gpu !== undefined) resources.gpu = positiveInt(p, 'resources.gpu', r.gpu, 0, 0, LIMITS.gpu);
      if (r.gpuConstraints !== undefined) {
        if (
          !Array.isArray(r.gpuConstraints) ||
          r.gpuConstraints.length > LIMITS.gpuConstraints ||
          !r.gpuConstraints.every((g) => typeof g === 'string' && g.trim() !== '' && g.length <= 100)
        ) {
          p.add('resources.gpuConstraints', `must be a list of at most ${LIMITS.gpuConstraints} GPU model names (got ${show(r.gpuConstraints).slice(0, 200)})`, 'set e.g. gpuConstraints: ["A100 40G", "RTX 4090"]');
        } else resources.gpuConstraints = r.gpuConstraints as string[];
      }
    }
  }

  const volumes: AppSpec['volumes'] = [];
  if (c.volumes !== undefined) {
    if (!Array.isArray(c.volumes)) p.add('volumes', `must be a list (got ${show(c.volumes)})`, 'set e.g. volumes: [{ name: "data" }]');
    else if (c.volumes.length > LIMITS.volumes) p.add('volumes', `lists ${c.volumes.length} volumes, over the limit of ${LIMITS.volumes}`, 'merge volumes');
    else {
      c.volumes.forEach((v: unknown, i: number) => {
        const field = `volumes[${i}]`;
        if (!isObject(v) || typeof v.name !== 'string' || !VOLUME_REF.test(v.name)) {
          p.add(field, `must be { name, revision? | useLatest? } with a valid name, or owner-namespace/name for a shared volume (got ${show(v).slice(0, 200)})`, 'set e.g. { name: "my-volume" }');
          return;
        }
        if (volumes.some((other) => other.name === v.name)) {
          p.add(field, `names volume ${v.name} a second time`, 'list each volume once');
          return;
        }
        const init = v.init;
        if (init !== undefined && (typeof init !== 'string' || init.length === 0 || init.length > LIMITS.textLength)) {
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

  const domains: string[] = [];
  if (c.domains !== undefined) {
    if (!Array.isArray(c.domains)) p.add('domains', `must be a list of hostnames (got ${show(c.domains)})`, 'set e.g. domains: ["shop.example.com"]');
    else if (c.domains.length > LIMITS.domains) p.add('domains', `lists ${c.domains.length} hostnames, more than ${LIMITS.domains}`, 'keep the ones the app answers on');
    else {
      c.domains.forEach((d, i) => {
        if (typeof d !== 'string' || !HOSTNAME.test(d)) {
          p.add(`domains[${i}]`, `is not a hostname (got ${show(d)})`, 'write it lower case, without scheme, port or path, e.g. "shop.example.com"');
        } else if (domains.includes(d)) p.add(`domains[${i}]`, `repeats ${d}`, 'list each hostname once');
        else domains.push(d);
      });
    }
  }

  const rollout = { maxSurge: 1, maxUnavailable: 0, drainTimeoutMs: DEFAULT_DRAIN_TIMEOUT_MS, stopGraceMs: DEFAULT_STOP_GRACE_MS };
  if (c.rollout !== undefined) {
    if (!isObject(c.rollout)) p.add('rollout', `must be an object (got ${show(c.rollout)})`, 'set e.g. rollout: { maxSurge: 1 }');
    else {
      rollout.maxSurge = positiveInt(p, 'rollout.maxSurge', c.rollout.maxSurge, 1, 0, limits.maxWorkers, ", the server's limit of workers per app");
      rollout.maxUnavailable = positiveInt(p, 'rollout.maxUnavailable', c.rollout.maxUnavailable, 0, 0, limits.maxWorkers, ", the server's limit of workers per app");
      if (rollout.maxSurge === 0 && rollout.maxUnavailable === 0) {
        p.add('rollout', 'has maxSurge 0 and maxUnavailable 0, so no worker could ever be replaced', 'set maxSurge: 1 (a new worker beside the old ones) or maxUnavailable: 1 (replace in place)');
      }
      rollout.drainTimeoutMs = positiveInt(p, 'rollout.drainTimeoutMs', c.rollout.drainTimeoutMs, DEFAULT_DRAIN_TIMEOUT_MS, 0, LIMITS.longestWaitMs);
      rollout.stopGraceMs = positiveInt(p, 'rollout.stopGraceMs', c.rollout.stopGraceMs, 5_000, 0, LIMITS.longestWaitMs);
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
      hot.canaryWindowMs = positiveInt(p, 'hot.canaryWindowMs', c.hot.canaryWindowMs, 1000, 0, LIMITS.longestWaitMs);
      hot.suspendTimeoutMs = positiveInt(p, 'hot.suspendTimeoutMs', c.hot.suspendTimeoutMs, 5000, 1, LIMITS.longestWaitMs);
      hot.maxRetainedModules = positiveInt(p, 'hot.maxRetainedModules', c.hot.maxRetainedModules, 2000, 1, LIMITS.maxRetainedModules);
      hot.permanentAfterMs = positiveInt(p, 'hot.permanentAfterMs', c.hot.permanentAfterMs, 10_000, 0, LIMITS.permanentAfterMs);
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
    domains,
    rollout,
    hot,
  };
}
