import { execFileSync } from 'node:child_process';
import { mkdirSync, readdirSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { WorkerAddress } from '../gateway/target.js';
import type { WorkerLaunch } from '../control-plane/worker-process.js';

/**
 * What a data plane writes down about each worker it owns, so that the next data plane on the data
 * dir can adopt it: who it is (pid and the start time the kernel gives that pid, so a reused pid is
 * never taken for it), the secret its control socket asks for, and how it was launched.
 */
export interface WorkerRecord {
  launch: WorkerLaunch;
  secret: string;
  /** The worker's Node process on the host (inside a sandbox, not the sandbox's own process). */
  pid: number;
  /** Field 22 of /proc/<pid>/stat: when that pid started, in clock ticks since boot. */
  startTime: string;
  state: 'starting' | 'running';
  releaseId: string;
  /** The worker runtime it was started with (absent in records of molt versions before it was kept). */
  runtime?: string;
  address?: WorkerAddress;
}

/**
 * The fields of /proc/<pid>/stat from field 3 (state) on; undefined when the process is gone.
 * "pid (comm) state ppid …": comm may hold spaces and parentheses, so it is read after the last ')'.
 */
function procStat(pid: number): string[] | undefined {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  } catch {
    return undefined;
  }
}

/** The parent pid of a process (field 4); undefined when it is gone. */
export function parentOf(pid: number): number | undefined {
  const fields = procStat(pid);
  return fields ? Number(fields[1]) : undefined;
}

/** The kernel's start time of a process (field 22); undefined when it is gone or a zombie. */
export function startTimeOf(pid: number): string | undefined {
  const fields = procStat(pid);
  return fields && fields[0] !== 'Z' ? fields[19] : undefined;
}

/** Whether the process a record names still runs: the same pid, started at the same time. */
export function stillRuns(r: Pick<WorkerRecord, 'pid' | 'startTime'>): boolean {
  return startTimeOf(r.pid) === r.startTime;
}

/**
 * `<data-dir>/workers/`: one `<id>.json` per worker (mode 0600), and the two FIFOs its stdout and
 * stderr go to, which a later data plane opens again. Only molt reads this directory: no sandbox
 * shows it.
 */
export class WorkerRecords {
  constructor(readonly dir: string) {
    mkdirSync(dir, { recursive: true, mode: 0o700 });
  }

  /** The FIFO a worker's stdout or stderr is written to. */
  fifo(id: string, stream: 'stdout' | 'stderr'): string {
    return join(this.dir, `${id}.${stream === 'stdout' ? 'out' : 'err'}`);
  }

  /** Makes a worker's two FIFOs (Node has no mkfifo). */
  makeFifos(id: string): void {
    const paths = [this.fifo(id, 'stdout'), this.fifo(id, 'stderr')];
    for (const p of paths) rmSync(p, { force: true });
    execFileSync('mkfifo', ['-m', '600', ...paths]);
  }

  /** Writes a record whole, or not at all (a data plane may die mid-write). */
  write(r: WorkerRecord): void {
    const file = join(this.dir, `${r.launch.id}.json`);
    writeFileSync(`${file}.tmp`, JSON.stringify(r), { mode: 0o600 });
    renameSync(`${file}.tmp`, file);
  }

  remove(id: string): void {
    for (const name of [`${id}.json`, `${id}.out`, `${id}.err`]) rmSync(join(this.dir, name), { force: true });
  }

  /** Every record, and the ids of files left without one (a data plane died before writing it). */
  list(): { records: WorkerRecord[]; orphans: string[] } {
    const records: WorkerRecord[] = [];
    const ids = new Set<string>();
    for (const name of readdirSync(this.dir)) {
      const id = name.replace(/\.(json|out|err|json\.tmp)$/, '');
      ids.add(id);
      if (!name.endsWith('.json')) continue;
      try {
        records.push(JSON.parse(readFileSync(join(this.dir, name), 'utf8')) as WorkerRecord);
      } catch {
        // unreadable: treated as no record
      }
    }
    for (const r of records) ids.delete(r.launch.id);
    return { records, orphans: [...ids] };
  }
}
