import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import type { Store } from './store.js';
import { createPostgresStore } from './postgres/postgres-store.js';
import { createSqliteStore } from './sqlite/sqlite-store.js';

/** Opens the store a server was given: a `postgres://` URL, or SQLite in the data dir. */
export async function openStore(dataDir: string, url?: string): Promise<Store> {
  mkdirSync(dataDir, { recursive: true });
  const store = url && /^postgres(ql)?:\/\//.test(url) ? createPostgresStore(url) : createSqliteStore(url ?? join(dataDir, 'molt.db'));
  await store.migrate();
  return store;
}
