import { build } from 'esbuild';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { MOLT_APP_ENTRY } from '../runtime/molt-app-entry.js';
import { dirname, extname, join, resolve } from 'node:path';
import { pathToFileURL } from 'node:url';
import { parse as parseYaml } from 'yaml';
import { MoltError } from '../errors.js';
import type { AppSpec } from './app-spec.js';
import { validateAppConfig } from './validate-config.js';
import type { UpgradeInstruction } from '../runtime/control-messages.js';

export { CONFIG_FILES } from './config-files.js';
import { CONFIG_FILES } from './config-files.js';


/** `planTransform` of molt.config.ts: gets the generated plan's steps, returns the ones to use. */
export type PlanTransform = (plan: { from: string; to: string; up: UpgradeInstruction[]; down: UpgradeInstruction[] }) => { up: UpgradeInstruction[]; down: UpgradeInstruction[] };

export interface LoadedConfig {
  /** The config's plan transform, if it has one (functions live only in molt.config.ts/js). */
  planTransform?: PlanTransform;
  spec: AppSpec;
  /** Directory the config sits in; `entry` is relative to it. */
  appDir: string;
  /** The config file that was read. */
  file: string;
}

/** Finds the config of the app in `dir` (or the manifest `file`), evaluates it and validates it. */
export async function loadAppConfig(dir: string, file?: string): Promise<LoadedConfig> {
  const path = file ? resolve(file) : CONFIG_FILES.map((f) => join(resolve(dir), f)).find((f) => existsSync(f));
  if (!path) {
    throw new MoltError(
      'MOLT_ERR_INVALID_CONFIG',
      `no app config in ${resolve(dir)}: create molt.config.ts (export default defineApp({ name, entry })) or pass --file manifest.yaml`,
    );
  }
  if (!existsSync(path)) throw new MoltError('MOLT_ERR_INVALID_CONFIG', `config file ${path} does not exist; check the --file path`);
  const raw = await readConfigValue(path);
  const transform = (raw as { planTransform?: unknown } | undefined)?.planTransform;
  return { spec: validateAppConfig(raw, path), appDir: dirname(path), file: path, planTransform: typeof transform === 'function' ? (transform as PlanTransform) : undefined };
}

async function readConfigValue(path: string): Promise<unknown> {
  const ext = extname(path);
  const text = readFileSync(path, 'utf8');
  try {
    if (ext === '.json') return JSON.parse(text);
    if (ext === '.yaml' || ext === '.yml') return parseYaml(text);
  } catch (err) {
    throw new MoltError('MOLT_ERR_INVALID_CONFIG', `${path} could not be parsed: ${(err as Error).message}`, { cause: err });
  }
  return evaluateModule(path);
}

/** Bundles a TypeScript/JavaScript config with esbuild (resolving `@molt/app` to molt's own copy) and imports it. */
async function evaluateModule(path: string): Promise<unknown> {
  // Written beside the config so that packages it imports resolve from the app's node_modules.
  const cacheDir = join(dirname(path), '.molt');
  mkdirSync(cacheDir, { recursive: true });
  const outDir = mkdtempSync(join(cacheDir, 'config-'));
  const outFile = join(outDir, 'config.mjs');
  try {
    await build({
      entryPoints: [path],
      outfile: outFile,
      bundle: true,
      format: 'esm',
      platform: 'node',
      target: 'node20',
      packages: 'external',
      alias: { '@molt/app': MOLT_APP_ENTRY },
      logLevel: 'silent',
    });
    const mod = (await import(pathToFileURL(outFile).href)) as { default?: unknown };
    if (mod.default === undefined) {
      throw new MoltError('MOLT_ERR_INVALID_CONFIG', `${path} has no default export; end it with export default defineApp({ ... })`);
    }
    return mod.default;
  } catch (err) {
    if (err instanceof MoltError) throw err;
    throw new MoltError('MOLT_ERR_INVALID_CONFIG', `${path} could not be evaluated: ${(err as Error).message}`, { cause: err });
  } finally {
    rmSync(outDir, { recursive: true, force: true });
  }
}
