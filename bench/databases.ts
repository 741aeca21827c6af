import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import pg from 'pg';
import { openDatabase, SQLITE_FILE_NAME, type DatabaseHandle } from '../src/db/database.js';
import type { DatabaseKind } from './options.js';

/** A throw-away database the bench imports into and points the server at. */
export interface BenchDatabase {
  kind: DatabaseKind;
  /** Where it lives, for the log. */
  location: string;
  /** The PostgreSQL database name (undefined for SQLite). */
  postgresDatabase?: string;
  /** The PostgreSQL connection string (undefined for SQLite). */
  connectionString?: string;
  /** The SQLite file (undefined for PostgreSQL). */
  sqliteFile?: string;
  /** Environment that makes `dispatcher serve` use this database. */
  serverEnv: Record<string, string>;
  /** A handle from this process; `poolSize` connections on PostgreSQL (default: openDatabase's). */
  open(poolSize?: number): DatabaseHandle;
  /** Removes the data (temp dir or database); safe to call twice. */
  destroy(): Promise<void>;
}

export async function createBenchDatabase(kind: DatabaseKind, pgUrl: string): Promise<BenchDatabase> {
  return kind === 'sqlite' ? createSqliteDatabase() : createPostgresDatabase(pgUrl);
}

async function createSqliteDatabase(): Promise<BenchDatabase> {
  const directory = await fs.mkdtemp(path.join(os.tmpdir(), 'dispatcher-bench-'));
  return {
    kind: 'sqlite',
    location: path.join(directory, SQLITE_FILE_NAME),
    sqliteFile: path.join(directory, SQLITE_FILE_NAME),
    serverEnv: { DATA_DIRECTORY: directory },
    open: () => openDatabase({ databaseUrl: undefined, dataDirectory: directory }),
    destroy: () => fs.rm(directory, { recursive: true, force: true }),
  };
}

/**
 * The server reads no schema from its environment, so PostgreSQL gets a whole database of its
 * own, named per run so an interrupted run never collides with the next one.
 */
async function createPostgresDatabase(pgUrl: string): Promise<BenchDatabase> {
  const name = `dispatcher_bench_${Date.now()}_${process.pid}`;
  await adminQuery(pgUrl, `create database ${name}`);
  return postgresDatabaseNamed(pgUrl, name);
}

/** The bench database `name` on the server at `pgUrl`, created by the caller and dropped by `destroy`. */
export function postgresDatabaseNamed(pgUrl: string, name: string): BenchDatabase {
  const url = new URL(pgUrl);
  url.pathname = `/${name}`;
  let dropped = false;
  return {
    kind: 'postgres',
    postgresDatabase: name,
    location: url.toString().replace(/\/\/([^:@/]+):[^@/]*@/, '//$1:***@'),
    connectionString: url.toString(),
    serverEnv: { DATABASE_URL: url.toString() },
    open: (poolSize) => openDatabase({ databaseUrl: url.toString(), dataDirectory: os.tmpdir(), databasePoolSize: poolSize }),
    destroy: async () => {
      if (dropped) return;
      // FORCE ends any session still attached (a server that died without closing its pool).
      await adminQuery(pgUrl, `drop database if exists ${name} with (force)`);
      dropped = true;
    },
  };
}

export async function adminQuery(pgUrl: string, statement: string): Promise<pg.QueryResult> {
  const client = new pg.Client({ connectionString: pgUrl });
  await client.connect();
  try {
    return await client.query(statement);
  } finally {
    await client.end();
  }
}

/** PostgreSQL version and the settings that move write throughput most, for the report. */
export async function describePostgres(pgUrl: string): Promise<Record<string, string>> {
  const result = await adminQuery(
    pgUrl,
    `select name, setting from pg_settings where name in ('server_version', 'shared_buffers', 'synchronous_commit', 'fsync', 'max_connections')`,
  );
  return Object.fromEntries(result.rows.map((row: { name: string; setting: string }) => [row.name, row.setting]));
}

/** Opens the bench database from this process, runs `work`, and closes it again. */
export async function withHandle<T>(database: BenchDatabase, work: (handle: DatabaseHandle) => Promise<T>): Promise<T> {
  const handle = database.open();
  try {
    return await work(handle);
  } finally {
    await handle.close();
  }
}
