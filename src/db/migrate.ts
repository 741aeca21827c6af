import { Migrator, type Kysely, type Migration, type MigrationProvider } from 'kysely';
import type { DatabaseHandle } from './database.js';
import { migrations } from './migrations/index.js';

/**
 * Brings the schema up to date. Safe when several instances start together: Kysely's migrator
 * takes a transaction-scoped advisory lock on PostgreSQL, and SQLite serves one process.
 */
export async function migrateToLatest(handle: DatabaseHandle): Promise<string[]> {
  const provider: MigrationProvider = {
    getMigrations: async () =>
      Object.fromEntries(
        Object.entries(migrations).map(([name, migration]): [string, Migration] => [
          name,
          { up: (db: Kysely<unknown>) => migration.up(db, handle.dialect) },
        ]),
      ),
  };
  // Kysely looks for its own tables through introspection, which ignores search_path: name the schema.
  const migrator = new Migrator({ db: handle.db, provider, ...(handle.schema ? { migrationTableSchema: handle.schema } : {}) });
  const { error, results = [] } = await migrator.migrateToLatest();
  if (error) throw error instanceof Error ? error : new Error(String(error));
  return results.filter((result) => result.status === 'Success').map((result) => result.migrationName);
}
