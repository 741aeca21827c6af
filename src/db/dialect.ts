import { sql, type ColumnDefinitionBuilder, type CreateTableBuilder, type RawBuilder } from 'kysely';

/**
 * Everything that differs between SQLite and PostgreSQL, as data and small functions.
 * This is the only file that branches on the database.
 */
export interface Dialect {
  name: 'sqlite' | 'postgres';
  /** Row locks exist (PostgreSQL): candidate rows are claimed with FOR UPDATE SKIP LOCKED. */
  hasRowLocks: boolean;
  /**
   * INSERT, UPDATE and DELETE may stand in WITH (PostgreSQL): writes to several tables can go in
   * one statement, one round trip.
   */
  hasWritableCtes: boolean;
  /**
   * Default of ALLOCATE_BATCH_WAIT_MS: how long an instance waits after an /allocate batch for the
   * nodes it answered to ask again, so they share the next transaction (see allocation-batcher.ts).
   */
  allocateBatchWaitMs: number;
  /** Kysely takes no migration lock here, so migrations run in one exclusive transaction. */
  migratesInExclusiveTransaction: boolean;
  /** Adds an auto-incrementing integer primary key `id`. */
  addIdColumn<T extends string>(table: CreateTableBuilder<T, never>): CreateTableBuilder<T, 'id'>;
  /** `priority` moved by a random -1, 0 or +1 drawn per row, kept within 1–10. */
  jitteredPriority: RawBuilder<number>;
  /** Whether an error thrown by the driver is a unique-constraint violation. */
  isUniqueViolation(error: unknown): boolean;
  /** Whether an error is a deadlock or lock conflict that a retry would get past. */
  isLockConflict(error: unknown): boolean;
  /** Whether an error means the database cannot be reached at all (or, SQLite, its disk cannot be written). */
  isConnectionError(error: unknown): boolean;
  /** The 503's detail for such an error: what is wrong, in words an operator can act on. */
  describeUnavailable(error: unknown): string;
}

const UNAVAILABLE = 'The database is unavailable; retry shortly.';

// SQLite's storage errors name the cause: a full disk is fixed by freeing space, not by retrying.
const sqliteStorageProblems: [string, string][] = [
  ['SQLITE_FULL', 'The database cannot be written: the disk holding it is full. Retry once space has been freed.'],
  ['SQLITE_READONLY', 'The database cannot be written: its file or directory is read-only. Retry once it is writable again.'],
  ['SQLITE_IOERR', 'The database cannot be read or written: its disk reported an I/O error. Retry shortly.'],
  ['SQLITE_CANTOPEN', 'The database file cannot be opened. Retry shortly.'],
];

const primaryKey = (column: ColumnDefinitionBuilder) => column.primaryKey();

export const sqliteDialect: Dialect = {
  name: 'sqlite',
  hasRowLocks: false,
  hasWritableCtes: false,
  // Transactions cost no round trips here, so waiting for more requests only adds latency;
  // `npm run bench` with ALLOCATE_BATCH_WAIT_MS set shows it.
  allocateBatchWaitMs: 0,
  migratesInExclusiveTransaction: true,
  addIdColumn: (table) => table.addColumn('id', 'integer', (column) => primaryKey(column).autoIncrement()),
  jitteredPriority: sql<number>`max(1, min(10, priority + (abs(random()) % 3) - 1))`,
  isUniqueViolation: (error) => (error as { code?: string })?.code?.startsWith('SQLITE_CONSTRAINT') === true,
  // SQLITE_BUSY and its extended codes (SQLITE_BUSY_SNAPSHOT: a read transaction's first write after another commit).
  isLockConflict: (error) => (error as { code?: string })?.code?.startsWith('SQLITE_BUSY') === true,
  isConnectionError: (error) => sqliteStorageProblems.some(([code]) => (error as { code?: string })?.code?.startsWith(code) === true),
  describeUnavailable: (error) => sqliteStorageProblems.find(([code]) => (error as { code?: string })?.code?.startsWith(code) === true)?.[1] ?? UNAVAILABLE,
};

export const postgresDialect: Dialect = {
  name: 'postgres',
  hasRowLocks: true,
  hasWritableCtes: true,
  // Each transaction costs five round trips, so a few milliseconds of waiting make batches larger
  // and both throughput and p99 better, while longer waits gain nothing; `npm run bench` with
  // ALLOCATE_BATCH_WAIT_MS set shows it.
  allocateBatchWaitMs: 5,
  migratesInExclusiveTransaction: false,
  addIdColumn: (table) => table.addColumn('id', 'bigserial', primaryKey),
  jitteredPriority: sql<number>`greatest(1, least(10, priority + floor(random() * 3)::int - 1))`,
  isUniqueViolation: (error) => (error as { code?: string })?.code === '23505',
  // 40P01 deadlock_detected, 40001 serialization_failure, 55P03 lock_not_available.
  isLockConflict: (error) => ['40P01', '40001', '55P03'].includes((error as { code?: string })?.code ?? ''),
  isConnectionError: (error) => {
    const code = (error as { code?: string })?.code ?? '';
    // Class 08: connection exceptions; 57P01–57P03: the server is shutting down or starting.
    return (
      code.startsWith('08') ||
      code.startsWith('57P') ||
      ['ECONNREFUSED', 'ECONNRESET', 'ETIMEDOUT', 'EPIPE'].includes(code) ||
      // pg's own errors carry no code: a connection cut mid-query, or a client whose connection broke.
      /Connection terminated|connection timeout|is not queryable/i.test((error as Error)?.message ?? '')
    );
  },
  describeUnavailable: () => UNAVAILABLE,
};
