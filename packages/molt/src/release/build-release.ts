import { build, type Plugin, version as esbuildVersion } from 'esbuild';
import { cpSync, existsSync, mkdirSync, readFileSync, realpathSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { dirname, extname, join, relative, resolve, sep } from 'node:path';
import type { AppSpec } from '../config/app-spec.js';
import { loadAppConfig } from '../config/load-config.js';
import { MoltError } from '../errors.js';
import { sha256 } from '../ids.js';
import { fileEntries, type HashIndex, racyMs, scanTree, type Tree, treeHash, type ScannedTree } from '../blobs/tree.js';
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
  /** Nothing needed compiling, resolving or copying: the last build's output was still right. */
  cached: boolean;
  /** What this build did: modules compiled, whether dependencies were copied (else the last build's were kept). */
  work: { compiled: number; dependenciesCopied: boolean };
}

const toPosix = (p: string) => p.split(sep).join('/');
/** `lib/x.ts` → `lib/x.js`: where a module's compiled output lives in the release. */
const outputPath = (rel: string) => toPosix(rel).replace(/\.(tsx?|mts|cts|jsx|mjs|cjs)$/, '.js');

/** What a build keeps beside its output, to redo only what changed the next time (`<out>.cache.json`). */
interface BuildCache {
  /** Builds of another format, esbuild or Node start over. */
  toolchain: string;
  /** The entry the graph was asked from. */
  entry: string;
  /** When the inputs below were read (their mtimes are trusted only if older, by the racy margin). */
  readAt: number;
  /** Every app file the last module graph read: [size, mtimeMs, sha256]. */
  inputs: Record<string, [number, number, string]>;
  /** Files whose change makes every module stale (package.json, tsconfig.json, data files modules bundle). */
  shared: string[];
  /** mtimes of the directories those files are in: a new file there may change how an import resolves. */
  dirs: Record<string, number>;
  /** The module graph (app-relative sources and the sources each imports). */
  graph: [string, string[]][];
  /** What the copied node_modules was made from, and the name@version list it holds. */
  depsKey: string;
  deps: string[];
  /** Hashes of the release files, so an unchanged file is not read again. */
  index: HashIndex;
  /** The release's tree as that build scanned it: a build with nothing to do reuses it whole. */
  tree: Tree;
}

/** What else a compiled module depends on: the cache's format, esbuild and Node. */
const TOOLCHAIN = `2 esbuild ${esbuildVersion} node ${process.versions.node}`;

/** Writes a release file only when its content differs, so its mtime (and the hash index) hold. */
function writeIfChanged(file: string, text: string): void {
  if (existsSync(file) && readFileSync(file, 'utf8') === text) return;
  writeFileSync(file, text);
}

function readCache(file: string): BuildCache | undefined {
  try {
    const cache = JSON.parse(readFileSync(file, 'utf8')) as BuildCache;
    return cache.toolchain === TOOLCHAIN ? cache : undefined;
  } catch {
    return undefined;
  }
}

/** A file's [size, mtimeMs, sha256], reusing the recorded hash while size and mtime say it is unchanged. */
function fileState(abs: string, known: [number, number, string] | undefined, readAt: number): [number, number, string] | undefined {
  let st;
  try {
    st = statSync(abs);
  } catch {
    return undefined;
  }
  if (known && known[0] === st.size && known[1] === st.mtimeMs && st.mtimeMs < readAt - racyMs(st.mtimeMs)) return known;
  return [st.size, st.mtimeMs, sha256(readFileSync(abs))];
}

/**
 * Builds a content-addressed release of the app in `dir`: every app module compiled on its own
 * (the module graph is kept, imports rewritten to the compiled files), package.json, lockfile,
 * production node_modules and `molt-release.json`. The release id is its tree's hash, so an
 * unchanged app builds to the same id.
 *
 * Builds are incremental, keyed on content: the module graph is asked of esbuild again only when a
 * file it read (or a directory holding one) changed, a module is compiled again only when its source
 * changed (all of them when the graph's members change), dependencies are copied again only when
 * package.json's dependencies or the lockfile changed, and the release files are hashed again only
 * where they changed. `cached` says that nothing needed doing.
 */
