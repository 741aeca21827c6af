import crypto from 'node:crypto';
import pg from 'pg';
import type { TestProject } from 'vitest/node';

declare module 'vitest' {
  export interface ProvidedContext {
    schemaPrefix: string;
  }
}

const POSTGRES_URL = process.env.TEST_DATABASE_URL ?? 'postgres://postgres@127.0.0.1:5432/test';

/**
 * Test suites each get their own PostgreSQL schema, named with this run's prefix, and the schemas
 * are dropped only when the whole run is over. Dropping one while another suite's migrator scans
 * the catalog (Kysely's introspection reads every schema) fails that scan with "schema does not
 * exist", which was seen in CI with test files running in parallel.
 */
export default function setup(project: TestProject) {
  const prefix = `t_${crypto.randomBytes(4).toString('hex')}_`;
  project.provide('schemaPrefix', prefix);
  return async () => {
    const client = new pg.Client({ connectionString: POSTGRES_URL, connectionTimeoutMillis: 3_000 });
    try {
      await client.connect();
    } catch {
      return; // PostgreSQL was not reachable: there is nothing to drop.
    }
    try {
      const { rows } = await client.query<{ nspname: string }>('select nspname from pg_namespace where starts_with(nspname, $1)', [prefix]);
      for (const { nspname } of rows) await client.query(`drop schema if exists "${nspname}" cascade`);
    } finally {
      await client.end();
    }
  };
}
