import { Migrator, sql, type Kysely, type Migration, type MigrationProvider, type MigrationResultSet } from 'kysely';
import type { DatabaseHandle } from './database.js';
import type { Database } from './schema.js';
import { migrations } from './migrations/index.js';

/**
 * Brings the schema up to date. Safe when several instances start together: on PostgreSQL,
 * Kysely's migrator holds an advisory lock; on SQLite, where Kysely takes no lock, the whole run
 * is one BEGIN IMMEDIATE transaction, which shuts out other writers and rolls back on failure.
 */
export async function migrateToLatest(handle: DatabaseHandle): Promise<string[]> {
  const { error, results = [] } = handle.dialect.migratesInExclusiveTransaction
    ? await handle.db.connection().execute((connection) => migrateExclusively(connection, handle))
    : await createMigrator(handle.db, handle).migrateToLatest();
  if (error) throw error instanceof Error ? error : new Error(String(error));
  return results.filter((result) => result.status === 'Success').map((result) => result.migrationName);
}

async function migrateExclusively(connection: Kysely<Database>, handle: DatabaseHandle): Promise<MigrationResultSet> {
  await sql`begin immediate`.execute(connection);
  try {
    const outcome = await createMigrator(connection, handle).migrateToLatest();
    await sql.raw(outcome.error ? 'rollback' : 'commit').execute(connection);
    return outcome;
  } catch (error) {
    await sql`rollback`.execute(connection).catch(() => undefined);
    throw error;
  }
}

function createMigrator(db: Kysely<Database>, handle: DatabaseHandle): Migrator {
  const provider: MigrationProvider = {
    getMigrations: async () =>
      Object.fromEntries(
        Object.entries(migrations).map(([name, migration]): [string, Migration] => [
          name,
          { up: (migrationDb: Kysely<unknown>) => migration.up(migrationDb, handle.dialect) },
        ]),
      ),
  };
  // Kysely looks for its own tables through introspection, which ignores search_path: name the schema.
  return new Migrator({ db, provider, ...(handle.schema ? { migrationTableSchema: handle.schema } : {}) });
}
