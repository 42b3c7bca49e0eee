import { existsSync, mkdirSync, readFileSync, rmdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';

/** CPU and memory limits of one worker, enforced by a cgroup of its own. */
export interface WorkerCgroup {
  /** `cgroup.procs` files the worker's pid is written to before it execs Node. */
  procs: string[];
  /** Whether the kernel killed a process of this cgroup for memory. */
  oomKilled(): boolean;
  /** Removes the cgroup (after the worker exited). */
  remove(): Promise<void>;
}

export interface Limits {
  cpu?: number;
  memoryMb?: number;
}

/** How limits are enforced here: the cgroup version in use, or why none is. */
export type CgroupMode = { version: 'v1' | 'v2'; base: string } | { version: null; reason: string };

const PERIOD_US = 100_000;
const MiB = 1024 * 1024;

function ownPath(controller: string | null): string {
  // /proc/self/cgroup: "4:memory:/a/b" (v1) or "0::/a/b" (v2).
  for (const line of readFileSync('/proc/self/cgroup', 'utf8').split('\n')) {
    const [, controllers, path] = line.split(':');
    if (path === undefined) continue;
    if (controller === null ? controllers === '' : controllers!.split(',').includes(controller)) return path;
  }
  return '/';
}

function oomKills(file: string): number {
  try {
    const m = /^oom_kill (\d+)$/m.exec(readFileSync(file, 'utf8'));
    return m ? Number(m[1]) : 0;
  } catch {
    return 0;
  }
}

async function removeDir(dir: string): Promise<void> {
  for (let i = 0; i < 40; i++) {
    try {
      rmdirSync(dir);
      return;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return;
      // EBUSY: the last process is still leaving; give it a moment.
      await new Promise((r) => setTimeout(r, 25));
    }
  }
}

/**
 * Worker cgroups under the server's own cgroup (`…/molt/<worker>`), v2 where the unified hierarchy
 * is mounted at `root`, v1 where `root/cpu` and `root/memory` are. Where neither can be written,
 * workers run without limits and the reason is reported with them.
 */
export class Cgroups {
  private constructor(readonly mode: CgroupMode) {}

  static detect(root = '/sys/fs/cgroup'): Cgroups {
    try {
      if (existsSync(join(root, 'cgroup.controllers'))) return new Cgroups(Cgroups.setUpV2(root));
      if (existsSync(join(root, 'memory', 'memory.limit_in_bytes')) && existsSync(join(root, 'cpu', 'cpu.cfs_quota_us'))) {
        for (const c of ['cpu', 'memory']) mkdirSync(join(root, c, ownPath(c), 'molt'), { recursive: true });
        return new Cgroups({ version: 'v1', base: root });
      }
      return new Cgroups({ version: null, reason: `no cgroup v2 or v1 cpu and memory hierarchies at ${root}` });
    } catch (err) {
      return new Cgroups({ version: null, reason: `cgroups at ${root} are not writable (${(err as NodeJS.ErrnoException).code ?? (err as Error).message})` });
    }
  }

  /** v2 allows controllers only in cgroups without processes, so the server moves to a leaf first. */
  private static setUpV2(root: string): CgroupMode {
    const own = join(root, ownPath(null));
    const controllers = readFileSync(join(own, 'cgroup.controllers'), 'utf8');
    if (!/\bcpu\b/.test(controllers) || !/\bmemory\b/.test(controllers)) {
      return { version: null, reason: `the cpu and memory controllers are not delegated to ${own} (it has: ${controllers.trim() || 'none'})` };
    }
    const enable = (dir: string) => writeFileSync(join(dir, 'cgroup.subtree_control'), '+cpu +memory');
    try {
      enable(own);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EBUSY') throw err;
      const leaf = join(own, 'molt-server');
      mkdirSync(leaf, { recursive: true });
      writeFileSync(join(leaf, 'cgroup.procs'), String(process.pid));
      enable(own);
    }
    const base = join(own, 'molt');
    mkdirSync(base, { recursive: true });
    enable(base);
    return { version: 'v2', base };
  }

  /** Why limits are not enforced here, or undefined when they are. */
  get unenforcedReason(): string | undefined {
    return this.mode.version === null ? this.mode.reason : undefined;
  }

  /** A cgroup with the worker's limits, or undefined when there is nothing to limit or no cgroups. */
  create(workerId: string, limits: Limits): WorkerCgroup | undefined {
    const { mode } = this;
    if (mode.version === null || (!limits.cpu && !limits.memoryMb)) return undefined;
    const quota = limits.cpu ? Math.max(1000, Math.round(limits.cpu * PERIOD_US)) : undefined;
    const bytes = limits.memoryMb ? Math.floor(limits.memoryMb * MiB) : undefined;
    if (mode.version === 'v2') {
      const dir = join(mode.base, workerId);
      mkdirSync(dir, { recursive: true });
      if (quota) writeFileSync(join(dir, 'cpu.max'), `${quota} ${PERIOD_US}`);
      if (bytes) {
        writeFileSync(join(dir, 'memory.max'), String(bytes));
        if (existsSync(join(dir, 'memory.swap.max'))) writeFileSync(join(dir, 'memory.swap.max'), '0');
      }
      return { procs: [join(dir, 'cgroup.procs')], oomKilled: () => oomKills(join(dir, 'memory.events')) > 0, remove: () => removeDir(dir) };
    }
    const cpuDir = join(mode.base, 'cpu', ownPath('cpu'), 'molt', workerId);
    const memDir = join(mode.base, 'memory', ownPath('memory'), 'molt', workerId);
    const dirs: string[] = [];
    if (quota) {
      mkdirSync(cpuDir, { recursive: true });
      dirs.push(cpuDir);
      writeFileSync(join(cpuDir, 'cpu.cfs_period_us'), String(PERIOD_US));
      writeFileSync(join(cpuDir, 'cpu.cfs_quota_us'), String(quota));
    }
    if (bytes) {
      mkdirSync(memDir, { recursive: true });
      dirs.push(memDir);
      writeFileSync(join(memDir, 'memory.limit_in_bytes'), String(bytes));
      // With swap the worker would page instead of hitting its limit.
      if (existsSync(join(memDir, 'memory.memsw.limit_in_bytes'))) writeFileSync(join(memDir, 'memory.memsw.limit_in_bytes'), String(bytes));
    }
    return {
      procs: dirs.map((d) => join(d, 'cgroup.procs')),
      oomKilled: () => bytes !== undefined && oomKills(join(memDir, 'memory.oom_control')) > 0,
      remove: async () => {
        for (const d of dirs) await removeDir(d);
      },
    };
  }
}

/** How a worker's limits read in `worker list` and `app get`. */
export function describeLimits(limits: Limits, cgroups: Cgroups): string {
  const parts: string[] = [];
  if (limits.cpu) parts.push(`cpu ${limits.cpu}`);
  if (limits.memoryMb) parts.push(`${limits.memoryMb} MiB`);
  if (parts.length === 0) return '';
  const reason = cgroups.unenforcedReason;
  return reason ? `${parts.join(', ')} NOT ENFORCED: ${reason}` : `${parts.join(', ')} (cgroup ${cgroups.mode.version})`;
}
