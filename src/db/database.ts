import { createHash } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { keepPrivate } from '../lib/private-files.js';
import SqliteDatabase from 'better-sqlite3';
import {
  CompiledQuery,
  Kysely,
  PostgresDialect,
  SqliteDialect,
  SqliteDriver,
  sql,
  type DatabaseConnection,
  type DatabaseIntrospector,
  type TableMetadata,
  type TransactionSettings,
} from 'kysely';
import pg from 'pg';
import { postgresDialect, sqliteDialect, type Dialect } from './dialect.js';
import type { Database } from './schema.js';

export type Db = Kysely<Database>;

export interface DatabaseHandle {
  db: Db;
  dialect: Dialect;
  /** Where the data lives, for logs: the SQLite file or the PostgreSQL URL without its password. */
  location: string;
  /** The PostgreSQL schema in use when one was configured. */
  schema?: string;
  /** Connections right now, for /metrics. */
  poolUsage(): PoolUsage;
  close(): Promise<void>;
}

/** PostgreSQL's pool figures; SQLite has one connection and neither idle nor waiting figures. */
export interface PoolUsage {
  open: number;
  max: number;
  idle?: number;
  /** Queries waiting for a free connection. */
  waiting?: number;
}

export interface DatabaseOptions {
  databaseUrl: string | undefined;
  dataDirectory: string;
  /** PostgreSQL schema to use instead of the default search_path (tests give each suite its own). */
  databaseSchema?: string;
  databasePoolSize?: number;
  /** PostgreSQL: keep recurring statements prepared per connection (off behind a transaction-mode pooler). */
  preparedStatements?: boolean;
  /** Called with every query's SQL and how long it ran (the SQL snapshot tests and profiling use it). */
  onQuery?: (sql: string, durationMs: number) => void;
}

export const SQLITE_FILE_NAME = 'dispatcher.sqlite';

/**
 * How long a write waits for another process's write lock on the SQLite file (a `dispatcher import`
 * beside the server, or the server beside it) before failing with SQLITE_BUSY.
 */
export const SQLITE_BUSY_TIMEOUT_MS = 5_000;

// int8 (counts, epoch milliseconds) and numeric (sums) arrive as strings by default; every value we
// store fits a double exactly (epoch ms and byte counts are far below 2^53).
const pgTypes = {
  getTypeParser: (oid: number, format?: 'text' | 'binary') => (oid === 20 || oid === 1700 ? Number : pg.types.getTypeParser(oid, format as 'text')),
};

export function openDatabase(options: DatabaseOptions): DatabaseHandle {
  return options.databaseUrl ? openPostgres(options.databaseUrl, options) : openSqlite(options.dataDirectory, options);
}

const STATEMENT_CACHE_SIZE = 500;

/**
 * Kysely's SQLite driver prepares every statement on every call; preparing was 12 % of the
 * server's CPU under /allocate load. The same few hundred SQL strings recur, so keep them.
 * Kysely runs one statement at a time on this connection, so reusing a statement is safe.
 */
function withStatementCache(database: SqliteDatabase.Database): SqliteDatabase.Database {
  const cache = new Map<string, SqliteDatabase.Statement>();
  return new Proxy(database, {
    get(target, property, receiver) {
      if (property !== 'prepare') return Reflect.get(target, property, receiver);
      return (source: string) => {
        let statement = cache.get(source);
        if (!statement) {
          statement = target.prepare(source);
          if (cache.size >= STATEMENT_CACHE_SIZE) cache.delete(cache.keys().next().value as string);
          cache.set(source, statement);
        }
        return statement;
      };
    },
  });
}

function queryLog(options: DatabaseOptions) {
  const onQuery = options.onQuery;
  return onQuery ? { log: (event: { query: { sql: string }; queryDurationMillis: number }) => onQuery(event.query.sql, event.queryDurationMillis) } : {};
}

