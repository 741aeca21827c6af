import { execFile } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import pg from 'pg';
import { openDatabase, SQLITE_FILE_NAME } from '../src/db/database.js';
import { migrateToLatest } from '../src/db/migrate.js';

/**
 * A migrated PostgreSQL schema as SQL: pg_dump's script of `schema` (its tables, sequences,
 * triggers, functions and rows), which replayed with another name makes an identical schema.
 */
export interface PostgresTemplate {
  schema: string;
  script: string;
}

/** Migrates a SQLite file once per run, for each test to copy (test/databases.ts). */
export async function migrateSqliteTemplate(): Promise<{ file: string; remove(): void }> {
  const directory = fs.mkdtempSync(path.join(os.tmpdir(), 'dispatcher-template-'));
  const handle = openDatabase({ databaseUrl: undefined, dataDirectory: directory });
  try {
    await migrateToLatest(handle);
  } finally {
    await handle.close();
  }
  const file = path.join(directory, SQLITE_FILE_NAME);
  // Closing the last connection checkpoints the WAL into the file and deletes it: the file alone is the database.
  if (fs.existsSync(`${file}-wal`)) throw new Error(`the migrated SQLite template ${file} still has a WAL file`);
  return { file, remove: () => fs.rmSync(directory, { recursive: true, force: true }) };
}

/**
 * Migrates `schema` once per run and captures it with pg_dump, for each test to replay under its
 * own name (test/databases.ts): one script instead of every migration and its introspection.
 */
export async function dumpPostgresTemplate(url: string, schema: string): Promise<PostgresTemplate> {
  const client = new pg.Client({ connectionString: url });
  await client.connect();
  try {
    await client.query(`create schema ${schema}`);
  } finally {
    await client.end();
  }
  const handle = openDatabase({ databaseUrl: url, dataDirectory: os.tmpdir(), databaseSchema: schema });
  try {
    await migrateToLatest(handle);
  } finally {
    await handle.close();
  }
  let dump: string;
  try {
    ({ stdout: dump } = await promisify(execFile)('pg_dump', ['--dbname', url, '--schema', schema, '--inserts', '--no-owner'], {
      maxBuffer: 64 * 1024 * 1024,
    }));
  } catch (error) {
    const missing = (error as NodeJS.ErrnoException).code === 'ENOENT';
    throw new Error(
      `pg_dump could not capture the migrated test schema: ${missing ? 'pg_dump is not installed (Debian: postgresql-client)' : (error as Error).message}`,
      { cause: error },
    );
  }
  // pg_dump ≥ 15.14 wraps its script in psql's \restrict and \unrestrict, which only psql understands.
  const script = dump
    .split('\n')
    .filter((line) => !/^\\(un)?restrict /.test(line))
    .join('\n');
  return { schema, script };
}

/** The script that makes `schema`, a copy of the template. */
export function cloneScript(template: PostgresTemplate, schema: string): string {
  return template.script.replace(new RegExp(`\\b${template.schema}\\b`, 'g'), schema);
}
