import { type ChildProcess, spawn } from 'node:child_process';
import { watch } from 'node:fs';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { buildRelease } from '../../release/build-release.js';
import { volumeEnvName } from '../../control-plane/worker-process.js';
import { namespaceOf } from '../context.js';
import { say } from '../output.js';
import { findLocalCopy } from '../volume-cache.js';
import { volumeTarget } from './volume-commands.js';

const WORKER_MAIN = fileURLToPath(new URL('../../runtime/worker-main.js', import.meta.url));

/**
 * `molt app run`: builds the app as a release would be built, runs it in the same worker
 * runtime the server uses, and rebuilds and restarts it when a file of the app changes.
 */
export async function runLocally(opts: { dir: string; file?: string; port: string; host: string; watch: boolean }): Promise<number> {
  const dir = resolve(opts.dir);
  let child: ChildProcess | undefined;
  let stopping = false;

  const start = async (): Promise<void> => {
    const built = await buildRelease(dir, { file: opts.file, outDir: join(dir, '.molt', 'run') });
    // Volumes come from their local copies (`molt volume get`), edits included.
    const volumeEnv: Record<string, string> = {};
    const volumes: Record<string, { path: string; revision: string }> = {};
    const namespace = namespaceOf({});
    for (const ref of built.spec.volumes) {
      const where = volumeTarget(ref.name, { namespace });
      const copy = findLocalCopy(where.namespace, where.name);
      if (!copy) {
        say(`molt: volume ${ref.name} has no local copy; run \`molt volume get ${ref.name}\` to make one`);
        continue;
      }
      volumes[ref.name] = { path: copy.dir, revision: `${copy.state.revision || 'new'} (local copy)` };
      volumeEnv[volumeEnvName(ref.name)] = copy.dir;
    }
    child = spawn(process.execPath, ['--enable-source-maps', WORKER_MAIN], {
      cwd: built.dir,
      stdio: ['ignore', 'inherit', 'inherit'],
      env: {
        ...process.env,
        ...built.spec.env,
        MOLT_RELEASE_DIR: built.dir,
        MOLT_ENTRY: built.manifest.entry,
        MOLT_PORT: opts.port,
        MOLT_HOST: opts.host,
        MOLT_APP: built.spec.name,
        MOLT_VOLUMES: JSON.stringify(volumes),
        ...volumeEnv,
      },
    });
    child.on('exit', (code, signal) => {
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

  await start();
  if (opts.watch) {
    let timer: NodeJS.Timeout | undefined;
    let changed = new Set<string>();
    watch(dir, { recursive: true }, (_event, file) => {
      if (!file || /(^|\/)(\.molt|node_modules|\.git)(\/|$)/.test(file)) return;
      changed.add(file);
      clearTimeout(timer);
      timer = setTimeout(async () => {
        const files = [...changed].join(', ');
        changed = new Set();
        say(`molt: ${files} changed; restarting`);
        await stop();
        await start().catch((err: Error) => say(`molt: build failed: ${err.message}`));
      }, 150);
    });
  }
  await new Promise<void>((r) => {
    const quit = () => void stop().then(r);
    process.once('SIGINT', quit);
    process.once('SIGTERM', quit);
    if (!opts.watch) child?.once('exit', () => r());
  });
  return 0;
}