function openSqlite(dataDirectory: string, options: DatabaseOptions): DatabaseHandle {
  ensureWritableDirectory(dataDirectory);
  const file = path.join(dataDirectory, SQLITE_FILE_NAME);
  // The database holds password hashes and, unless given from outside, the JWT secret and the
  // provisioning key: the service's account alone may read it. SQLite gives its -wal and -shm
  // files the database file's mode, so creating that 0600 covers all three.
  keepPrivate(
    [{ path: dataDirectory, directory: true }, ...['', '-wal', '-shm'].map((suffix) => ({ path: `${file}${suffix}`, directory: false }))],
    'the database keeps secrets (password hashes, the JWT secret, the provisioning key).',
  );
  fs.closeSync(fs.openSync(file, 'a', 0o600));
  let database: SqliteDatabase.Database | undefined;
  try {
    database = new SqliteDatabase(file, { timeout: SQLITE_BUSY_TIMEOUT_MS });
    database.pragma('journal_mode = WAL');
    // NORMAL in WAL mode keeps every committed transaction across a process crash; only a power
    // loss may drop the last ones (https://www.sqlite.org/pragma.html#pragma_synchronous).
    database.pragma('synchronous = NORMAL');
    database.pragma('foreign_keys = ON');
  } catch (error) {
    database?.close();
    const code = (error as { code?: string }).code;
    throw new Error(`Cannot open the SQLite database ${file}: ${(error as Error).message}${code ? ` (${code})` : ''}.`, { cause: error });
  }
  const db = new Kysely<Database>({ dialect: sqliteDialectFor(database), ...queryLog(options) });
  return { db, dialect: sqliteDialect, location: file, poolUsage: () => ({ open: 1, max: 1 }), close: () => db.destroy() };
}

/**
 * The data directory is created if missing and must be writable (SQLite keeps the database, its WAL
 * and its shared memory there): otherwise start-up fails here, naming it, rather than with SQLite's
 * bare "unable to open database file".
 */
function ensureWritableDirectory(directory: string): void {
  try {
    makeDirectories(directory);
    fs.accessSync(directory, fs.constants.W_OK);
  } catch (error) {
    // mkdir -p answers ENOENT below a read-only directory: ask the nearest existing one why.
    let existing = directory;
    while (!fs.existsSync(existing)) existing = path.dirname(existing);
    let reason = error as NodeJS.ErrnoException;
    try {
      fs.accessSync(existing, fs.constants.W_OK);
    } catch (cause) {
      reason = cause as NodeJS.ErrnoException;
    }
    const denied = { EROFS: 'read-only filesystem', EACCES: 'permission denied', EPERM: 'operation not permitted' }[reason.code ?? ''];
    throw new Error(
      `The data directory ${directory} (DATA_DIRECTORY) ${denied ? `is not writable: ${denied}` : `cannot be used: ${reason.message}`}` +
        `${existing === directory ? '' : ` (at ${existing})`}. The SQLite database lives there: make it writable, or point DATA_DIRECTORY (or DATABASE_URL) elsewhere.`,
      { cause: error },
    );
  }
}

/**
 * `mkdir -p`, one level at a time. Node's `mkdirSync(…, { recursive: true })` never returns where
 * mkdir answers ENOENT below an existing directory (a path under /proc): it retried for ever.
 */
function makeDirectories(directory: string): void {
  const missing: string[] = [];
  for (let at = directory; !fs.existsSync(at); at = path.dirname(at)) missing.unshift(at);
  for (const each of missing) {
    try {
      // The data directory itself is the service's alone; the folders above it are ordinary ones.
      fs.mkdirSync(each, each === directory ? { mode: 0o700 } : {});
    } catch (error) {
      // Another instance starting at the same time made it.
      if ((error as NodeJS.ErrnoException).code !== 'EEXIST') throw error;
    }
  }
}

/**
 * SQLite rolls a transaction back by itself on some errors (SQLITE_FULL and SQLITE_IOERR: a full or
 * failing disk). Kysely's ROLLBACK then failed with "no transaction is active", and that error replaced
 * the real one: a full disk answered 500, not 503 (test/faults-sqlite). Roll back only what is open.
 *
 * Transactions that may write begin IMMEDIATE, taking the write lock at once and waiting up to the
 * busy timeout for it. A deferred BEGIN reads under a snapshot first, and its first write then fails
 * with SQLITE_BUSY at once, without waiting, when another process committed meanwhile
 * (https://www.sqlite.org/lang_transaction.html): an import beside a busy server failed so
 * (test/import-beside-server.e2e). Within this process nothing changes: its one connection runs one
 * transaction at a time.
 */
function sqliteDialectFor(database: SqliteDatabase.Database): SqliteDialect {
  const config = { database: withStatementCache(database) };
  class Driver extends SqliteDriver {
    override async beginTransaction(connection: DatabaseConnection, settings?: TransactionSettings): Promise<void> {
      await connection.executeQuery(CompiledQuery.raw(settings?.accessMode === 'read only' ? 'begin' : 'begin immediate'));
    }

    override async rollbackTransaction(connection: DatabaseConnection): Promise<void> {
      if (database.inTransaction) await super.rollbackTransaction(connection);
    }
  }
  return new (class extends SqliteDialect {
    override createDriver() {
      return new Driver(config);
    }
  })(config);
}

