import { writeApp } from '../helpers.js';

/**
 * An app whose code is an attacker: `POST /probe { op, … }` tries one thing from inside its worker
 * and answers `{ ok, value | code }` — what it got, or the error code that stopped it.
 */
const INDEX = `
import { chmodSync, readdirSync, readFileSync, writeFileSync, openSync, closeSync, writeSync } from 'node:fs';
import { execFileSync } from 'node:child_process';
import { connect } from 'node:net';
import { tmpdir } from 'node:os';

type Op = { op: string; path?: string; data?: string; pid?: number; signal?: string; cmd?: string; args?: string[]; url?: string; mb?: number };

const status = (field: string) => new RegExp('^' + field + ':\\\\s*(\\\\S+)', 'm').exec(readFileSync('/proc/self/status', 'utf8'))?.[1];

function fill(path: string, mb: number): number {
  const fd = openSync(path, 'w');
  const chunk = Buffer.alloc(1024 * 1024, 120);
  let written = 0;
  try {
    for (let i = 0; i < mb; i++) written += writeSync(fd, chunk);
  } finally {
    closeSync(fd);
  }
  return written;
}

const ops: Record<string, (o: Op) => unknown> = {
  read: (o) => readFileSync(o.path!, 'utf8'),
  list: (o) => readdirSync(o.path!).sort().join(','),
  write: (o) => writeFileSync(o.path!, o.data ?? 'pwned'),
  chmod: (o) => chmodSync(o.path!, 0o777),
  kill: (o) => process.kill(o.pid!, (o.signal ?? 'SIGKILL') as NodeJS.Signals),
  exec: (o) => execFileSync(o.cmd!, o.args ?? [], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] }),
  connect: (o) => new Promise((resolve, reject) => { const s = connect({ path: o.path }); s.on('connect', () => { s.destroy(); resolve('connected'); }); s.on('error', reject); }),
  fetch: async (o) => (await fetch(o.url!)).text(),
  fill: (o) => fill(o.path!, o.mb!),
  // Floods: stdout (with or without newlines), or the control channel at fd 3 with no newline.
  print: (o) => { const chunk = 'x'.repeat(1024 * 1024) + (o.data === 'lines' ? '\\n' : ''); for (let i = 0; i < o.mb!; i++) process.stdout.write(chunk); return o.mb; },
  control: (o) => {
    const chunk = Buffer.alloc(64 * 1024, 120);
    for (let sent = 0; sent < o.mb! * 1024 * 1024; ) {
      try { sent += writeSync(3, chunk); } catch (e) { if ((e as NodeJS.ErrnoException).code !== 'EAGAIN') throw e; }
    }
  },
  info: () => JSON.stringify({
    uid: process.getuid!(), gid: process.getgid!(), groups: process.getgroups!(), pid: process.pid, cwd: process.cwd(), tmpdir: tmpdir(),
    scratch: process.env.MOLT_SCRATCH, home: process.env.HOME, noNewPrivs: status('NoNewPrivs'), capEff: status('CapEff'), capBnd: status('CapBnd'),
    env: Object.keys(process.env).sort(),
  }),
};

export default {
  async fetch(req: Request): Promise<Response> {
    const url = new URL(req.url);
    if (url.pathname === '/healthz') return new Response('ok');
    if (url.pathname !== '/probe') return new Response(process.env.GREETING ?? 'hello');
    const o = (await req.json()) as Op;
    try {
      const value = await ops[o.op]!(o);
      return Response.json({ ok: true, value: value === undefined ? null : String(value).slice(0, 4000) });
    } catch (err) {
      const e = err as NodeJS.ErrnoException;
      return Response.json({ ok: false, code: e.code ?? e.message });
    }
  },
};
`;

/** Writes the probe app (`name`) into `dir`, with any extra files and config. */
export function probeApp(dir: string, name: string, opts: { config?: Record<string, unknown>; files?: Record<string, string> } = {}): string {
  return writeApp(dir, {
    'molt.config.json': JSON.stringify({ name, entry: 'index.ts', readiness: { path: '/healthz', timeoutMs: 10_000 }, rollout: { drainTimeoutMs: 2000, stopGraceMs: 2000 }, ...opts.config }),
    'index.ts': INDEX,
    ...opts.files,
  });
}

export type ProbeResult = { ok: true; value: string | null } | { ok: false; code: string };
