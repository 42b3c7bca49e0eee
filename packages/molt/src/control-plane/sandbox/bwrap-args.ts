import { existsSync, lstatSync, readlinkSync, realpathSync } from 'node:fs';
import { dirname, join } from 'node:path';

/** The name of a sandboxed worker's HTTP socket, in its run directory. */
export const SOCKET_NAME = 'http.sock';
/** The name of a worker's control socket (where a data plane adopts it), in its run directory. */
export const CONTROL_SOCKET_NAME = 'control.sock';

/** Where a sandboxed worker sees what it is given. */
export const SANDBOX = {
  /** Its release, read-only; also its cwd. */
  release: '/app',
  /** Every release of its app, read-only: hot upgrades load the next one from here. */
  releases: '/molt/releases',
  /** Its volumes, read-only, one directory each. */
  volumes: '/molt/volumes',
  /** A directory of its own on the host, holding only its HTTP and control sockets. */
  run: '/molt/run',
  socket: `/molt/run/${SOCKET_NAME}`,
  control: `/molt/run/${CONTROL_SOCKET_NAME}`,
  /** Private, size-limited, gone with the worker: `MOLT_SCRATCH`, `TMPDIR`, `HOME`. */
  scratch: '/molt/scratch',
  /** Private: the link directories of its hot upgrades. */
  links: '/molt/links',
} as const;

/** What Node and the programs an app may run need of /etc: public configuration, nothing else. */
const ETC = ['resolv.conf', 'hosts', 'nsswitch.conf', 'host.conf', 'gai.conf', 'localtime', 'timezone', 'ssl', 'ca-certificates', 'alternatives', 'mime.types', 'protocols', 'services'];

/**
 * Mounts in the order bubblewrap makes them. Before each one, every directory above its mount point
 * that nothing mounted yet provides is made with mode 0755 (bubblewrap would make it 0700, which the
 * worker's user could not enter) — after earlier mounts, so that a directory inside a tmpfs (a
 * runtime under /tmp, say) is made in that tmpfs rather than hidden under it.
 */
class MountPlan {
  private readonly made = new Set<string>();
  /** Where host directories are bound: what lies below them comes from the host. */
  private readonly bound: string[] = [];
  private readonly ops: string[] = [];

  /** One operation (`--ro-bind SRC DEST`, `--size N --tmpfs DEST`, …) whose last argument is where it lands. */
  add(...op: string[]): this {
    const dest = op.at(-1)!;
    const above: string[] = [];
    for (let d = dirname(dest); d !== '/'; d = dirname(d)) above.unshift(d);
    for (const d of above) {
      if (this.made.has(d) || this.bound.some((b) => d === b || d.startsWith(`${b}/`))) continue;
      this.ops.push('--perms', '0755', '--dir', d);
      this.made.add(d);
    }
    if (op.includes('--ro-bind') || op.includes('--bind') || op.includes('--ro-bind-try')) this.bound.push(dest);
    this.made.add(dest);
    this.ops.push(...op);
    return this;
  }

  args(): string[] {
    return this.ops;
  }
}

/**
 * The system as every sandbox shows it, read-only: /usr, the top-level links into it (/bin, /lib…,
 * or the directories themselves where /usr is not merged), and what Node needs of /etc.
 */
function addSystem(plan: MountPlan): MountPlan {
  plan.add('--ro-bind', '/usr', '/usr');
  for (const top of ['/bin', '/sbin', '/lib', '/lib32', '/lib64', '/libx32']) {
    let isLink: boolean;
    try {
      isLink = lstatSync(top).isSymbolicLink();
    } catch {
      continue;
    }
    if (isLink) plan.add('--symlink', readlinkSync(top), top);
    else plan.add('--ro-bind', top, top);
  }
  for (const name of ETC) plan.add('--ro-bind-try', `/etc/${name}`, `/etc/${name}`);
  return plan.add('--proc', '/proc').add('--dev', '/dev');
}

/**
 * The Node binary where it lives outside /usr (a Node from npm, nvm or a CI cache, often under
 * /tmp or /home): added after the sandbox's own tmpfs mounts, which would otherwise hide it.
 */
function addNode(plan: MountPlan): MountPlan {
  const node = realpathSync(process.execPath);
  return node.startsWith('/usr/') ? plan : plan.add('--ro-bind', node, node);
}

/** The system mounts alone (for the trial sandbox at start). */
export function systemMounts(): string[] {
  return addNode(addSystem(new MountPlan())).args();
}

