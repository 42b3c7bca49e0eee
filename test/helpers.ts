import { type ChildProcess, execFile, spawn } from 'node:child_process';
import { request } from 'node:http';
import { createServer as createNetServer } from 'node:net';
import { chownSync, cpSync, existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, readlinkSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import Database from 'better-sqlite3';
import pg from 'pg';
import { databaseFor, testStore } from './postgres.js';

export const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..');
export const MOLT_BIN = join(ROOT, 'packages/molt/bin/molt.js');

/**
 * The processes on this machine as `ps` sees them: pid, command line (as its title, when it set one:
 * its first word is then the whole title) and working directory ('' when not readable). Zombies, which
 * have no command line, are left out: they are gone, only not yet reaped.
 */
export function processes(): { pid: number; argv: string[]; cwd: string }[] {
  const found: { pid: number; argv: string[]; cwd: string }[] = [];
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const argv = readFileSync(`/proc/${entry}/cmdline`, 'utf8').split('\0').filter(Boolean);
      let cwd = '';
      try {
        cwd = readlinkSync(`/proc/${entry}/cwd`);
      } catch {
        // a process of another user, or gone
      }
      if (argv.length > 0) found.push({ pid: Number(entry), argv, cwd });
    } catch {
      // gone meanwhile
    }
  }
  return found;
}

/** Whether a process with this pid exists. */
export function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

export function tempDir(prefix = 'molt-test-'): string {
  return mkdtempSync(join(tmpdir(), prefix));
}

/** A `molt server` child process on a free port, with its own data dir. */
export class ServerProcess {
  child!: ChildProcess;
  url = '';
  output = '';
  adminToken = '';
  /** MOLT_DATABASE_URL when the suite runs on PostgreSQL (a `molt server --takeover` must name the same database). */
  database: Record<string, string> = {};

  constructor(
    readonly dataDir: string,
    readonly extraArgs: string[] = [],
    readonly env: Record<string, string> = {},
    /** Run the server as this uid (it owns the data dir), not as the test's user. */
    readonly runAs?: number,
  ) {}

  async start(): Promise<this> {
    this.output = '';
    const server = [process.execPath, MOLT_BIN, 'server', '--data-dir', this.dataDir, '--port', '0', ...this.extraArgs];
    // The suite's run on PostgreSQL: each data dir has a database of its own (the same on a restart).
    this.database = testStore === 'postgres' ? { MOLT_DATABASE_URL: await databaseFor(this.dataDir) } : {};
    if (this.runAs !== undefined) chownSync(this.dataDir, this.runAs, this.runAs);
    const argv = this.runAs === undefined ? server : ['setpriv', `--reuid=${this.runAs}`, `--regid=${this.runAs}`, '--clear-groups', ...server];
    this.child = spawn(argv[0]!, argv.slice(1), {
      stdio: ['ignore', 'pipe', 'pipe'],
      env: { ...process.env, MOLT_CONFIG_DIR: join(this.dataDir, 'cli'), ...this.database, ...this.env },
    });
    this.child.stdout!.on('data', (c: Buffer) => (this.output += c.toString()));
    this.child.stderr!.on('data', (c: Buffer) => (this.output += c.toString()));
    const deadline = Date.now() + 20_000;
    // The server prints its URL, then where the admin token is (or, standing by, who leads): wait for both lines.
    while (!/listening on (https?:\/\/\S+)/.test(this.output) || !/admin token[ :]|standing by: /.test(this.output)) {
      if (this.child.exitCode !== null) throw new Error(`server exited: ${this.output}`);
      if (Date.now() > deadline) throw new Error(`server did not start: ${this.output}`);
      await sleep(50);
    }
    this.url = /listening on (https?:\/\/\S+)/.exec(this.output)![1]!;
    // A standby made none: the tokens are the leader's (a test sets one).
    if (existsSync(join(this.dataDir, 'admin-token'))) this.adminToken = readFileSync(join(this.dataDir, 'admin-token'), 'utf8').trim();
    return this;
  }

  /**
   * Stops the server the way Ctrl-C does and waits for it to exit. Throws if the server ever
   * reported an illegal state transition: the test that caused it fails.
   */
  async stop(signal: NodeJS.Signals = 'SIGTERM'): Promise<void> {
    if (this.child.exitCode === null && this.child.signalCode === null) {
      const exited = new Promise((r) => this.child.once('exit', r));
      this.child.kill(signal);
      await exited;
    }
    const illegal = /illegal (worker status|revision status|rollout phase) transition[^\n]*/.exec(this.output);
    if (illegal) throw new Error(`the server reported a state machine violation: ${illegal[0]}`);
  }

