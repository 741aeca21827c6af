import crypto from 'node:crypto';
import pg from 'pg';
import type { TestProject } from 'vitest/node';
import { dumpPostgresTemplate, migrateSqliteTemplate, type PostgresTemplate } from './database-templates.js';

declare module 'vitest' {
  export interface ProvidedContext {
    schemaPrefix: string;
    /** A migrated SQLite file that each test database copies. */
    sqliteTemplate: string;
    /** The migrated PostgreSQL schema each test database replays, or why there is none. */
    postgresTemplate: PostgresTemplate | { unavailable: string };
  }
}

const POSTGRES_URL = process.env.TEST_DATABASE_URL ?? 'postgres://postgres@127.0.0.1:5432/test';

async function connectToPostgres(): Promise<pg.Client | undefined> {
  const client = new pg.Client({ connectionString: POSTGRES_URL, connectionTimeoutMillis: 3_000 });
  try {
    await client.connect();
    return client;
  } catch {
    return undefined; // test/databases.ts skips the PostgreSQL half, or fails the run when it is required.
  }
}

/**
 * Migrations run once per run, here: each test database is a copy of a migrated template (a SQLite
 * file, a PostgreSQL schema replayed from its dump), identical to a freshly migrated one
 * (test/databases.test.ts) at a fraction of the cost. `vitest --watch` keeps the templates of its
 * start: restart it after changing a migration.
 *
 * Test suites each get their own PostgreSQL schema, named with this run's prefix, and the schemas
 * are dropped only when the whole run is over. Dropping one while another suite's migrator scans
 * the catalog (Kysely's introspection reads every schema) fails that scan with "schema does not
 * exist", which was seen in CI with test files running in parallel.
 */
export default async function setup(project: TestProject) {
  const prefix = `t_${crypto.randomBytes(4).toString('hex')}_`;
  project.provide('schemaPrefix', prefix);
  const sqlite = await migrateSqliteTemplate();
  project.provide('sqliteTemplate', sqlite.file);
  const postgres = await connectToPostgres();
  await postgres?.end();
  try {
    project.provide(
      'postgresTemplate',
      postgres ? await dumpPostgresTemplate(POSTGRES_URL, `${prefix}template`) : { unavailable: `${POSTGRES_URL} was unreachable` },
    );
  } catch (error) {
    project.provide('postgresTemplate', { unavailable: (error as Error).message });
  }
  return async () => {
    sqlite.remove();
    const client = await connectToPostgres();
    if (!client) return; // PostgreSQL was not reachable: there is nothing to drop.
    try {
      const { rows } = await client.query<{ nspname: string }>('select nspname from pg_namespace where starts_with(nspname, $1)', [prefix]);
      for (const { nspname } of rows) await client.query(`drop schema if exists "${nspname}" cascade`);
    } finally {
      await client.end();
    }
  };
}
