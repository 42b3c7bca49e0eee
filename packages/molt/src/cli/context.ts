import type { Command } from 'commander';
import { existsSync } from 'node:fs';
import { resolve } from 'node:path';
import { MoltError } from '../errors.js';
import { CONFIG_FILES } from '../config/config-files.js';
import { currentProfile } from './profile.js';

export interface AppTarget {
  namespace: string;
  app: string;
}

export interface AppOptions {
  app?: string;
  namespace?: string;
  file?: string;
  dir?: string;
}

/** The namespace: `-n`, else the profile's, else `default`. */
export function namespaceOf(opts: { namespace?: string }): string {
  return opts.namespace ?? currentProfile().namespace ?? 'default';
}

/** The app a command acts on: `--app NAME`, else the config in the current directory. */
export async function appTarget(opts: AppOptions): Promise<AppTarget> {
  const namespace = namespaceOf(opts);
  if (opts.app) return { namespace, app: opts.app };
  const dir = resolve(opts.dir ?? '.');
  if (!opts.file && !CONFIG_FILES.some((f) => existsSync(resolve(dir, f)))) {
    throw new MoltError('MOLT_ERR_BAD_REQUEST', `no app named: pass --app NAME, or run this in an app directory (with ${CONFIG_FILES[0]})`);
  }
  const { loadAppConfig } = await import('../config/load-config.js');
  const { spec } = await loadAppConfig(dir, opts.file);
  return { namespace, app: spec.name };
}

/** `--dir` and `--file`: where the app's code and config are, for the commands that build it. */
export function sourceOptions(c: Command): Command {
  return c.option('--dir <dir>', 'app directory', '.').option('--file <manifest>', 'a YAML or JSON manifest instead of molt.config.ts');
}