  /**
   * Runs one SQL statement on this server's store, behind its back (`?` placeholders; quote
   * camelCase columns): the SQLite file in its data dir, or its PostgreSQL database.
   */
  async sql(statement: string, params: unknown[] = []): Promise<Record<string, unknown>[]> {
    if (this.database.MOLT_DATABASE_URL) {
      const client = new pg.Client({ connectionString: this.database.MOLT_DATABASE_URL });
      await client.connect();
      try {
        let n = 0;
        return (await client.query(statement.replace(/\?/g, () => `$${++n}`), params)).rows;
      } finally {
        await client.end();
      }
    }
    const db = new Database(join(this.dataDir, 'molt.db'));
    try {
      const st = db.prepare(statement);
      if (st.reader) return st.all(...params) as Record<string, unknown>[];
      st.run(...params);
      return [];
    } finally {
      db.close();
    }
  }

  /** Everything the store holds, as text: the SQLite files' bytes, or every table of its database. */
  async storeText(): Promise<string> {
    if (!this.database.MOLT_DATABASE_URL) return ['molt.db', 'molt.db-wal'].map((f) => join(this.dataDir, f)).filter(existsSync).map((f) => readFileSync(f).toString('latin1')).join('');
    const tables = await this.sql("SELECT table_name AS name FROM information_schema.tables WHERE table_schema = 'public'");
    const rows = await Promise.all(tables.map((t) => this.sql(`SELECT * FROM "${String(t.name)}"`)));
    return JSON.stringify(rows);
  }

  /** An app's stored events (the API's NDJSON, parsed), oldest first. */
  async events(app: string, namespace = 'default'): Promise<{ type: string; message: string; workerId: string | null; rolloutId: string | null; ts: string }[]> {
    const res = await fetch(`${this.url}/api/v1/namespaces/${namespace}/apps/${app}/events`, { headers: { authorization: `Bearer ${this.adminToken}` } });
    return (await res.text()).split('\n').filter(Boolean).map((l) => JSON.parse(l));
  }

  /** Runs the CLI against this server as the given token (admin by default). */
  molt(args: string[], opts: { token?: string; cwd?: string; env?: Record<string, string>; bin?: string } = {}): Promise<CliResult> {
    return molt(args, {
      cwd: opts.cwd,
      bin: opts.bin,
      env: { MOLT_SERVER: this.url, MOLT_TOKEN: opts.token ?? this.adminToken, MOLT_CONFIG_DIR: join(this.dataDir, 'cli'), MOLT_CACHE_DIR: join(this.dataDir, 'cache'), ...this.database, ...opts.env },
    });
  }

