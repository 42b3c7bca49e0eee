import { build, type Plugin } from 'esbuild';
import { cpSync, existsSync, mkdirSync, readFileSync, realpathSync, rmSync, writeFileSync } from 'node:fs';
import { dirname, extname, join, relative, resolve, sep } from 'node:path';
import type { AppSpec } from '../config/app-spec.js';
import { loadAppConfig } from '../config/load-config.js';
import { MoltError } from '../errors.js';
import { sha256 } from '../ids.js';
import { scanTree, treeHash, type ScannedTree } from '../blobs/tree.js';
import type { ReleaseManifest } from '../store/types.js';

export { MANIFEST_FILE } from './manifest.js';
import { MANIFEST_FILE } from './manifest.js';
const CODE = new Set(['.ts', '.tsx', '.mts', '.cts', '.js', '.jsx', '.mjs', '.cjs']);

export interface BuiltRelease {
  /** Release id: the hash of its tree. */
  id: string;
  dir: string;
  manifest: ReleaseManifest;
  spec: AppSpec;
  appDir: string;
  scanned: ScannedTree;
}

const toPosix = (p: string) => p.split(sep).join('/');
/** `lib/x.ts` → `lib/x.js`: where a module's compiled output lives in the release. */
const outputPath = (rel: string) => toPosix(rel).replace(/\.(tsx?|mts|cts|jsx|mjs|cjs)$/, '.js');

/**
 * Builds a content-addressed release of the app in `dir`: every app module compiled on its own
 * (the module graph is kept, imports rewritten to the compiled files), package.json, lockfile,
 * production node_modules and `molt-release.json`. The release id is its tree's hash, so an
 * unchanged app builds to the same id.
 */
export async function buildRelease(dir: string, opts: { file?: string; outDir?: string } = {}): Promise<BuiltRelease> {
  const { spec, appDir } = await loadAppConfig(dir, opts.file);
  const entryAbs = resolve(appDir, spec.entry);
  if (!existsSync(entryAbs)) {
    throw new MoltError('MOLT_ERR_INVALID_CONFIG', `entry ${spec.entry} does not exist in ${appDir}; set \`entry\` in the app config to your entry module`);
  }
  const outDir = opts.outDir ?? join(appDir, '.molt', 'build');
  rmSync(outDir, { recursive: true, force: true });
  mkdirSync(outDir, { recursive: true });

  const graph = await moduleGraph(appDir, entryAbs);
  await compileModules(appDir, outDir, [...graph.keys()]);

  const modules = [...graph.entries()].map(([rel, imports]) => {
    const path = outputPath(rel);
    const code = readFileSync(join(outDir, path), 'utf8');
    return { path, source: toPosix(rel), hash: sha256(code), imports: imports.map(outputPath).sort(), ...moduleTraits(code) };
  });
  modules.sort((a, b) => (a.path < b.path ? -1 : 1));

  const pkg = readPackageJson(appDir);
  writeFileSync(join(outDir, 'package.json'), `${JSON.stringify({ ...pkg, type: 'module' }, null, 2)}\n`);
  const lockfile = findUp(appDir, 'package-lock.json');
  if (lockfile) cpSync(lockfile, join(outDir, 'package-lock.json'));
  const deps = copyProductionDependencies(appDir, pkg, join(outDir, 'node_modules'));

  const manifest: ReleaseManifest = {
    app: spec.name,
    version: typeof pkg.version === 'string' ? pkg.version : '0.0.0',
    node: process.versions.node,
    dependencyHash: sha256(JSON.stringify(deps)),
    configHash: configHash(spec),
    entry: outputPath(relative(appDir, entryAbs)),
    modules,
  };
  writeFileSync(join(outDir, MANIFEST_FILE), `${JSON.stringify(manifest, null, 2)}\n`);
  const scanned = await scanTree(outDir);
  return { id: treeHash(scanned.tree), dir: outDir, manifest, spec, appDir, scanned };
}

/** The hash of the config fields that change how the app runs (not how many workers it has, nor where it is routed from). */
export function configHash(spec: AppSpec): string {
  const { workers: _w, rollout: _r, hot: _h, domains: _d, ...rest } = spec;
  return sha256(JSON.stringify(rest, Object.keys(rest).sort()));
}

/**
 * What an upgrade plan needs to know of a module: the processes it defines (names given as string
 * literals to `defineProcess`), whether it has a `codeChange`, and whether it exports
 * `configChange` (the hook that lets a runtime config change be applied in place).
 */
