import { EventEmitter } from 'node:events';
import { createWriteStream, existsSync, mkdirSync, readdirSync, readFileSync, type WriteStream } from 'node:fs';
import { join } from 'node:path';

export interface LogLine {
  ts: string;
  workerId: string;
  stream: 'stdout' | 'stderr' | 'molt';
  line: string;
}

/** Worker output: one file per worker under `<dir>/<namespace>/<app>/`, and a live feed for `logs -f`. */
export class LogHub {
  private readonly bus = new EventEmitter();
  /** One append stream per worker: the server's event loop also runs the gateway, so no sync writes. */
  private readonly files = new Map<string, WriteStream>();

  constructor(private readonly dir: string) {
    this.bus.setMaxListeners(0);
  }

  private appDir(namespace: string, app: string): string {
    return join(this.dir, namespace, app);
  }

  write(namespace: string, app: string, entry: LogLine): void {
    let file = this.files.get(entry.workerId);
    if (!file) {
      const dir = this.appDir(namespace, app);
      mkdirSync(dir, { recursive: true });
      file = createWriteStream(join(dir, `${entry.workerId}.log`), { flags: 'a' });
      this.files.set(entry.workerId, file);
    }
    file.write(`${JSON.stringify(entry)}\n`);
    this.bus.emit(`${namespace}/${app}`, entry);
  }

  /** Flushes and closes a worker's log file once it has stopped (later lines reopen it). */
  close(workerId: string): Promise<void> {
    const file = this.files.get(workerId);
    if (!file) return Promise.resolve();
    this.files.delete(workerId);
    return new Promise((resolvePromise) => file.end(() => resolvePromise()));
  }

  /** Waits until every open log file has written what it was given, so `read` sees it. */
  async flush(): Promise<void> {
    // Writes complete in order, so an empty write's callback means the earlier lines are on disk.
    await Promise.all([...this.files.values()].map((f) => new Promise<void>((r) => f.write('', () => r()))));
  }

  /** Stored lines of an app (one worker or all), in time order, the last `tail` of them. */
  read(namespace: string, app: string, opts: { workerId?: string; tail?: number } = {}): LogLine[] {
    const dir = this.appDir(namespace, app);
    if (!existsSync(dir)) return [];
    const files = readdirSync(dir).filter((f) => f.endsWith('.log') && (!opts.workerId || f === `${opts.workerId}.log`));
    const lines = files.flatMap((f) =>
      readFileSync(join(dir, f), 'utf8')
        .split('\n')
        .filter(Boolean)
        .map((l) => JSON.parse(l) as LogLine),
    );
    lines.sort((a, b) => (a.ts < b.ts ? -1 : a.ts > b.ts ? 1 : 0));
    return opts.tail ? lines.slice(-opts.tail) : lines;
  }

  follow(namespace: string, app: string, fn: (l: LogLine) => void): () => void {
    const key = `${namespace}/${app}`;
    this.bus.on(key, fn);
    return () => this.bus.off(key, fn);
  }
}

/** Splits a byte stream into lines; a partial line is kept until its end arrives. */
export function lineSplitter(onLine: (line: string) => void): { push(chunk: Buffer): void; end(): void } {
  let rest = '';
  return {
    push(chunk) {
      const parts = (rest + chunk.toString('utf8')).split('\n');
      rest = parts.pop() ?? '';
      for (const p of parts) onLine(p);
    },
    end() {
      if (rest) onLine(rest);
      rest = '';
    },
  };
}
