import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { dirname, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { MOLT_APP_ENTRY } from './molt-app-entry.js';

/** Relative module specifiers in a compiled file: static imports, re-exports, `import()` and `register()` of a literal path. */
const RELATIVE = /(?:\bfrom\s*|\bimport\s*\(\s*|\bimport\s+|\bregister\s*\(\s*)["'](\.\.?\/[^"']+)["']/g;

/** The file and every file it reaches by relative imports, each once. */
function closure(entry: string, into: Map<string, Buffer>): void {
  if (into.has(entry)) return;
  const content = readFileSync(entry);
  into.set(entry, content);
  for (const m of content.toString('utf8').matchAll(RELATIVE)) closure(resolve(dirname(entry), m[1]!), into);
}

let cached: string | undefined;

/**
 * Which worker runtime this molt starts workers with: a hash of the code a worker runs besides its
 * app (worker-main and every module it reaches, and `@molt/app`). Workers keep the runtime they were
 * started with through adoptions and takeovers; a newer molt whose runtime differs replaces them.
 */
export function runtimeId(): string {
  if (cached) return cached;
  const files = new Map<string, Buffer>();
  closure(fileURLToPath(new URL('./worker-main.js', import.meta.url)), files);
  closure(MOLT_APP_ENTRY, files);
  const hash = createHash('sha256');
  // By content only: the same code copied elsewhere is the same runtime.
  for (const content of [...files.values()].map((c) => createHash('sha256').update(c).digest('hex')).sort()) hash.update(content);
  cached = hash.digest('hex').slice(0, 12);
  return cached;
}
