// Build times of `molt release build`, end to end as a user runs it (CLI start included): cold (no
// earlier build), unchanged (a cache hit), one module changed, a dependency added; for a small app
// and for one with a large dependency tree.
import { execFileSync } from 'node:child_process';
import { mkdirSync, symlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { MOLT, ROOT, run, tmp } from './lib.mjs';

function duMiB(dir) {
  return Number(execFileSync('du', ['-sLm', dir], { encoding: 'utf8' }).split('\t')[0]);
}

function writeApp(name, dependencies) {
  const dir = join(tmp('molt-bench-build-'), name);
  mkdirSync(join(dir, 'lib'), { recursive: true });
  writeFileSync(join(dir, 'package.json'), JSON.stringify({ name, version: '1.0.0', type: 'module', dependencies: Object.fromEntries(dependencies.map((d) => [d, '*'])) }));
  writeFileSync(join(dir, 'molt.config.json'), JSON.stringify({ name, entry: 'index.ts' }));
  for (let i = 0; i < 10; i++) writeFileSync(join(dir, 'lib', `m${i}.ts`), `export const m${i} = (n: number) => n + ${i};\n`);
  writeFileSync(join(dir, 'index.ts'), `import { Hono } from 'hono';\n${Array.from({ length: 10 }, (_, i) => `import { m${i} } from './lib/m${i}.ts';`).join('\n')}\nconst app = new Hono();\napp.get('/', (c) => c.text(String(${Array.from({ length: 10 }, (_, i) => `m${i}(1)`).join(' + ')})));\nexport default app;\n`);
  // As after `npm install`: the packages resolve from the repository's node_modules.
  symlinkSync(join(ROOT, 'node_modules'), join(dir, 'node_modules'));
  return dir;
}

async function timed(dir) {
  const t0 = performance.now();
  const r = await run(process.execPath, [MOLT, 'release', 'build'], { cwd: dir });
  const ms = performance.now() - t0;
  return { ms, work: r.stdout.split('\n').find((l) => l.includes('compiled') || l.includes('unchanged'))?.trim() ?? '' };
}

export async function benchBuilds({ rounds = 3 } = {}) {
  const apps = [
    ['small app (hono, 11 modules)', ['hono'], 'itty-router'],
    ['large dependency tree (hono, typescript, kysely, fastify, pino; 11 modules)', ['hono', 'typescript', 'kysely', 'fastify', 'pino'], 'itty-router'],
  ];
  const out = [];
  for (const [label, deps, added] of apps) {
    const steps = { cold: [], unchanged: [], 'one module changed': [], 'dependency added': [] };
    let size = 0;
    let work = {};
    for (let r = 0; r < rounds; r++) {
      const dir = writeApp(`b${r}`, deps);
      const record = (step, t) => {
        steps[step].push(t.ms);
        work[step] = t.work;
      };
      record('cold', await timed(dir));
      size = duMiB(join(dir, '.molt', 'build'));
      record('unchanged', await timed(dir));
      writeFileSync(join(dir, 'lib', 'm3.ts'), `export const m3 = (n: number) => n * ${r + 3};\n`);
      record('one module changed', await timed(dir));
      writeFileSync(join(dir, 'package.json'), JSON.stringify({ name: `b${r}`, version: '1.0.0', type: 'module', dependencies: Object.fromEntries([...deps, added].map((d) => [d, '*'])) }));
      record('dependency added', await timed(dir));
    }
    out.push({ label, size, steps, work });
  }
  return out;
}