export async function buildRelease(dir: string, opts: { file?: string; outDir?: string } = {}): Promise<BuiltRelease> {
  const { spec, appDir } = await loadAppConfig(dir, opts.file);
  const entryAbs = resolve(appDir, spec.entry);
  if (!existsSync(entryAbs)) {
    throw new MoltError('MOLT_ERR_INVALID_CONFIG', `entry ${spec.entry} does not exist in ${appDir}; set \`entry\` in the app config to your entry module`);
  }
  const outDir = opts.outDir ?? join(appDir, '.molt', 'build');
  const cacheFile = `${outDir}.cache.json`;
  const before = existsSync(join(outDir, MANIFEST_FILE)) ? readCache(cacheFile) : undefined;
  // Written again only after a build completes: a build cut short leaves no cache to trust.
  rmSync(cacheFile, { force: true });
  if (!before) rmSync(outDir, { recursive: true, force: true });
  mkdirSync(outDir, { recursive: true });
  const readAt = Date.now();

  const pkg = readPackageJson(appDir);
  const lockfile = findUp(appDir, 'package-lock.json');
  const inputs: BuildCache['inputs'] = {};
  const state = (rel: string) => {
    const s = fileState(resolve(appDir, rel), before?.inputs[rel], before?.readAt ?? 0);
    if (s) inputs[rel] = s;
    return s;
  };
  // The graph of the last build holds while every file it read and every directory they sit in is as it was.
  const entry = toPosix(relative(appDir, entryAbs));
  const unchanged =
    before !== undefined &&
    before.entry === entry &&
    Object.entries(before.inputs).every(([rel, known]) => state(rel)?.[2] === known[2]) &&
    Object.entries(before.dirs).every(([d, mtime]) => {
      try {
        return statSync(resolve(appDir, d)).mtimeMs === mtime;
      } catch {
        return false;
      }
    });
  const { graph, shared } = unchanged ? { graph: new Map(before.graph), shared: before.shared } : await moduleGraph(appDir, entryAbs);
  const dirs: BuildCache['dirs'] = {};
  for (const rel of shared) state(rel);
  for (const rel of graph.keys()) {
    state(rel);
    const d = dirname(rel);
    dirs[d] = statSync(resolve(appDir, d)).mtimeMs;
  }

  // Modules whose source changed, or all when the graph has other members than before or a file
  // every module may depend on changed.
  const changed = (rel: string) => before!.inputs[rel]?.[2] !== inputs[rel]?.[2];
  const allStale = before === undefined || before.graph.length !== graph.size || !before.graph.every(([rel]) => graph.has(rel)) || shared.some(changed) || before.shared.some((rel) => !shared.includes(rel));
  const stale = [...graph.keys()].filter((rel) => allStale || changed(rel) || !existsSync(join(outDir, outputPath(rel))));
  if (before) for (const [rel] of before.graph) if (!graph.has(rel)) for (const f of [outputPath(rel), `${outputPath(rel)}.map`]) rmSync(join(outDir, f), { force: true });
  if (stale.length > 0) await compileModules(appDir, outDir, [...graph.keys()], stale);

  const modules = [...graph.entries()].map(([rel, imports]) => {
    const path = outputPath(rel);
    const code = readFileSync(join(outDir, path), 'utf8');
    return { path, source: toPosix(rel), hash: sha256(code), imports: imports.map(outputPath).sort(), ...moduleTraits(code) };
  });
  modules.sort((a, b) => (a.path < b.path ? -1 : 1));

  writeIfChanged(join(outDir, 'package.json'), `${JSON.stringify({ ...pkg, type: 'module' }, null, 2)}\n`);
  if (lockfile) writeIfChanged(join(outDir, 'package-lock.json'), readFileSync(lockfile, 'utf8'));
  else rmSync(join(outDir, 'package-lock.json'), { force: true });
  const depsKey = sha256(JSON.stringify([pkg.dependencies ?? {}, lockfile ? sha256(readFileSync(lockfile)) : null]));
  let deps: string[];
  const reuseDeps = before?.depsKey === depsKey && existsSync(join(outDir, 'node_modules'));
  if (reuseDeps) deps = before!.deps;
  else {
    rmSync(join(outDir, 'node_modules'), { recursive: true, force: true });
    deps = copyProductionDependencies(appDir, pkg, join(outDir, 'node_modules'));
  }

  const manifest: ReleaseManifest = {
    app: spec.name,
    version: typeof pkg.version === 'string' ? pkg.version : '0.0.0',
    node: process.versions.node,
    dependencyHash: sha256(JSON.stringify(deps)),
    configHash: configHash(spec),
    entry: outputPath(relative(appDir, entryAbs)),
    modules,
  };
  const text = `${JSON.stringify(manifest, null, 2)}\n`;
  // Nothing compiled or copied and the same manifest: the files are the last build's, and so is its tree.
  const cached = unchanged && stale.length === 0 && reuseDeps && readFileSync(join(outDir, MANIFEST_FILE), 'utf8') === text;
  if (!cached) writeFileSync(join(outDir, MANIFEST_FILE), text);
  const index: HashIndex = before?.index ?? { indexedAt: 0, entries: {} };
  const scanned = cached ? { tree: before!.tree, files: new Map(fileEntries(before!.tree).map((e) => [e.hash, join(outDir, e.path)])) } : await scanTree(outDir, undefined, index);
  const cache: BuildCache = { toolchain: TOOLCHAIN, entry, readAt, inputs, shared, dirs, graph: [...graph.entries()], depsKey, deps, index, tree: scanned.tree };
  writeFileSync(cacheFile, JSON.stringify(cache));
  return { id: treeHash(scanned.tree), dir: outDir, manifest, spec, appDir, scanned, cached, work: { compiled: stale.length, dependenciesCopied: !reuseDeps } };
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

/**
 * Local modules reachable from the entry, each with the local modules it imports (paths relative to
 * appDir), and the other app files a compile reads: data files modules bundle (JSON, text), the
 * package.json and tsconfig.json esbuild resolves with.
 */
async function moduleGraph(appDir: string, entryAbs: string): Promise<{ graph: Map<string, string[]>; shared: string[] }> {
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
  const shared = new Set<string>();
  for (const [input, info] of Object.entries(result.metafile.inputs)) {
    if (input.includes('node_modules/')) continue;
    if (!CODE.has(extname(input))) {
      shared.add(input);
      continue;
    }
    const imports = info.imports.filter((i) => !i.external && CODE.has(extname(i.path)) && !i.path.includes('node_modules/')).map((i) => i.path);
    graph.set(input, [...new Set(imports)]);
  }
  for (const name of ['package.json', 'tsconfig.json', 'jsconfig.json']) {
    const found = findUp(appDir, name);
    if (found) shared.add(toPosix(relative(appDir, found)));
  }
  return { graph, shared: [...shared].sort() };
}

/**
 * Compiles each of `compile` alone; imports of other app modules (any of `modules`) stay imports,
 * pointed at the compiled file.
 */
async function compileModules(appDir: string, outDir: string, modules: string[], compile: string[]): Promise<void> {
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
      entryPoints: compile.map((m) => resolve(appDir, m)),
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
  for (const rel of compile) relocateSourceMap(appDir, outDir, outputPath(rel));
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