export function moduleTraits(code: string): { processes: string[]; codeChange: boolean; configChange: boolean } {
  const processes: string[] = [];
  for (const m of code.matchAll(/\bdefineProcess\s*\(\s*\{[^]*?\bname\s*:\s*(['"`])([^'"`]+)\1/g)) processes.push(m[2]!);
  if (processes.length === 0 && /\bdefineProcess\s*\(/.test(code)) processes.push('(unnamed)');
  return { processes, codeChange: /\bcodeChange\s*[:(]/.test(code), configChange: /export\s+(async\s+)?(function\s+configChange|(const|let)\s+configChange)\b|export\s*\{[^}]*\bconfigChange\b/.test(code) };
}

/** Local modules reachable from the entry, each with the local modules it imports (paths relative to appDir). */
async function moduleGraph(appDir: string, entryAbs: string): Promise<Map<string, string[]>> {
  let result;
  try {
    result = await build({
      absWorkingDir: appDir,
      entryPoints: [entryAbs],
      bundle: true,
      write: false,
      metafile: true,
      packages: 'external',
      platform: 'node',
      format: 'esm',
      target: 'node20',
      logLevel: 'silent',
    });
  } catch (err) {
    throw new MoltError('MOLT_ERR_BAD_RELEASE', `the app does not compile: ${(err as Error).message}`, { cause: err });
  }
  const graph = new Map<string, string[]>();
  for (const [input, info] of Object.entries(result.metafile.inputs)) {
    if (!CODE.has(extname(input)) || input.includes('node_modules/')) continue;
    const imports = info.imports.filter((i) => !i.external && CODE.has(extname(i.path)) && !i.path.includes('node_modules/')).map((i) => i.path);
    graph.set(input, [...new Set(imports)]);
  }
  return graph;
}

/** Compiles each module alone; imports of other app modules stay imports, pointed at the compiled file. */
async function compileModules(appDir: string, outDir: string, modules: string[]): Promise<void> {
  const local = new Set(modules.map((m) => resolve(appDir, m)));
  const keepImports: Plugin = {
    name: 'molt-keep-module-graph',
    setup(b) {
      b.onResolve({ filter: /^\.{1,2}\// }, async (args) => {
        if (args.pluginData === 'inner') return undefined;
        const res = await b.resolve(args.path, { resolveDir: args.resolveDir, kind: args.kind, importer: args.importer, pluginData: 'inner' });
        if (res.errors.length > 0 || !local.has(res.path)) return undefined;
        let spec = toPosix(relative(dirname(args.importer), res.path));
        if (!spec.startsWith('.')) spec = `./${spec}`;
        return { path: outputPath(spec), external: true };
      });
    },
  };
  try {
    await build({
      absWorkingDir: appDir,
      entryPoints: [...local],
      outdir: outDir,
      outbase: appDir,
      outExtension: { '.js': '.js' },
      bundle: true,
      packages: 'external',
      platform: 'node',
      format: 'esm',
      target: 'node20',
      plugins: [keepImports],
      // Stack traces name the user's files and lines (workers run with --enable-source-maps).
      sourcemap: 'linked',
      sourcesContent: false,
      logLevel: 'silent',
    });
  } catch (err) {
    throw new MoltError('MOLT_ERR_BAD_RELEASE', `the app does not compile: ${(err as Error).message}`, { cause: err });
  }
  for (const rel of modules) relocateSourceMap(appDir, outDir, outputPath(rel));
}

/**
 * Points a compiled module's source map at its sources as if they sat beside it in the release
 * (`/app/lib/x.ts` in a sandbox), rather than at the build directory's place in the app's tree,
 * which does not exist where the worker runs.
 */
function relocateSourceMap(appDir: string, outDir: string, out: string): void {
  const file = join(outDir, `${out}.map`);
  if (!existsSync(file)) return;
  const map = JSON.parse(readFileSync(file, 'utf8')) as { sources: string[] };
  const from = dirname(join(outDir, out));
  map.sources = map.sources.map((s) => toPosix(relative(dirname(join(appDir, out)), resolve(from, s))) || s);
  writeFileSync(file, JSON.stringify(map));
}

function readPackageJson(dir: string): Record<string, any> {
  const path = join(dir, 'package.json');
  if (!existsSync(path)) return { name: 'app', private: true };
  try {
    return JSON.parse(readFileSync(path, 'utf8'));
  } catch (err) {
    throw new MoltError('MOLT_ERR_BAD_RELEASE', `${path} is not valid JSON: ${(err as Error).message}`);
  }
}

function findUp(dir: string, name: string): string | undefined {
  for (let d = resolve(dir); ; d = dirname(d)) {
    if (existsSync(join(d, name))) return join(d, name);
    if (dirname(d) === d) return undefined;
  }
}

/** Finds an installed package the way Node does: node_modules of `from` and of every parent. */
function findPackageDir(from: string, name: string): string | undefined {
  for (let d = from; ; d = dirname(d)) {
    const candidate = join(d, 'node_modules', name);
    if (existsSync(join(candidate, 'package.json'))) return realpathSync(candidate);
    if (dirname(d) === d) return undefined;
  }
}

/**
 * Copies the production dependency closure into `dest`, flattened where versions agree and
 * nested under the dependent where they do not. `@molt/app` is left out: the runtime serves it.
 * Returns the sorted `name@version` list, the input of the dependency hash.
 */
function copyProductionDependencies(appDir: string, pkg: Record<string, any>, dest: string): string[] {
  const placed = new Map<string, string>(); // top-level name -> version
  const list: string[] = [];
  const visit = (fromDir: string, deps: Record<string, string> | undefined, into: string, seen: Set<string>): void => {
    for (const name of Object.keys(deps ?? {})) {
      if (name === '@molt/app') continue;
      const src = findPackageDir(fromDir, name);
      if (!src) throw new MoltError('MOLT_ERR_BAD_RELEASE', `dependency ${name} is not installed; run npm install in ${appDir} first`);
      const depPkg = JSON.parse(readFileSync(join(src, 'package.json'), 'utf8')) as Record<string, any>;
      const key = `${name}@${depPkg.version}`;
      if (seen.has(key)) continue;
      let target: string;
      if (!placed.has(name)) {
        placed.set(name, depPkg.version);
        target = join(dest, name);
      } else if (placed.get(name) === depPkg.version) continue;
      else target = join(into, 'node_modules', name);
      if (existsSync(target)) continue;
      // A package's own node_modules is left behind: its dependencies are placed by this walk.
      cpSync(src, target, { recursive: true, dereference: true, filter: (s) => !relative(src, s).split(sep).includes('node_modules') });
      list.push(key);
      visit(src, depPkg.dependencies, target, new Set([...seen, key]));
    }
  };
  visit(appDir, pkg.dependencies, dest, new Set());
  return list.sort();
}
