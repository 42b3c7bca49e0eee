// Transpiles every package's src/**/*.ts to dist/ file by file (no bundling), so that
// `npx molt` and the worker runtime run plain JavaScript. Type checking is `npm run typecheck`.
import { build } from 'esbuild';
import { readdirSync, rmSync, statSync } from 'node:fs';
import { join } from 'node:path';

const packages = ['packages/app', 'packages/molt'];

function sources(dir) {
  return readdirSync(dir).flatMap((name) => {
    const path = join(dir, name);
    if (statSync(path).isDirectory()) return sources(path);
    return name.endsWith('.ts') && !name.endsWith('.test.ts') && !name.endsWith('.d.ts') ? [path] : [];
  });
}

for (const pkg of packages) {
  rmSync(join(pkg, 'dist'), { recursive: true, force: true });
  await build({
    entryPoints: sources(join(pkg, 'src')),
    outdir: join(pkg, 'dist'),
    outbase: join(pkg, 'src'),
    format: 'esm',
    platform: 'node',
    target: 'node20',
    sourcemap: 'linked',
    logLevel: 'warning',
  });
}
