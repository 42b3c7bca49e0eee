import { EventEmitter } from 'node:events';
import { createWriteStream, existsSync, mkdirSync, readdirSync, readFileSync, rmSync, statSync, type WriteStream } from 'node:fs';
import { join } from 'node:path';

/** The longest line kept whole; a longer one (app code can print anything) is cut into lines this long. */
export const MAX_LINE = 16 * 1024;
/** Log files kept per app: the oldest go when a new worker's file would pass it. */
const MAX_FILES_PER_APP = 100;

/** One worker's log file: the stream, its bytes so far, and its part number (rotation). */
interface OpenLog {
  stream: WriteStream;
  bytes: number;
  part: number;
  dir: string;
  /** While its buffer is full: resolves when the stream drains (one for every waiting writer). */
  full?: Promise<void>;
}

export interface LogLine {
  ts: string;
  workerId: string;
  stream: 'stdout' | 'stderr' | 'molt';
  line: string;
}

/**
 * Worker output: files per worker under `<dir>/<namespace>/<app>/`, and a live feed for `logs -f`.
 * What app code prints is bounded: a worker's file is rotated past `maxBytes` (its last two parts
 * are kept), an app keeps its last 100 files, and `write` tells the caller to wait while a file's
 * buffer is full, so a worker that prints faster than the disk takes it is slowed, not buffered.
 */
export class LogHub {
  private readonly bus = new EventEmitter();
  /** One append stream per worker: the server's event loop also runs the gateway, so no sync writes. */
  private readonly files = new Map<string, OpenLog>();

  constructor(
    private readonly dir: string,
    private readonly maxBytes = 16 * 1024 * 1024,
  ) {
    this.bus.setMaxListeners(0);
  }

  private appDir(namespace: string, app: string): string {
    return join(this.dir, namespace, app);
  }

  /**
   * Appends a line to the worker's file and the live feed. Returns a promise while the file's buffer
   * is full: the caller stops reading the worker's output until it resolves.
   */
  write(namespace: string, app: string, entry: LogLine): Promise<void> | undefined {
    let file = this.files.get(entry.workerId);
    if (!file) {
      const dir = this.appDir(namespace, app);
      mkdirSync(dir, { recursive: true });
      pruneOldest(dir, MAX_FILES_PER_APP - 1);
      file = { stream: createWriteStream(join(dir, `${entry.workerId}.log`), { flags: 'a' }), bytes: 0, part: 0, dir };
      this.files.set(entry.workerId, file);
    }
    const text = `${JSON.stringify(entry)}\n`;
    file.bytes += Buffer.byteLength(text);
    const flowing = file.stream.write(text);
    this.bus.emit(`${namespace}/${app}`, entry);
    if (file.bytes > this.maxBytes) this.rotate(entry.workerId, file);
    if (flowing) return undefined;
    const stream = file.stream;
    file.full ??= new Promise<void>((resolvePromise) => stream.once('drain', resolvePromise).once('close', resolvePromise)).then(() => {
      file.full = undefined;
    });
    return file.full;
  }

  /** Starts the worker's next file part; the part before the previous one is deleted. */
  private rotate(workerId: string, file: OpenLog): void {
    const old = file.stream;
    const stale = file.part === 0 ? undefined : partName(workerId, file.part - 1);
    old.end(() => {
      if (stale) rmSync(join(file.dir, stale), { force: true });
    });
    file.part++;
    file.bytes = 0;
    file.stream = createWriteStream(join(file.dir, partName(workerId, file.part)), { flags: 'a' });
  }

  /** Flushes and closes a worker's log file once it has stopped (later lines reopen it). */
  close(workerId: string): Promise<void> {
    const file = this.files.get(workerId);
    if (!file) return Promise.resolve();
    this.files.delete(workerId);
    return new Promise((resolvePromise) => file.stream.end(() => resolvePromise()));
  }

  /** Waits until every open log file has written what it was given, so `read` sees it. */
  async flush(): Promise<void> {
    // Writes complete in order, so an empty write's callback means the earlier lines are on disk.
    await Promise.all([...this.files.values()].map((f) => new Promise<void>((r) => f.stream.write('', () => r()))));
  }

  /** Stored lines of an app (one worker or all), in time order, the last `tail` of them. */
  read(namespace: string, app: string, opts: { workerId?: string; tail?: number } = {}): LogLine[] {
    const dir = this.appDir(namespace, app);
    if (!existsSync(dir)) return [];
    const files = readdirSync(dir).filter((f) => f.endsWith('.log') && (!opts.workerId || f.startsWith(`${opts.workerId}.`)));
    const lines = files.flatMap((f) =>
      readFileSync(join(dir, f), 'utf8')
        .split('\n')
        .filter(Boolean)
        .map((l) => JSON.parse(l) as LogLine),
    );
    lines.sort((a, b) => (a.ts < b.ts ? -1 : a.ts > b.ts ? 1 : 0));
    return opts.tail ? lines.slice(-opts.tail) : lines;
  }

  /** Gives live followers a line written elsewhere (by the data plane). */
  publish(namespace: string, app: string, entry: LogLine): void {
    this.bus.emit(`${namespace}/${app}`, entry);
  }

  follow(namespace: string, app: string, fn: (l: LogLine) => void): () => void {
    const key = `${namespace}/${app}`;
    this.bus.on(key, fn);
    return () => this.bus.off(key, fn);
  }
}

/** `<worker>.log`, then `<worker>.1.log`, `<worker>.2.log`… as it rotates. */
function partName(workerId: string, part: number): string {
  return part === 0 ? `${workerId}.log` : `${workerId}.${part}.log`;
}

/** Deletes the oldest log files of an app directory until at most `keep` remain. */
function pruneOldest(dir: string, keep: number): void {
  const files = readdirSync(dir).filter((f) => f.endsWith('.log'));
  if (files.length <= keep) return;
  const byAge = files.map((f) => ({ f, t: statSync(join(dir, f)).mtimeMs })).sort((a, b) => a.t - b.t);
  for (const { f } of byAge.slice(0, files.length - keep)) rmSync(join(dir, f), { force: true });
}

/**
 * Splits a byte stream into lines; a partial line is kept until its end arrives, and a line longer
 * than MAX_LINE is cut (app output must not grow the server's memory without bound).
 */
export function lineSplitter(onLine: (line: string) => void): { push(chunk: Buffer): void; end(): void } {
  let rest = '';
  return {
    push(chunk) {
      const parts = (rest + chunk.toString('utf8')).split('\n');
      rest = parts.pop() ?? '';
      for (const p of parts) for (let i = 0; i < p.length || i === 0; i += MAX_LINE) onLine(p.slice(i, i + MAX_LINE));
      while (rest.length > MAX_LINE) {
        onLine(rest.slice(0, MAX_LINE));
        rest = rest.slice(MAX_LINE);
      }
    },
    end() {
      if (rest) onLine(rest);
      rest = '';
    },
  };
}
