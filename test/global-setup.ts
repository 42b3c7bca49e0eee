/**
 * Every temp dir the suite makes (data dirs, app copies, sandboxes' files) goes under one directory
 * of this run, removed when the run ends: a test run leaves nothing in /tmp.
 */
import { chmodSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

export default function setup(): () => void {
  const root = mkdtempSync(join(tmpdir(), 'molt-run-'));
  // Tests that run molt as another user need to reach their data dirs through it.
  chmodSync(root, 0o755);
  // Test files run in child processes, which inherit this: os.tmpdir() answers it there.
  process.env.TMPDIR = root;
  return () => {
    if (process.env.MOLT_KEEP_TEST_DIRS) console.log(`test dirs kept in ${root}`);
    else rmSync(root, { recursive: true, force: true });
  };
}