export interface SandboxSpec {
  /** Host paths it is given. */
  releaseDir: string;
  releasesDir: string;
  volumes: { ref: string; path: string }[];
  runDir: string;
  /** Directories of the worker runtime (read-only, at the same paths, so module URLs match). */
  runtime: string[];
  /** The runtime's copy of `@molt/app`: apps resolve `@molt/app` to it through /node_modules. */
  moltApp: string;
  /** Files with a passwd and group entry for the worker's user. */
  passwd?: { passwd: string; group: string };
  /** Other files it reads at the same path (NODE_EXTRA_CA_CERTS). */
  files: string[];
  scratchBytes: number;
}

/**
 * bubblewrap's arguments for one worker: a fresh root showing the system read-only, its release at
 * /app (its cwd), its app's releases and its volumes read-only, its socket directory, and private
 * size-limited tmpfs for /tmp, scratch and hot-upgrade links; nothing else of the host, and nothing
 * of the data dir. New PID and IPC namespaces (it sees and signals only itself), a new session, and
 * no new privileges. It is not tied to its parent (--die-with-parent is left out on purpose: a
 * worker is meant to outlive a restart of molt). The network is shared: apps call other services.
 * Node runs as PID 1 of its namespace (`--as-pid-1`): when it exits, everything it started goes too.
 */
export function bwrapArgs(spec: SandboxSpec, statusFd: number): string[] {
  const size = String(spec.scratchBytes);
  const plan = addSystem(new MountPlan());
  for (const dir of ['/tmp', SANDBOX.scratch, SANDBOX.links]) plan.add('--perms', '1777', '--size', size, '--tmpfs', dir);
  plan.add('--ro-bind', spec.releaseDir, SANDBOX.release);
  plan.add('--ro-bind', spec.releasesDir, SANDBOX.releases);
  plan.add('--bind', spec.runDir, SANDBOX.run);
  for (const v of spec.volumes) plan.add('--ro-bind', v.path, join(SANDBOX.volumes, v.ref));
  for (const dir of spec.runtime) plan.add('--ro-bind', existsSync(dir) ? realpathSync(dir) : dir, dir);
  addNode(plan);
  plan.add('--ro-bind', spec.moltApp, spec.moltApp).add('--symlink', spec.moltApp, '/node_modules/@molt/app');
  if (spec.passwd) plan.add('--ro-bind', spec.passwd.passwd, '/etc/passwd').add('--ro-bind', spec.passwd.group, '/etc/group');
  for (const f of spec.files) if (existsSync(f)) plan.add('--ro-bind', f, f);
  return ['--unshare-pid', '--unshare-ipc', '--unshare-cgroup-try', '--new-session', '--as-pid-1', '--json-status-fd', String(statusFd), ...plan.args(), '--chdir', SANDBOX.release];
}
/** The command prefix that drops to the worker's user inside the sandbox, nothing of Node running as root. */
export function dropTo(uid: number): string[] {
  return ['setpriv', `--reuid=${uid}`, `--regid=${uid}`, '--clear-groups', '--inh-caps=-all', '--bounding-set=-all', '--no-new-privs', '--'];
}

/** Packages the worker runtime imports (its WebSockets), shown to a sandbox where Node finds them from the runtime. */
const RUNTIME_PACKAGES = ['ws'];

/**
 * The runtime directories a sandbox must show, given the worker entry's path (`<pkg>/dist/runtime/worker-main.js`),
 * each where Node looks for it from there: a package is found at `…/node_modules/<name>` even when that
 * path goes through a link (a linked install, pnpm), and is bound there from where it really is.
 */
export function runtimeDirs(workerMain: string): string[] {
  const dist = dirname(dirname(workerMain));
  // package.json says the compiled files are ES modules.
  return [dist, join(dirname(dist), 'package.json'), ...RUNTIME_PACKAGES.map((name) => lookupPath(dirname(workerMain), name))];
}

/** Where Node's resolution from `dir` finds package `name` (the first `node_modules/<name>` up the tree). */
function lookupPath(dir: string, name: string): string {
  for (let at = dir; ; at = dirname(at)) {
    const candidate = join(at, 'node_modules', name);
    if (existsSync(join(candidate, 'package.json'))) return candidate;
    if (dirname(at) === at) throw new Error(`the worker runtime needs the package ${name}, which is not installed above ${dir}; reinstall molt (npm ci)`);
  }
}
