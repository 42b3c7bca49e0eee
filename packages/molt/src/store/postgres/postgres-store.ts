import { Kysely, PostgresDialect } from 'kysely';
import pg from 'pg';
import { KyselyStore } from '../kysely-store.js';
import type { Database as Schema } from '../schema.js';

/** The shared store for several control-plane replicas: a PostgreSQL database given by URL. */
export function createPostgresStore(connectionString: string): KyselyStore {
  const pool = new pg.Pool({ connectionString, max: 10 });
  return new KyselyStore(new Kysely<Schema>({ dialect: new PostgresDialect({ pool }) }), 'postgres');
}
