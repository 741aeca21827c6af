import type { Clock } from '../clock.js';
import type { Db } from '../db/database.js';
import type { Dialect } from '../db/dialect.js';
import { allocateBatch, type AllocationOutcome, type AllocationPolicy, type AllocationRequest } from './allocate.service.js';

export interface AllocationBatcher {
  allocate(request: AllocationRequest): Promise<AllocationOutcome>;
}

interface Waiting {
  request: AllocationRequest;
  resolve(outcome: AllocationOutcome): void;
  reject(error: unknown): void;
}


/**
 * Group commit for /allocate: while one transaction runs, requests that arrive wait, and all of
 * them go into the next transaction together. Nothing is delayed on purpose: an idle instance
 * serves a lone request at once. If a shared transaction fails, each of its requests is retried on
 * its own, so one bad request cannot fail the others.
 */
export function createAllocationBatcher(deps: {
  db: Db;
  dialect: Dialect;
  clock: Clock;
  policy: AllocationPolicy;
  /** Transactions in flight at once. */
  concurrency: number;
  /** Requests per transaction. */
  maxBatch: number;
}): AllocationBatcher {
  const queue: Waiting[] = [];
  let inFlight = 0;
  let starting = 0;

  const run = (requests: AllocationRequest[]) => allocateBatch(deps.db, deps.dialect, requests, deps.policy, deps.clock.now());

  async function drain(): Promise<void> {
    inFlight += 1;
    while (queue.length > 0) {
      const batch = queue.splice(0, deps.maxBatch);
      try {
        const results = await run(batch.map((waiting) => waiting.request));
        batch.forEach((waiting, index) => waiting.resolve(results[index] as AllocationOutcome));
      } catch {
        await Promise.all(
          batch.map((waiting) =>
            run([waiting.request]).then(
              ([outcome]) => waiting.resolve(outcome as AllocationOutcome),
              (error: unknown) => waiting.reject(error),
            ),
          ),
        );
      }
    }
    inFlight -= 1;
  }

  return {
    allocate(request) {
      return new Promise((resolve, reject) => {
        queue.push({ request, resolve, reject });
        // Start on setImmediate: every request already read in this turn of the event loop joins
        // the batch. Starting at once would run the transaction to its end before the other
        // requests are even parsed (better-sqlite3 is synchronous), giving batches of one.
        if (inFlight + starting < deps.concurrency) {
          starting += 1;
          setImmediate(() => {
            starting -= 1;
            void drain();
          });
        }
      });
    },
  };
}