function openPostgres(url: string, options: DatabaseOptions): DatabaseHandle {
  const max = options.databasePoolSize ?? 10;
  const pool = new pg.Pool({
    connectionString: url,
    max,
    connectionTimeoutMillis: 5_000,
    types: pgTypes,
    ...(options.databaseSchema ? { options: `-c search_path=${options.databaseSchema}` } : {}),
  });
  // A client losing its connection (server restart) must not crash the process. pg-pool listens for
  // that only while a client is idle; a checked-out client between two queries had no listener, and a
  // PostgreSQL restart under load ended the process on an unhandled 'error' event (test/faults-postgres).
  // Its next query fails instead ("not queryable"), and the pool drops it when it is released.
  pool.on('error', () => undefined);
  pool.on('connect', (client) => client.on('error', () => undefined));
  if (options.preparedStatements !== false) pool.on('connect', prepareRecurringStatements);
  const db = new Kysely<Database>({ dialect: new SchemaScopedPostgresDialect({ pool }), ...queryLog(options) });
  const location = url.replace(/\/\/([^:@/]+):[^@/]*@/, '//$1:***@');
  const poolUsage = () => ({ open: pool.totalCount, max, idle: pool.idleCount, waiting: pool.waitingCount });
  return { db, dialect: postgresDialect, location, schema: options.databaseSchema, poolUsage, close: () => db.destroy() };
}

// Statements worth preparing: the short, recurring ones. A bulk insert's SQL varies with its row
// count and would only fill the server's memory.
const PREPARED_MAX_SQL_LENGTH = 8_000;
const PREPARED_MAX_PARAMETERS = 200;
const PREPARED_MAX_NAMES = 2_000;
const statementNames = new Map<string, string>();

function statementName(text: string): string | undefined {
  let name = statementNames.get(text);
  if (name === undefined && statementNames.size < PREPARED_MAX_NAMES && text.length <= PREPARED_MAX_SQL_LENGTH) {
    name = `d_${createHash('sha256').update(text).digest('base64url').slice(0, 24)}`;
    statementNames.set(text, name);
  }
  return name;
}

/**
 * Kysely sends every query unnamed, so PostgreSQL parses and plans it on every call, and planning
 * the claim's candidate query costs more than running it. Naming a statement makes pg prepare it
 * once per connection and then only bind and execute it (PREPARED_STATEMENTS turns this off
 * behind a transaction-mode pooler).
 */
function prepareRecurringStatements(client: pg.PoolClient): void {
  const query = client.query.bind(client) as (...args: unknown[]) => unknown;
  client.query = ((text: unknown, values?: unknown[], ...rest: unknown[]) => {
    if (typeof text !== 'string' || !Array.isArray(values) || values.length > PREPARED_MAX_PARAMETERS || rest.length > 0) return query(text, values, ...rest);
    const name = statementName(text);
    return name === undefined ? query(text, values) : query({ name, text, values });
  }) as typeof client.query;
}

/**
 * Kysely's PostgreSQL introspection (which its migrator uses) reads every schema's tables through
 * catalog functions, and fails with "schema does not exist" when another schema is dropped during
 * the scan, as on any database shared with other apps or test runs.
 * Dispatcher only needs its own tables: this lists those of the current schema, from pg_catalog.
 */
class SchemaScopedPostgresDialect extends PostgresDialect {
  // Kysely's own introspector signature: the database type is not known to it.
  // eslint-disable-next-line @typescript-eslint/no-explicit-any
  override createIntrospector(db: Kysely<any>): DatabaseIntrospector {
    const getTables = async (): Promise<TableMetadata[]> => {
      const { rows } = await sql<{ name: string; schema: string; kind: string }>`
        select c.relname as name, n.nspname as schema, c.relkind as kind
        from pg_catalog.pg_class c join pg_catalog.pg_namespace n on n.oid = c.relnamespace
        where n.nspname = current_schema() and c.relkind in ('r', 'p', 'v')`.execute(db);
      return rows.map((row) => ({ name: row.name, schema: row.schema, isView: row.kind === 'v', columns: [] }));
    };
    return {
      getSchemas: async () => (await sql<{ name: string }>`select nspname as name from pg_catalog.pg_namespace`.execute(db)).rows,
      getTables,
      getMetadata: async () => ({ tables: await getTables() }),
    };
  }
}

/** Answers whether the database responds, within `timeoutMs`. */
export async function pingDatabase(db: Db, timeoutMs = 2_000): Promise<boolean> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<boolean>((resolve) => {
    timer = setTimeout(() => resolve(false), timeoutMs);
  });
  const ping = sql`select 1`.execute(db).then(
    () => true,
    () => false,
  );
  try {
    return await Promise.race([ping, timeout]);
  } finally {
    clearTimeout(timer);
  }
}
