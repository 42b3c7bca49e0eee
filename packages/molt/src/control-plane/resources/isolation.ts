import { spawnSync } from 'node:child_process';

/**
 * How a worker is started so that its limits and read-only trees hold from its first instruction:
 * a shell enters the worker's cgroups and, where it can, makes the release and volume directories
 * read-only bind mounts in a mount namespace of its own (so even a worker running as root cannot
 * write them, nor the blob store their files are linked from); then it becomes Node (same pid).
 */
export interface Launcher {
  command: string;
  args: string[];
  env: Record<string, string>;
}

const NL = '\n';
const ENTER_CGROUPS = `IFS='${NL}'; for f in $MOLT_CGROUP_PROCS; do echo $$ > "$f" || exit 97; done`;
const READ_ONLY = `IFS='${NL}'; for d in $MOLT_RO_DIRS; do mount --bind -o ro "$d" "$d" && mount -o remount,bind,ro "$d" "$d" || exit 98; done`;

/** Whether read-only bind mounts in a private mount namespace work here (root with unshare). */
export function detectReadOnlyMounts(): { ok: true } | { ok: false; reason: string } {
  if (process.getuid?.() !== 0) return { ok: false, reason: 'the server does not run as root; trees are read-only by file mode only' };
  const probe = spawnSync('unshare', ['--mount', '--propagation', 'private', 'true'], { stdio: 'ignore', timeout: 5000 });
  if (probe.error || probe.status !== 0) return { ok: false, reason: `unshare --mount is not available (${probe.error?.message ?? `exit ${probe.status}`}); trees are read-only by file mode only` };
  return { ok: true };
}

/** The command that starts `node argv…` inside its cgroups, with `readOnlyDirs` mounted read-only. */
export function launcher(node: string, argv: string[], opts: { cgroupProcs: string[]; readOnlyDirs: string[]; mountNamespace: boolean }): Launcher {
  const steps: string[] = [];
  const env: Record<string, string> = {};
  if (opts.cgroupProcs.length > 0) {
    steps.push(ENTER_CGROUPS);
    env.MOLT_CGROUP_PROCS = opts.cgroupProcs.join(NL);
  }
  const mounts = opts.mountNamespace && opts.readOnlyDirs.length > 0;
  if (mounts) {
    steps.push(READ_ONLY);
    env.MOLT_RO_DIRS = opts.readOnlyDirs.join(NL);
  }
  if (steps.length === 0) return { command: node, args: argv, env };
  const script = [...steps, 'unset MOLT_CGROUP_PROCS MOLT_RO_DIRS', 'exec "$0" "$@"'].join('; ');
  const shell = ['/bin/sh', '-c', script, node, ...argv];
  return mounts ? { command: 'unshare', args: ['--mount', '--propagation', 'private', ...shell], env } : { command: shell[0]!, args: shell.slice(1), env };
}
