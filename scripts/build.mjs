// Transpiles every package's src/**/*.ts to dist/ file by file (no bundling), so that
// `npx molt` and the worker runtime run plain JavaScript; then bundles the dashboard (Preact and
// uPlot, packages/molt/dashboard) into packages/molt/dist/dashboard: one script and one stylesheet,
// named by their content's hash, and the index.html that loads them. Type checking is
// `npm run typecheck`.
import { build } from 'esbuild';
import { createHash } from 'node:crypto';
import { mkdirSync, readdirSync, readFileSync, renameSync, rmSync, statSync, writeFileSync } from 'node:fs';
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

const dashboard = 'packages/molt/dashboard';
const assets = join('packages/molt/dist/dashboard/assets');
mkdirSync(assets, { recursive: true });
const bundle = await build({
  entryPoints: { app: join(dashboard, 'src/main.tsx') },
  outdir: assets,
  bundle: true,
  format: 'esm',
  platform: 'browser',
  target: ['chrome111', 'firefox111', 'safari16.4'],
  jsx: 'automatic',
  jsxImportSource: 'preact',
  minify: true,
  sourcemap: false,
  legalComments: 'none',
  metafile: true,
  logLevel: 'warning',
});
/** Each output renamed to carry its hash, so the server can let browsers cache it for good. */
const named = {};
for (const out of Object.keys(bundle.metafile.outputs)) {
  const body = readFileSync(out);
  const ext = out.slice(out.lastIndexOf('.'));
  const name = `app-${createHash('sha256').update(body).digest('hex').slice(0, 12)}${ext}`;
  renameSync(out, join(assets, name));
  named[ext] = name;
}
const html = readFileSync(join(dashboard, 'index.html'), 'utf8').replace('%JS%', named['.js']).replace('%CSS%', named['.css']);
writeFileSync(join('packages/molt/dist/dashboard/index.html'), html);
