import { existsSync, readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';

/**
 * Where `@molt/app` lives for this copy of molt: the one copy every app config and worker uses.
 * A sandboxed worker is told (`MOLT_APP_ENTRY`): the node_modules it would be resolved from are not
 * in its sandbox.
 */
export const MOLT_APP_ENTRY = process.env.MOLT_APP_ENTRY ?? createRequire(import.meta.url).resolve('@molt/app');

/** The directory of that copy's package (the one holding its package.json). */
export function moltAppPackageDir(): string {
  let dir = dirname(MOLT_APP_ENTRY);
  while (dirname(dir) !== dir) {
    const pkg = join(dir, 'package.json');
    if (existsSync(pkg) && (JSON.parse(readFileSync(pkg, 'utf8')) as { name?: string }).name === '@molt/app') return dir;
    dir = dirname(dir);
  }
  throw new Error(`cannot find the package of @molt/app above ${MOLT_APP_ENTRY}`);
}
