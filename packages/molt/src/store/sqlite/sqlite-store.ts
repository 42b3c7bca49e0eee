import Database from 'better-sqlite3';
import { Kysely, SqliteDialect } from 'kysely';
import { KyselyStore } from '../kysely-store.js';
import type { Database as Schema } from '../schema.js';

/** The embedded store: one SQLite file in WAL mode. */
export function createSqliteStore(file: string): KyselyStore {
  const sqlite = new Database(file);
  sqlite.pragma('journal_mode = WAL');
  // NORMAL in WAL mode survives a process crash; only a power loss can drop the last commits.
  sqlite.pragma('synchronous = NORMAL');
  sqlite.pragma('busy_timeout = 5000');
  return new KyselyStore(new Kysely<Schema>({ dialect: new SqliteDialect({ database: sqlite }) }), 'sqlite');
}
