/**
 * A real PostgreSQL server for the suite: Debian's `postgresql`, a cluster made by initdb in the
 * run's temp dir, run by an unprivileged user (PostgreSQL refuses root) on a free loopback port.
 * The global setup starts one per run; each molt server a test starts on PostgreSQL gets a
 * database of its own in it, named after its data dir (so a restart finds its state again).
 */
import { execFileSync, spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { chownSync, existsSync, mkdirSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import pg from 'pg';
import { freePort } from './helpers.js';

const INSTALL = 'apt-get install -y postgresql';
/** The user the cluster runs as when the suite runs as root. */
const NOBODY = 65534;

/** Where initdb and pg_ctl are: Debian keeps them out of PATH, under /usr/lib/postgresql/<version>/bin. */
function bindir(): string {
  const root = '/usr/lib/postgresql';
  const versions = existsSync(root) ? readdirSync(root).filter((v) => existsSync(join(root, v, 'bin', 'initdb'))).sort((a, b) => Number(b) - Number(a)) : [];
  if (versions[0]) return join(root, versions[0], 'bin');
  const found = spawnSync('sh', ['-c', 'command -v initdb'], { encoding: 'utf8' }).stdout.trim();
  if (found) return join(found, '..');
  throw new Error(`the tests need a PostgreSQL server and none is installed (no initdb under ${root} or on PATH): ${INSTALL}`);
}

export interface PostgresCluster {
  /** The superuser's URL of the `postgres` database. */
  url: string;
  stop(): void;
}

/** Makes and starts a cluster under `dir`. */
export async function startPostgres(dir: string): Promise<PostgresCluster> {
  const bin = bindir();
  const asRoot = process.getuid?.() === 0;
  const as = (argv: string[]) => (asRoot ? ['setpriv', `--reuid=${NOBODY}`, `--regid=${NOBODY}`, '--clear-groups', ...argv] : argv);
  const run = (argv: string[]) => {
    const [cmd, ...args] = as(argv);
    execFileSync(cmd!, args, { stdio: 'pipe', env: { ...process.env, LC_ALL: 'C', HOME: dir } });
  };
  mkdirSync(dir, { recursive: true });
  if (asRoot) chownSync(dir, NOBODY, NOBODY);
  const data = join(dir, 'data');
  run([join(bin, 'initdb'), '-D', data, '-U', 'molt', '-A', 'trust', '-E', 'UTF8', '--no-sync']);
  const port = await freePort();
  // Durability is not what the suite tests: fsync off keeps it fast on a shared disk.
  const options = `-p ${port} -k ${dir} -c listen_addresses=127.0.0.1 -c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=500`;
  run([join(bin, 'pg_ctl'), '-D', data, '-o', options, '-l', join(dir, 'server.log'), '-w', '-t', '60', 'start']);
  return {
    url: `postgres://molt@127.0.0.1:${port}/postgres`,
    stop: () => run([join(bin, 'pg_ctl'), '-D', data, '-m', 'immediate', '-w', 'stop']),
  };
}

/** The URL of the suite's cluster (set by the global setup). */
export function postgresUrl(): string {
  const url = process.env.MOLT_TEST_POSTGRES_URL;
  if (!url) throw new Error('no test PostgreSQL server: the global setup (test/global-setup.ts) starts one');
  return url;
}

/** A database of this cluster for `key` (created if new), as a URL. */
export async function databaseFor(key: string): Promise<string> {
  const name = `molt_${createHash('sha256').update(key).digest('hex').slice(0, 20)}`;
  const admin = new pg.Client({ connectionString: postgresUrl() });
  await admin.connect();
  try {
    await admin.query(`CREATE DATABASE ${name}`);
  } catch (err) {
    // 42P04: it exists (a server restarted on the same data dir).
    if ((err as { code?: string }).code !== '42P04') throw err;
  } finally {
    await admin.end();
  }
  const url = new URL(postgresUrl());
  url.pathname = `/${name}`;
  return url.toString();
}

/** Which store the suite's servers use: `postgres` when MOLT_TEST_STORE says so, else SQLite. */
export const testStore: 'sqlite' | 'postgres' = process.env.MOLT_TEST_STORE === 'postgres' ? 'postgres' : 'sqlite';
