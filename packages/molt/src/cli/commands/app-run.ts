import { type ChildProcess, spawn } from 'node:child_process';
import { mkdirSync, readdirSync, rmSync, statSync } from 'node:fs';
import { createServer } from 'node:net';
import type { Duplex } from 'node:stream';
import type { FSWatcher } from 'chokidar';
import { MoltError } from '../../errors.js';
import { join, relative, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { type BuiltRelease, buildRelease } from '../../release/build-release.js';
import { generatePlan } from '../../release/upgrade-plan.js';
import type { UpgradeRequest, UpgradeResult, WorkerToServer } from '../../runtime/control-messages.js';
import { volumeEnv, type WorkerVolume } from '../../control-plane/worker-process.js';
import { WorkerControl } from '../../control-plane/worker-control.js';
import { CONTROL_FD } from '../../runtime/control-channel.js';
import { namespaceOf } from '../context.js';
import { say } from '../output.js';
import { findLocalCopy } from '../volume-cache.js';
import { volumeTarget } from './volume-commands.js';

const WORKER_MAIN = fileURLToPath(new URL('../../runtime/worker-main.js', import.meta.url));

/**
 * `molt app run`: builds the app as a release would be built and runs it in the same worker runtime
 * the server uses. On a file save it builds again and, when the upgrade plan allows, swaps the new
 * modules into the running worker (processes keep their state); otherwise it restarts the worker.
 * It prints which, and why.
 */
export async function runLocally(opts: { dir: string; file?: string; port: string; host: string; watch: boolean }): Promise<number> {
  const dir = resolve(opts.dir);
  const runRoot = join(dir, '.molt', 'run');
  rmSync(runRoot, { recursive: true, force: true });
  let child: ChildProcess | undefined;
  let control: WorkerControl | undefined;
  let stopping = false;
  let builds = 0;
  let running: BuiltRelease | undefined;

  // Each build gets its own directory: a hot swap loads the new modules beside the running ones.
  const build = () => buildRelease(dir, { file: opts.file, outDir: join(runRoot, String(++builds)) });

  const start = async (built: BuiltRelease): Promise<void> => {
    // Volumes come from their local copies (`molt volume get`), edits included.
    const volumes: WorkerVolume[] = [];
    const namespace = namespaceOf({});
    for (const ref of built.spec.volumes) {
      const where = volumeTarget(ref.name, { namespace });
      const copy = findLocalCopy(where.namespace, where.name);
      if (!copy) {
        say(`molt: volume ${ref.name} has no local copy; run \`molt volume get ${ref.name}\` to make one`);
        continue;
      }
      volumes.push({ ref: ref.name, path: copy.dir, revision: `${copy.state.revision || 'new'} (local copy)` });
    }
    // Local development runs unsandboxed; the app still gets a scratch dir of its own, as on a server.
    const scratch = join(runRoot, 'scratch');
    mkdirSync(scratch, { recursive: true });
    const c = spawn(process.execPath, ['--enable-source-maps', WORKER_MAIN], {
      cwd: built.dir,
      stdio: ['ignore', 'inherit', 'inherit', 'pipe'],
      env: {
        ...process.env,
        ...built.spec.env,
        MOLT_RELEASE_DIR: built.dir,
        MOLT_RELEASE: built.id,
        MOLT_LINKS_DIR: join(runRoot, 'links', String(builds)),
        MOLT_APP_HOOK: '1',
        MOLT_ENTRY: built.manifest.entry,
        MOLT_PORT: opts.port,
        MOLT_HOST: opts.host,
        MOLT_APP: built.spec.name,
        MOLT_SCRATCH: scratch,
        MOLT_CONTROL_FD: String(CONTROL_FD),
        ...volumeEnv(volumes),
      },
    });
    child = c;
    control = new WorkerControl(c.stdio[CONTROL_FD] as Duplex, (reason) => {
      say(`molt: ${built.spec.name} cut off: ${reason}`);
      c.kill('SIGKILL');
    });
    running = built;
    control.onMessage((m: WorkerToServer) => {
      if (m.type === 'listening') say(`molt: ${built.spec.name} listening on http://${opts.host}:${m.port}`);
    });
    c.on('exit', (code, signal) => {
      if (!stopping) say(`molt: ${built.spec.name} exited (${signal ?? `code ${code}`}); waiting for a file change`);
    });
  };

  const stop = async (): Promise<void> => {
    const c = child;
    if (!c || c.exitCode !== null || c.signalCode !== null) return;
    stopping = true;
    await new Promise<void>((r) => {
      c.once('exit', () => r());
      c.kill('SIGTERM');
      setTimeout(() => c.kill('SIGKILL'), 3000).unref();
    });
    stopping = false;
  };

  /** Swaps the new build into the running worker; a failed swap leaves the worker unchanged. */
  const swap = (next: BuiltRelease, instructions: UpgradeRequest['instructions']): Promise<UpgradeResult> =>
    control!.upgrade({ toRelease: next.id, releaseDir: next.dir, direction: 'up', instructions, suspendTimeoutMs: next.spec.hot.suspendTimeoutMs }, next.spec.hot.suspendTimeoutMs + 30_000);

  const onChange = async (files: string): Promise<void> => {
    const next = await build();
    const alive = child && child.exitCode === null && child.signalCode === null && control?.open;
    if (alive && running) {
      const plan = generatePlan(running, next);
      if (plan.up.length === 0 && plan.strategy === 'hot') {
        say(`molt: ${files} changed; no module changed, nothing to do`);
        return;
      }
      if (plan.strategy === 'hot') {
        const result = await swap(next, plan.up);
        if (result.ok) {
          running = next;
          say(`molt: ${files} changed; hot-swapped in ${result.durationMs.toFixed(1)} ms (state kept)`);
          return;
        }
        say(`molt: ${files} changed; the hot swap failed (${result.phase}${result.module ? ` in ${result.module}` : ''}: ${result.error}); restarting`);
      } else say(`molt: ${files} changed; restarting (${plan.reason})`);
    } else say(`molt: ${files} changed; starting`);
    await stop();
    await start(next);
  };

  await assertPortFree(opts.host, Number(opts.port));
  await start(await build());
  let watcher: FSWatcher | undefined;
  if (opts.watch) {
    // chokidar, not fs.watch: Node's recursive watch on Linux walks every directory it sees,
    // .molt/run's build output included, and dies when one vanishes mid-walk.
    const { watch } = await import('chokidar');
    let before = snapshot(dir);
    let timer: NodeJS.Timeout | undefined;
    let queue = Promise.resolve();
    watcher = watch(dir, { ignored: (path) => IGNORED.test(relative(dir, path)), ignoreInitial: true, atomic: true });
    watcher.on('all', () => {
      clearTimeout(timer);
      timer = setTimeout(() => {
        // What changed is read off the tree, not the events: an editor's atomic save or `sed -i`
        // writes a temp file and renames it over the real one, and only the real one is named.
        const after = snapshot(dir);
        const files = changedFiles(before, after);
        before = after;
        if (files.length === 0) return;
        queue = queue.then(() => onChange(files.join(', ')).catch((err: Error) => say(`molt: build failed: ${err.message}`)));
      }, 150);
    });
  }
  await new Promise<void>((r) => {
    const quit = () => void stop().then(r);
    process.once('SIGINT', quit);
    process.once('SIGTERM', quit);
    if (!opts.watch) child?.once('exit', () => r());
  });
  await watcher?.close();
  return 0;
}

/** What the watcher leaves out: molt's own output, dependencies, version control. */
const IGNORED = /(^|\/)(\.molt|node_modules|\.git)(\/|$)/;

/** Every file of the app (but what IGNORED names) with its size and change time. */
function snapshot(root: string, rel = '', out = new Map<string, string>()): Map<string, string> {
  let entries;
  try {
    entries = readdirSync(join(root, rel), { withFileTypes: true });
  } catch {
    return out;
  }
  for (const e of entries) {
    const path = rel ? `${rel}/${e.name}` : e.name;
    if (IGNORED.test(path)) continue;
    if (e.isDirectory()) snapshot(root, path, out);
    else if (e.isFile()) {
      try {
        const st = statSync(join(root, path));
        out.set(path, `${st.size}:${st.mtimeMs}:${st.ino}`);
      } catch {
        // gone between the listing and the stat: a temp file
      }
    }
  }
  return out;
}

/** Files added, removed or changed between two snapshots, by name. */
function changedFiles(before: Map<string, string>, after: Map<string, string>): string[] {
  const out: string[] = [];
  for (const [path, sig] of after) if (before.get(path) !== sig) out.push(path);
  for (const path of before.keys()) if (!after.has(path)) out.push(`${path} (removed)`);
  return out.sort();
}

/** Refuses at once, with what to do, when the port is taken (rather than a worker's stack trace). */
function assertPortFree(host: string, port: number): Promise<void> {
  return new Promise((resolvePromise, reject) => {
    const probe = createServer();
    probe.once('error', (err: NodeJS.ErrnoException) => {
      if (err.code === 'EADDRINUSE') reject(new MoltError('MOLT_ERR_CONFLICT', `port ${port} is in use on ${host}; pass --port with a free one (e.g. --port ${port + 1})`));
      else if (err.code === 'EACCES') reject(new MoltError('MOLT_ERR_FORBIDDEN', `port ${port} on ${host} needs privileges this user lacks; pass --port 1024 or above`));
      else reject(err);
    });
    probe.listen(port, host, () => probe.close(() => resolvePromise()));
  });
}
