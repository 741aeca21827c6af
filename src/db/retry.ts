import type { Dialect } from './dialect.js';

const ATTEMPTS = 3;

/**
 * Runs a transaction again when the database chose it as a deadlock victim (or, SQLite, found the
 * file busy): the work is whole transactions that roll back completely, so a retry is safe. A
 * third conflict in a row reaches the client as 503 DATABASE_BUSY.
 */
export async function retryingLockConflicts<T>(dialect: Dialect, work: () => Promise<T>): Promise<T> {
  for (let attempt = 1; ; attempt += 1) {
    try {
      return await work();
    } catch (error) {
      if (attempt >= ATTEMPTS || !dialect.isLockConflict(error)) throw error;
    }
  }
}