  /** Calls the API directly. */
  async api<T = any>(method: string, path: string, body?: unknown, token = this.adminToken): Promise<{ status: number; body: T }> {
    const res = await fetch(`${this.url}${path}`, {
      method,
      headers: { authorization: `Bearer ${token}`, ...(body !== undefined ? { 'content-type': 'application/json' } : {}) },
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    const text = await res.text();
    return { status: res.status, body: text ? JSON.parse(text) : undefined };
  }

  /**
   * A request straight to one worker, past the gateway: GET, or POST of `body` as JSON. An
   * unsandboxed worker is reached at its loopback port, a sandboxed one at its socket in the data dir.
   */
  callWorker(worker: { id: string; port: number | null }, path: string, body?: unknown): Promise<string> {
    const where = worker.port ? { host: '127.0.0.1', port: worker.port } : { socketPath: join(this.dataDir, 'run', worker.id, 'http.sock') };
    return new Promise((resolvePromise, reject) => {
      const req = request({ ...where, path, method: body === undefined ? 'GET' : 'POST' }, (res) => {
        let text = '';
        res.on('data', (c: Buffer) => (text += c.toString()));
        res.on('end', () => resolvePromise(text));
      });
      req.on('error', reject);
      req.end(body === undefined ? undefined : JSON.stringify(body));
    });
  }

  route(ns: string, app: string, path: string): string {
    return `${this.url}/api/routes/v1/${ns}/${app}${path}`;
  }

  async createToken(namespace: string, role: string): Promise<string> {
    const res = await this.api('POST', '/api/v1/tokens', { namespace, role });
    if (res.status !== 201) throw new Error(JSON.stringify(res.body));
    return res.body.token;
  }
}

export interface CliResult {
  code: number;
  stdout: string;
  stderr: string;
}

/** Runs the CLI (this checkout's, or the molt at `bin`). */
export function molt(args: string[], opts: { cwd?: string; env?: Record<string, string>; bin?: string } = {}): Promise<CliResult> {
  return new Promise((resolvePromise) => {
    execFile(process.execPath, [opts.bin ?? MOLT_BIN, ...args], { cwd: opts.cwd ?? ROOT, env: { ...process.env, ...opts.env }, maxBuffer: 64 * 1024 * 1024 }, (err, stdout, stderr) => {
      resolvePromise({ code: err ? ((err as { code?: number }).code ?? 1) : 0, stdout, stderr });
    });
  });
}

/** `molt app run` in `dir` on `port` as a child process; `output()` is all it has printed so far. */
export function appRun(dir: string, port: number, extra: string[] = [], env: Record<string, string> = {}): { child: ChildProcess; output: () => string } {
  const child = spawn(process.execPath, [MOLT_BIN, 'app', 'run', '--port', String(port), ...extra], { cwd: dir, env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
  let output = '';
  child.stdout!.on('data', (c: Buffer) => (output += c.toString()));
  child.stderr!.on('data', (c: Buffer) => (output += c.toString()));
  return { child, output: () => output };
}

/** A port the OS says is free now (for `molt app run --port`, which takes a number). */
export function freePort(): Promise<number> {
  return new Promise((resolvePromise, reject) => {
    const srv = createNetServer();
    srv.once('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address() as { port: number };
      srv.close(() => resolvePromise(port));
    });
  });
}

export function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

export async function waitFor<T>(fn: () => Promise<T | undefined | false> | T | undefined | false, timeoutMs = 15_000, what = 'condition'): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await fn();
    if (v) return v;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(50);
  }
}

/** Writes an app directory: a JSON manifest (or molt.config.ts) and its modules. */
export function writeApp(dir: string, files: Record<string, string>): string {
  mkdirSync(dir, { recursive: true });
  for (const [name, content] of Object.entries(files)) {
    mkdirSync(dirname(join(dir, name)), { recursive: true });
    writeFileSync(join(dir, name), content);
  }
  return dir;
}

/** A copy of examples/get-start in a temp dir, with its SSE interval shortened for tests. */
export function copyExample(name = 'get-start', sseIntervalMs = 100): string {
  const dir = join(tempDir('molt-app-'), name);
  cpSync(join(ROOT, 'examples', name), dir, { recursive: true, filter: (s) => !s.includes('.molt') && !s.includes('node_modules') });
  // As `npm install` in the app would: its dependencies resolve from the repository's node_modules.
  symlinkSync(join(ROOT, 'node_modules'), join(dir, 'node_modules'));
  if (name === 'get-start') {
    const config = readFileSync(join(dir, 'molt.config.ts'), 'utf8').replace("workers: 1,", `workers: 1,\n  env: { SSE_INTERVAL_MS: '${sseIntervalMs}' },`);
    writeFileSync(join(dir, 'molt.config.ts'), config);
  }
  return dir;
}

/** A small app: `/` answers `body`; readiness on /healthz; options via the config. */
export function simpleApp(dir: string, opts: { name?: string; body?: string; config?: Record<string, unknown>; extra?: string } = {}): string {
  const name = opts.name ?? 'hello';
  return writeApp(dir, {
    'molt.config.json': JSON.stringify({ name, entry: 'index.ts', readiness: { path: '/healthz', timeoutMs: 10_000 }, rollout: { drainTimeoutMs: 5000, stopGraceMs: 2000 }, ...opts.config }),
    'index.ts': `${opts.extra ?? ''}
export default {
  async fetch(req: Request): Promise<Response> {
    const url = new URL(req.url);
    if (url.pathname === '/healthz') return new Response('ok');
    if (url.pathname === '/unready') return new Response('not ready', { status: 503 });
    if (url.pathname === '/slow') { await new Promise((r) => setTimeout(r, Number(url.searchParams.get('ms') ?? 500))); return new Response('slow done'); }
    if (url.pathname === '/headers') return Response.json(Object.fromEntries(req.headers));
    if (url.pathname === '/echo') return new Response(req.body, { headers: { 'content-type': req.headers.get('content-type') ?? 'text/plain' } });
    // The process's identity (in a sandbox every worker is PID 1): kept on globalThis, a hot upgrade keeps it.
    if (url.pathname === '/pid') return new Response((globalThis as any).processId ??= crypto.randomUUID());
    if (url.pathname === '/many-headers') return new Response('many', { headers: Object.fromEntries(Array.from({ length: 40 }, (_, i) => ["x-h" + i, String(i)])) });
    if (url.pathname === '/big') return new Response(new Uint8Array(Number(url.searchParams.get('mb') ?? 1) << 20).fill(97));
    if (url.pathname === '/count') { let n = 0; for await (const c of req.body ?? []) n += c.length; return new Response(String(n)); }
    if (url.pathname === '/sse') {
      const n = Number(url.searchParams.get('n') ?? 10), ms = Number(url.searchParams.get('ms') ?? 100);
      let i = 0;
      return new Response(new ReadableStream({ async pull(c) { if (i === n) return c.close(); await new Promise((r) => setTimeout(r, ms)); c.enqueue(new TextEncoder().encode('id: ' + i + '\\ndata: event ' + i++ + '\\n\\n')); } }), { headers: { 'content-type': 'text/event-stream' } });
    }
    if (url.pathname === '/log') { console.log(url.searchParams.get('line')); return new Response('logged'); }
    if (url.pathname === '/crash') { setTimeout(() => process.exit(3), 10); return new Response('bye'); }
    return new Response(${JSON.stringify(opts.body ?? 'hello')});
  },
};
`,
  });
}
