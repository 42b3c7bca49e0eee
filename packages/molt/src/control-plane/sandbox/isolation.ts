import { spawnSync } from 'node:child_process';
import { MoltError } from '../../errors.js';
import { systemMounts } from './bwrap-args.js';

/** The uids workers run as: namespace n runs as `start + n`. */
export interface UidRange {
  start: number;
  end: number;
}

/** The default range: far above the uids distributions give people and services. */
export const DEFAULT_WORKER_UIDS = '100000-165535';

/**
 * How this server sandboxes workers. `sandboxed` workers run under bubblewrap (own mount, PID and
 * IPC namespaces, no new privileges); with `users`, each namespace's workers also run as a uid of
 * their own (the server runs as root). `notIsolated` says why a worker is not fully isolated, as
 * `worker list`, `app get` and `node list` show it; undefined when it is.
 */
export type Isolation =
  | { sandboxed: true; bwrap: string; version: string; users: UidRange | null; notIsolated?: string }
  | { sandboxed: false; notIsolated: string };

/** Parses `--worker-uids START-END`; names what is wrong. */
export function parseUidRange(text: string, serverUid: number): UidRange {
  const m = /^(\d+)-(\d+)$/.exec(text.trim());
  const start = m ? Number(m[1]) : NaN;
  const end = m ? Number(m[2]) : NaN;
  if (!m || !(start > 0) || end < start || end > 4_294_967_294) {
    throw new MoltError('MOLT_ERR_BAD_REQUEST', `--worker-uids ${JSON.stringify(text)} is not a range of uids above 0 such as ${DEFAULT_WORKER_UIDS}`);
  }
  if (serverUid >= start && serverUid <= end) {
    throw new MoltError('MOLT_ERR_BAD_REQUEST', `--worker-uids ${text} holds the server's own uid ${serverUid}; workers must run as users of their own: pick a range without it`);
  }
  return { start, end };
}

/** The uid a namespace's workers run as, or why there is none. */
export function namespaceUid(range: UidRange, uidOffset: number, namespace: string): number {
  const uid = range.start + uidOffset;
  if (uid > range.end) {
    throw new MoltError(
      'MOLT_ERR_BAD_REQUEST',
      `namespace ${namespace} is the ${uidOffset + 1}th namespace, but the worker uid range ${range.start}-${range.end} holds ${range.end - range.start + 1}; widen --worker-uids on the server`,
    );
  }
  return uid;
}

function run(command: string, args: string[]): { ok: true; out: string } | { ok: false; why: string } {
  const r = spawnSync(command, args, { encoding: 'utf8', timeout: 10_000, stdio: ['ignore', 'pipe', 'pipe'] });
  if (r.error) return { ok: false, why: (r.error as NodeJS.ErrnoException).code === 'ENOENT' ? `${command} is not installed` : r.error.message };
  if (r.status !== 0) return { ok: false, why: (r.stderr || r.stdout || `exit code ${r.status}`).trim().split('\n')[0]! };
  return { ok: true, out: r.stdout };
}

/**
 * Finds out once, at start, whether workers can be sandboxed here: bubblewrap must be installed and
 * able to make namespaces (as root, or through user namespaces), and as root `setpriv` must be able
 * to switch to a worker uid. A trial sandbox runs `true` exactly as a worker would start.
 */
export function detectIsolation(opts: { disabled: boolean; users: UidRange }): Isolation {
  if (opts.disabled) return { sandboxed: false, notIsolated: 'sandboxing is off (molt server --no-isolation)' };
  const version = run('bwrap', ['--version']);
  if (!version.ok) return { sandboxed: false, notIsolated: 'bubblewrap is not installed (apt-get install bubblewrap)' };
  const root = process.getuid?.() === 0;
  const base = ['--unshare-pid', '--unshare-ipc', '--new-session', '--die-with-parent', ...systemMounts()];
  if (root) {
    const trial = run('bwrap', [...base, 'setpriv', `--reuid=${opts.users.start}`, `--regid=${opts.users.start}`, '--clear-groups', '--inh-caps=-all', '--bounding-set=-all', '--no-new-privs', '--', 'true']);
    if (!trial.ok) return { sandboxed: false, notIsolated: `bubblewrap cannot start a sandbox here (${trial.why})` };
    return { sandboxed: true, bwrap: 'bwrap', version: version.out.trim(), users: opts.users };
  }
  const trial = run('bwrap', ['--unshare-user', ...base, 'true']);
  if (!trial.ok) return { sandboxed: false, notIsolated: `molt does not run as root and bubblewrap cannot make user namespaces here (${trial.why})` };
  return {
    sandboxed: true,
    bwrap: 'bwrap',
    version: version.out.trim(),
    users: null,
    notIsolated: `workers are sandboxed but run as molt's own user (uid ${process.getuid?.()}), not a user per namespace: run molt as root for that`,
  };
}

/** How `node list` and `app get` describe the server's isolation. */
export function describeIsolation(iso: Isolation): string {
  if (iso.notIsolated) return `NOT ISOLATED: ${iso.notIsolated}`;
  if (!iso.sandboxed) return 'NOT ISOLATED';
  return `sandboxed (${iso.version}${iso.users ? `, a user per namespace from ${iso.users.start}-${iso.users.end}` : ''})`;
}
