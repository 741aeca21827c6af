import crypto from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import pg from 'pg';
import { afterEach, beforeEach, inject } from 'vitest';
import type { Kysely } from 'kysely';
import { openDatabase, SQLITE_FILE_NAME, type DatabaseHandle, type Db } from '../src/db/database.js';
import { migrations } from '../src/db/migrations/index.js';
import { cloneScript } from './database-templates.js';

export type DialectName = 'sqlite' | 'postgres';

export const POSTGRES_URL = process.env.TEST_DATABASE_URL ?? 'postgres://postgres@127.0.0.1:5432/test';
/** CI sets DISPATCHER_TEST_POSTGRES=required: an unreachable PostgreSQL then fails the run instead of skipping. */
const postgresRequired = process.env.DISPATCHER_TEST_POSTGRES === 'required';

async function postgresReachable(): Promise<boolean> {
  const client = new pg.Client({ connectionString: POSTGRES_URL, connectionTimeoutMillis: 3_000 });
  try {
    await client.connect();
    await client.query('select 1');
    return true;
  } catch (error) {
    if (postgresRequired)
      throw new Error(`PostgreSQL is required (DISPATCHER_TEST_POSTGRES=required) but ${POSTGRES_URL} is unreachable: ${(error as Error).message}`, {
        cause: error,
      });
    return false;
  } finally {
    await client.end().catch(() => undefined);
  }
}

const reachable = await postgresReachable();
if (!reachable) {
  console.warn(`\n*** PostgreSQL at ${POSTGRES_URL} is unreachable: the PostgreSQL half of this suite is SKIPPED. ***\n`);
}

/** The databases every suite runs on: SQLite always, PostgreSQL when reachable (always in CI). */
export const dialects: DialectName[] = reachable ? ['sqlite', 'postgres'] : ['sqlite'];

export interface TestDatabase {
  name: DialectName;
  /** What `openDatabase` / a Config needs to reach this database. */
  options: { databaseUrl: string | undefined; dataDirectory: string; databaseSchema?: string };
  /** A handle with the schema migrated. */
  handle: DatabaseHandle;
  /** Opens another handle on the same database, as a second instance would. */
  open(): DatabaseHandle;
  drop(): Promise<void>;
}

/**
 * A fresh database, migrated unless asked not to: a new SQLite file, or a new PostgreSQL schema.
 * A migrated one is a copy of the run's template (test/global-setup.ts), the same as migrating anew.
 */
export async function createTestDatabase(name: DialectName, setup: { migrate?: boolean } = {}): Promise<TestDatabase> {
  const migrate = setup.migrate !== false;
  const dataDirectory = fs.mkdtempSync(path.join(os.tmpdir(), 'dispatcher-test-'));
  let schema: string | undefined;
  if (name === 'postgres') {
    schema = `${inject('schemaPrefix')}${crypto.randomBytes(6).toString('hex')}`;
    let script = `create schema ${schema}`;
    if (migrate) {
      const template = inject('postgresTemplate');
      if ('unavailable' in template) throw new Error(`No migrated PostgreSQL template for the tests: ${template.unavailable}`);
      script = cloneScript(template, schema);
    }
    await withAdminClient((client) => client.query(script));
  } else if (migrate) {
    fs.copyFileSync(inject('sqliteTemplate'), path.join(dataDirectory, SQLITE_FILE_NAME));
  }
  const options = { databaseUrl: name === 'postgres' ? POSTGRES_URL : undefined, dataDirectory, databaseSchema: schema };
  const handles: DatabaseHandle[] = [];
  const open = () => {
    const handle = openDatabase(options);
    handles.push(handle);
    return handle;
  };
  const handle = open();
  return {
    name,
    options,
    handle,
    open,
    async drop() {
      await Promise.all(handles.map((each) => each.close().catch(() => undefined)));
      // PostgreSQL schemas are dropped together when the run ends (test/global-setup.ts).
      fs.rmSync(dataDirectory, { recursive: true, force: true });
    },
  };
}

/**
 * What a suite of database tests shares, in one line: before each test a fresh migrated database
 * on `dialect`, after it the database dropped. `database` and `db` are this test's.
 */
export function useTestDatabase(dialect: DialectName): { readonly database: TestDatabase; readonly db: Db } {
  let database: TestDatabase | undefined;
  beforeEach(async () => {
    database = await createTestDatabase(dialect);
  });
  afterEach(async () => {
    await database?.drop();
    database = undefined;
  });
  const current = () => {
    if (!database) throw new Error('the database exists only while a test runs');
    return database;
  };
  return {
    get database() {
      return current();
    },
    get db() {
      return current().handle.db;
    },
  };
}

/**
 * A database migrated up to `migration`, not including it, with what it takes to test that
 * migration on rows written before it: the untyped Kysely to write them, and `up()` to run it.
 */
export async function createDatabaseBefore(
  name: DialectName,
  migration: string,
): Promise<{ database: TestDatabase; db: Kysely<unknown>; up(): Promise<void> }> {
  const database = await createTestDatabase(name, { migrate: false });
  const db = database.handle.db as unknown as Kysely<unknown>;
  const names = Object.keys(migrations);
  const index = names.indexOf(migration);
  if (index < 0) throw new Error(`No migration named ${migration}.`);
  for (const earlier of names.slice(0, index)) await migrations[earlier]!.up(db, database.handle.dialect);
  return { database, db, up: () => (migrations[migration] as (typeof migrations)[string]).up(db, database.handle.dialect) };
}

async function withAdminClient<T>(work: (client: pg.Client) => Promise<T>): Promise<T> {
  const client = new pg.Client({ connectionString: POSTGRES_URL });
  await client.connect();
  try {
    return await work(client);
  } finally {
    await client.end();
  }
}
