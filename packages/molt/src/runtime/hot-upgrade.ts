/**
 * Upgrades a running worker in place, as OTP's release_handler does:
 *
 *   load + link the new modules (nothing swapped) ─▶ suspend processes in dependency order
 *     ─▶ codeChange on a copy of each changed process's state ─▶ apply ─▶ POINT OF NO RETURN
 *     ─▶ swap handlers, states and the app's fetch ─▶ resume
 *
 * Any failure before the point of no return leaves the old code and every state as they were.
 * codeChange runs once per process whose module changed, in the direction of the move: up with
 * the new module's, down with the one being left, dependents first.
 * Modules that neither changed nor import a changed module are not loaded again: the loader hooks
 * resolve them to the instances already running, so only what changed gets new code.
 */
import { copyFileSync, existsSync, mkdirSync, readdirSync, readFileSync, rmSync, symlinkSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import type { AppModule, CodeChange } from '@molt/app';
import { MANIFEST_FILE } from '../release/manifest.js';
import type { ReleaseManifest } from '../store/types.js';
import type { UpgradeInstruction, UpgradePhases, UpgradeRequest, UpgradeResult } from './control-messages.js';
import type { AppSlot } from './serve-fetch.js';
import { appExport } from './app-export.js';

type Spec = {
  name: string;
  codeChange?: (state: unknown, change: CodeChange) => unknown;
};

/** The runtime's copy of `@molt/app`'s process registry. */
export interface ProcessRuntime {
  beginStaging(): void;
  endStaging(): Map<string, Spec>;
  specs(): Map<string, Spec>;
  has(name: string): boolean;
  stateCopy(name: string): Promise<unknown>;
  suspend(name: string, timeoutMs: number): Promise<void>;
  resume(name: string): void;
  commit(name: string, spec: Spec, next?: { state: unknown }): void;
  start(spec: Spec): Promise<void>;
  remove(name: string): void;
}


interface LoadedRelease {
  dir: string;
  manifest: ReleaseManifest;
  /** The URL each module of this release runs from (its own, or an older release's when unchanged). */
  urls: Map<string, string>;
}

class UpgradeFailure extends Error {
  constructor(
    readonly phase: Extract<UpgradeResult, { ok: false }>['phase'],
    readonly module: string | undefined,
    cause: unknown,
  ) {
    super(cause instanceof Error ? cause.message : String(cause));
  }
}

function readManifest(dir: string): ReleaseManifest {
  return JSON.parse(readFileSync(join(dir, MANIFEST_FILE), 'utf8')) as ReleaseManifest;
}

export class HotUpgrader {
  private current: { id: string } & LoadedRelease;
  private readonly loaded = new Map<string, LoadedRelease>();
  /** The process specs that were live while each release ran: what a downgrade goes back to. */
  private readonly snapshots = new Map<string, Map<string, Spec>>();
  /** Module instances loaded since the worker started: Node's loader never frees them. */
  retainedModules: number;
  private busy = false;
  private links = 0;
  /** The release this worker started with; its packages serve every later version. */
  private readonly bootDir: string;

  constructor(
    private readonly slot: AppSlot,
    releaseId: string,
    releaseDir: string,
    private readonly processes: ProcessRuntime,
    /** A writable directory of this worker's own, for the link directories of upgrades. */
    private readonly linksDir: string,
  ) {
    const manifest = readManifest(releaseDir);
    const urls = new Map(manifest.modules.map((m) => [m.path, pathToFileURL(join(releaseDir, m.path)).href]));
    this.current = { id: releaseId, dir: releaseDir, manifest, urls };
    this.bootDir = releaseDir;
    this.loaded.set(releaseId, this.current);
    this.retainedModules = manifest.modules.length;
  }

  get releaseId(): string {
    return this.current.id;
  }

  async apply(req: UpgradeRequest): Promise<UpgradeResult> {
    if (this.busy) return { ok: false, phase: 'load', error: 'another upgrade of this worker is in progress' };
    this.busy = true;
    const t0 = performance.now();
    try {
      const phases = await this.run(req);
      return { ok: true, durationMs: performance.now() - t0, retainedModules: this.retainedModules, release: this.current.id, phases };
    } catch (err) {
      if (err instanceof UpgradeFailure) return { ok: false, phase: err.phase, module: err.module, error: err.message };
      return { ok: false, phase: 'load', error: err instanceof Error ? err.message : String(err) };
    } finally {
      this.busy = false;
    }
  }

  private async run(req: UpgradeRequest): Promise<UpgradePhases> {
    let mark = performance.now();
    const lap = () => {
      const now = performance.now();
      const ms = Math.round((now - mark) * 1000) / 1000;
      mark = now;
      return ms;
    };
    const from = this.current;
    const change = (i?: UpgradeInstruction): CodeChange => ({ from: from.id, to: req.toRelease, direction: req.direction, extra: i?.extra });
    // The instruction that names each process; a module that is added or changed wins over one removed (a moved process).
    const byProcess = new Map<string, UpgradeInstruction>();
    for (const i of req.instructions) for (const p of i.processes ?? []) if (i.op !== 'remove' || !byProcess.has(p)) byProcess.set(p, i);

    // 1. Load and link, nothing swapped. A release loaded before is still in Node's module map:
    //    its modules are not evaluated again, and its processes' specs come from its snapshot.
    let target = this.loaded.get(req.toRelease);
    let staged: Map<string, Spec>;
    let fresh = false;
    if (target) {
      staged = new Map(this.snapshots.get(req.toRelease) ?? []);
    } else {
      target = await this.link(req, from);
      fresh = true;
      this.processes.beginStaging();
      try {
        const order = [...req.instructions.filter((i) => i.op !== 'remove' && i.op !== 'apply').map((i) => i.module), target.manifest.entry];
        for (const module of order) {
          try {
            await import(target.urls.get(module)!);
          } catch (err) {
            throw new UpgradeFailure('load', module, err);
          }
        }
      } finally {
        staged = this.processes.endStaging();
      }
    }
    const entryUrl = target.urls.get(target.manifest.entry)!;
    let app: AppModule;
    try {
      const entry = target.manifest.modules.find((m) => m.path === target.manifest.entry);
      app = appExport((await import(entryUrl)) as Record<string, unknown>, entry?.source ?? target.manifest.entry);
    } catch (err) {
      throw new UpgradeFailure('load', target.manifest.entry, err);
    }

    const loadMs = lap();
    // What happens to each process.
    const liveSpecs = this.processes.specs();
    const live = new Set(liveSpecs.keys());
    const updated = [...staged.keys()].filter((n) => live.has(n));
    const added = [...staged.keys()].filter((n) => !live.has(n));
    // A process goes when its module is removed, or is loaded again and no longer defines it.
    const reloaded = new Set(req.instructions.filter((i) => i.op === 'update' || i.op === 'load').map((i) => i.module));
    const dropped = new Set([
      ...req.instructions.filter((i) => i.op === 'remove').flatMap((i) => i.processes ?? []),
      ...from.manifest.modules.filter((m) => reloaded.has(m.path)).flatMap((m) => m.processes ?? []),
    ]);
    const removed = [...live].filter((n) => !staged.has(n) && (!fresh || dropped.has(n)));
    // Dependency order (the plan's instruction order, dependencies first) for an upgrade; a
    // downgrade goes the other way, dependents first, as OTP's relup reverses it. The rest after.
    const rank = (n: string) => {
      const i = byProcess.get(n);
      const at = i ? req.instructions.indexOf(i) : req.instructions.length;
      return req.direction === 'down' && i ? req.instructions.length - 1 - at : at;
    };
    const ordered = [...updated, ...removed].sort((a, b) => rank(a) - rank(b));
    // codeChange runs once for each process whose module changed (an `update` or `add` step names
    // it), never for one whose module is the same on both sides. Up, the new module's codeChange
    // takes the state forward; down, the module being left takes it back, as OTP calls
    // code_change({down, Vsn}) before loading the old code.
    const migrationOf = (n: string) => {
      const op = byProcess.get(n)?.op;
      if (op !== 'update' && op !== 'add') return undefined;
      const fn = (req.direction === 'down' ? liveSpecs.get(n) : staged.get(n))?.codeChange;
      return typeof fn === 'function' ? fn : undefined;
    };
    const migrating = ordered.filter((n) => updated.includes(n) && migrationOf(n));

    // 2. Suspend in order, 3. codeChange (on copies: a throw leaves every state as it was), 4. apply.
    const suspended: string[] = [];
    const newStates = new Map<string, unknown>();
    let suspendMs = 0;
    let migrateMs = 0;
    try {
      for (const n of ordered) {
        try {
          await this.processes.suspend(n, req.suspendTimeoutMs);
          suspended.push(n);
        } catch (err) {
          suspended.push(n);
          throw new UpgradeFailure('suspend', byProcess.get(n)?.module, err);
        }
      }
      suspendMs = lap();
      for (const n of migrating) {
        try {
          newStates.set(n, await migrationOf(n)!(await this.processes.stateCopy(n), change(byProcess.get(n))));
        } catch (err) {
          throw new UpgradeFailure('codeChange', byProcess.get(n)?.module, new Error(`codeChange of process ${n} threw: ${err instanceof Error ? err.message : String(err)}`));
        }
      }
      for (const i of req.instructions.filter((x) => x.op === 'apply')) {
        try {
          const ns = (await import(target.urls.get(i.module)!)) as Record<string, unknown>;
          const fn = ns[i.fn ?? ''];
          if (typeof fn !== 'function') throw new Error(`${i.module} exports no function ${i.fn}`);
          await fn(i.extra);
        } catch (err) {
          throw new UpgradeFailure('apply', i.module, err);
        }
      }
      // A runtime config change the entry says it can take in place (`export function configChange`).
      if (req.env) {
        try {
          const hook = ((await import(entryUrl)) as { configChange?: (c: { env: Record<string, string>; previous: Record<string, string> }) => unknown }).configChange;
          if (typeof hook !== 'function') throw new Error(`${target.manifest.entry} exports no configChange for the env change`);
          await hook({ env: req.env.to, previous: req.env.from });
        } catch (err) {
          throw new UpgradeFailure('configChange', target.manifest.entry, err);
        }
      }
      migrateMs = lap();
    } catch (err) {
      for (const n of suspended) this.processes.resume(n);
      throw err;
    }

    // POINT OF NO RETURN: swap handlers, states and the app's fetch; resume.
    this.snapshots.set(from.id, this.processes.specs());
    // A process without codeChange keeps its state as it is (no copy on the swap path).
    for (const n of updated) this.processes.commit(n, staged.get(n)!, newStates.has(n) ? { state: newStates.get(n) } : undefined);
    for (const n of removed) this.processes.remove(n);
    this.slot.app = app;
    if (req.env) {
      for (const k of Object.keys(req.env.from)) if (!(k in req.env.to)) delete process.env[k];
      Object.assign(process.env, req.env.to);
    }
    if (fresh) {
      this.loaded.set(req.toRelease, target);
      this.retainedModules += req.instructions.filter((i) => i.op === 'update' || i.op === 'load' || i.op === 'add').length;
    }
    this.current = { id: req.toRelease, ...target };
    for (const n of added) await this.processes.start(staged.get(n)!);
    for (const n of suspended) this.processes.resume(n);
    return { loadMs, suspendMs, migrateMs, swapMs: lap() };
  }

  /**
   * The new release as this worker loads it: a link directory of its own where the modules to load
   * again are copies (new URLs, so new instances) and every other module is a symlink to the file
   * that runs now (Node resolves symlinks to their real path, so imports of it get the instance
   * already running). Other files of the release are symlinked, so paths relative to a module work.
   */
  private async link(req: UpgradeRequest, from: { dir: string; urls: Map<string, string> }): Promise<LoadedRelease> {
    const manifest = readManifest(req.releaseDir);
    const reload = new Set(req.instructions.filter((i) => i.op === 'update' || i.op === 'load' || i.op === 'add').map((i) => i.module));
    reload.add(manifest.entry);
    const modules = new Set(manifest.modules.map((m) => m.path));
    const dir = join(this.linksDir, String(++this.links));
    rmSync(dir, { recursive: true, force: true });
    mkdirSync(dir, { recursive: true });
    const urls = new Map<string, string>();
    const made = new Set([dir]);
    for (const rel of listFiles(req.releaseDir)) {
      const src = join(req.releaseDir, rel);
      const dest = join(dir, rel);
      const parent = dirname(dest);
      if (!made.has(parent)) {
        mkdirSync(parent, { recursive: true });
        made.add(parent);
      }
      const running = from.urls.get(rel);
      if (modules.has(rel) && !reload.has(rel) && running) {
        symlinkSync(fileURLToPath(running), dest);
        urls.set(rel, running);
      } else if (modules.has(rel) || rel === 'package.json' || rel.endsWith('.map')) {
        copyFileSync(src, dest);
        if (modules.has(rel)) urls.set(rel, pathToFileURL(dest).href);
      } else symlinkSync(src, dest);
    }
    // Packages are the same as the running release's (hot needs an unchanged dependency hash):
    // resolving them there shares their instances too.
    const packages = existsSync(join(this.bootDir, 'node_modules')) ? join(this.bootDir, 'node_modules') : join(req.releaseDir, 'node_modules');
    if (existsSync(packages)) symlinkSync(packages, join(dir, 'node_modules'));
    return { dir: req.releaseDir, manifest, urls };
  }
}

/** Every file of a release, relative to it, without its node_modules. */
function listFiles(root: string, rel = ''): string[] {
  const out: string[] = [];
  for (const entry of readdirSync(join(root, rel), { withFileTypes: true })) {
    const path = rel ? `${rel}/${entry.name}` : entry.name;
    if (!rel && entry.name === 'node_modules') continue;
    if (entry.isDirectory()) out.push(...listFiles(root, path));
    else out.push(path);
  }
  return out;
}
