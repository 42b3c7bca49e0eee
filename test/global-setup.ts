/**
 * Every temp dir the suite makes (data dirs, app copies, sandboxes' files) goes under one directory
 * of this run, removed when the run ends: a test run leaves nothing in /tmp. And no process it
 * started outlives it: at the end, any process still running from that directory (a server, a
 * control plane, a worker, a sandbox) fails the run, named, and is killed. It also runs the
 * run's PostgreSQL server (test/postgres.ts), for the store's tests and the suite's run on it.
 */
import { spawnSync } from 'node:child_process';
import { chmodSync, mkdtempSync, readdirSync, readlinkSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { processes } from './helpers.js';
import { startPostgres } from './postgres.js';

/** Whether a process holds a file under `root` open (a worker, whose title and cwd say nothing of it, holds its output FIFOs). */
function holdsFileUnder(pid: number, root: string): boolean {
  try {
    return readdirSync(`/proc/${pid}/fd`).some((fd) => {
      try {
        return readlinkSync(`/proc/${pid}/fd/${fd}`).startsWith(root);
      } catch {
        return false;
      }
    });
  } catch {
    return false;
  }
}

/** Processes whose command line, working directory or open files are under `root`: pid and command line. */
function processesUnder(root: string): { pid: number; cmdline: string }[] {
  return processes()
    .map((p) => ({ ...p, cmdline: p.argv.join(' ') }))
    .filter((p) => p.pid !== process.pid && (p.cmdline.includes(root) || p.cwd.startsWith(root) || holdsFileUnder(p.pid, root)));
}

/**
 * The suite's workers run sandboxed, as in use: without bubblewrap the run fails here, saying how to
 * install it, rather than in tests that assume a sandbox's layout.
 */
function requireBubblewrap(): void {
  if (spawnSync('bwrap', ['--version']).error) throw new Error('the tests run workers under bubblewrap, which is not installed: apt-get install -y bubblewrap (.ci/run does)');
}

export default async function setup(): Promise<() => Promise<void>> {
  requireBubblewrap();
  const root = mkdtempSync(join(tmpdir(), 'molt-run-'));
  // Tests that run molt as another user need to reach their data dirs through it.
  chmodSync(root, 0o755);
  // Test files run in child processes, which inherit this: os.tmpdir() answers it there.
  process.env.TMPDIR = root;
  const postgres = await startPostgres(join(root, 'postgres')).catch((err) => {
    rmSync(root, { recursive: true, force: true });
    throw err;
  });
  process.env.MOLT_TEST_POSTGRES_URL = postgres.url;
  return async () => {
    postgres.stop();
    let left = processesUnder(root);
    for (let i = 0; i < 50 && left.length > 0; i++) {
      await new Promise((r) => setTimeout(r, 100));
      left = processesUnder(root);
    }
    for (const p of left) {
      try {
        process.kill(p.pid, 'SIGKILL');
      } catch {
        // gone
      }
    }
    if (process.env.MOLT_KEEP_TEST_DIRS) console.log(`test dirs kept in ${root}`);
    else rmSync(root, { recursive: true, force: true });
    if (left.length > 0) throw new Error(`processes started by the tests outlived them (now killed):\n${left.map((p) => `  ${p.pid} ${p.cmdline.slice(0, 300)}`).join('\n')}`);
  };
}
