import { symlinkSync } from 'node:fs';
import { join } from 'node:path';
import { ROOT, tempDir, writeApp } from '../helpers.js';

/**
 * An app written in the style of a public framework, in a temp dir: its package.json names the
 * framework packages it uses, which resolve (as after `npm install`) from the repository's
 * node_modules, where they came from the npm registry.
 */
export function compatApp(name: string, files: Record<string, string>, opts: { dependencies?: string[]; config?: Record<string, unknown> } = {}): string {
  const dir = join(tempDir('molt-compat-'), name);
  const dependencies = Object.fromEntries((opts.dependencies ?? []).map((d) => [d, '*']));
  writeApp(dir, {
    'package.json': JSON.stringify({ name, version: '1.0.0', type: 'module', dependencies }),
    'molt.config.json': JSON.stringify({ name, entry: 'index.ts', readiness: { path: '/', timeoutMs: 10_000 }, ...opts.config }),
    ...files,
  });
  symlinkSync(join(ROOT, 'node_modules'), join(dir, 'node_modules'));
  return dir;
}
