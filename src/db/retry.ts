import type { Dialect } from './dialect.js';

const ATTEMPTS = 3;

/**
 * Runs a transaction again when the database chose it as a deadlock victim (or, SQLite, found the
 * file busy): the work is whole transactions that roll back completely, so a retry is safe. A
 * third conflict in a row reaches the client as 503 DATABASE_BUSY.
 */
export function retryingLockConflicts<T>(dialect: Dialect, work: () => Promise<T>): Promise<T> {
  return retrying(ATTEMPTS, (error) => dialect.isLockConflict(error), work);
}

/**
 * Runs a read-then-write again when a concurrent writer took the same unique key between the read
 * and the write (another renter took the same worker): the next attempt reads again. Up to 5 in all.
 */
export function retryOnUniqueViolation<T>(dialect: Dialect, work: () => Promise<T>): Promise<T> {
  return retrying(5, (error) => dialect.isUniqueViolation(error), work);
}

async function retrying<T>(attempts: number, retryable: (error: unknown) => boolean, work: () => Promise<T>): Promise<T> {
  for (let attempt = 1; ; attempt += 1) {
    try {
      return await work();
    } catch (error) {
      if (attempt >= attempts || !retryable(error)) throw error;
    }
  }
}
