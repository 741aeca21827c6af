import { postgresDialect, sqliteDialect } from '../db/dialect.js';
import { backoffDelay } from '../lib/backoff.js';
import { formatWait } from './catalog-http.js';

/** An import's writes run on either database: a conflict is whichever one's lock conflict this is. */
const isLockConflict = (error: unknown) => sqliteDialect.isLockConflict(error) || postgresDialect.isLockConflict(error);

/**
 * Runs a whole transaction again after a lock conflict: the SQLite file still locked by another
 * process once its busy timeout ran out (a server under load beside a CLI import), or a PostgreSQL
 * deadlock. It rolled back completely, so running it again is safe. Waits the catalog backoff
 * (1 s, 2 s, … at most 60 s) between attempts and reports each; the last conflict is thrown.
 */
export async function retryingBusyWrites<T>(
  options: { lockRetries: number; sleep: (ms: number) => Promise<void>; report: (line: string) => void },
  what: string,
  work: () => Promise<T>,
): Promise<T> {
  for (let attempt = 0; ; attempt += 1) {
    try {
      return await work();
    } catch (error) {
      if (attempt >= options.lockRetries || !isLockConflict(error)) throw error;
      const delayMs = backoffDelay(attempt, 1000, 60_000);
      options.report(
        `database busy writing ${what} (${(error as Error).message}), waiting ${formatWait(delayMs)}, then retry ${attempt + 1} of ${options.lockRetries}`,
      );
      await options.sleep(delayMs);
    }
  }
}
