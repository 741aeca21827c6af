import type { Clock } from '../clock.js';
import type { Config } from '../config.js';
import type { Db } from '../db/database.js';
import type { Dialect } from '../db/dialect.js';
import { allocateBatch, PartialBatchError, type AllocationOutcome, type AllocationPolicy, type AllocationRequest } from './grants.service.js';

export interface AllocationBatcher {
  allocate(request: AllocationRequest): Promise<AllocationOutcome>;
}

interface Waiting {
  request: AllocationRequest;
  resolve(outcome: AllocationOutcome): void;
  reject(error: unknown): void;
}

// One transaction at a time, shared by up to 64 requests, on both databases. SQLite has one
// connection anyway, and a batch commits once for all its requests. On PostgreSQL a batch costs
// the same few statements whatever its size, so one batch in flight makes the batches larger,
// and a second in flight only adds contention. The figures behind this are in bench/RESULTS.md
// (the dispatcher suite against its baselines).
const MAX_BATCH = 64;

/** How long a batcher waits after a batch for the nodes it answered: ALLOCATE_BATCH_WAIT_MS, else the database's default. */
export function batchWaitMs(config: Pick<Config, 'allocateBatchWaitMs'>, dialect: Dialect): number {
  return config.allocateBatchWaitMs ?? dialect.allocateBatchWaitMs;
}

/**
 * Group commit for /allocate: while one transaction runs, requests that arrive wait, and all of
 * them go into the next transaction together. An idle instance serves a lone request at once.
 *
 * After a batch, the instance may wait up to `waitMs` before starting the next one: until as many
 * requests are waiting as that batch served plus those already queued (its nodes asking again), or
 * a full batch. Busy nodes that ask again at once then share one transaction rather than
 * alternating between two half-size ones. A request to an idle instance (no batch running or just
 * ended) is never held; one arriving during the wait is served when the wait ends.
 *
 * If a shared transaction fails, each of its requests is retried on its own, so one bad request
 * cannot fail the others; requests whose grants were committed before the failure are answered
 * with them, never run again.
 */
export function createAllocationBatcher(deps: {
  db: Db;
  dialect: Dialect;
  clock: Clock;
  policy: AllocationPolicy;
  /** Requests per transaction. */
  maxBatch?: number;
  /** After a batch, how long to wait for more requests before the next one (0: never). */
  waitMs?: number;
  /** Told when a batch's transaction failed, before its requests run again alone (the route logs it). */
  onBatchFailed?: (requests: number, error: unknown) => void;
}): AllocationBatcher {
  const { maxBatch = MAX_BATCH, waitMs = 0 } = deps;
  const queue: Waiting[] = [];
  // The queue is being served, or about to be: the one transaction in flight, and the one wait below.
  let serving = false;
  let gathering: { target: number; release(): void } | undefined;

  /** Resolves when `target` requests are queued, or after waitMs. */
  function gather(target: number): Promise<void> {
    if (waitMs <= 0 || queue.length >= target) return Promise.resolve();
    return new Promise((resolve) => {
      const current = {
        target,
        release: () => {
          clearTimeout(timer);
          if (gathering === current) gathering = undefined;
          resolve();
        },
      };
      const timer = setTimeout(current.release, waitMs);
      // A wait pending at shutdown must not keep the process alive.
      timer.unref();
      gathering = current;
    });
  }

  const run = (requests: AllocationRequest[]) => allocateBatch(deps.db, deps.dialect, requests, deps.policy, deps.clock.now());

  async function serveQueue(): Promise<void> {
    while (queue.length > 0) {
      const batch = queue.splice(0, maxBatch);
      try {
        const results = await run(batch.map((waiting) => waiting.request));
        batch.forEach((waiting, index) => waiting.resolve(results[index] as AllocationOutcome));
        await gather(Math.min(maxBatch, queue.length + batch.length));
      } catch (error) {
        deps.onBatchFailed?.(batch.length, error);
        // Requests whose grants were committed before the failure get them; the others run again alone.
        const served = error instanceof PartialBatchError ? error.outcomes : [];
        await Promise.all(
          batch.map((waiting, index) => {
            const outcome = served[index];
            if (outcome) return waiting.resolve(outcome);
            return run([waiting.request]).then(
              ([alone]) => waiting.resolve(alone as AllocationOutcome),
              (cause: unknown) => waiting.reject(cause),
            );
          }),
        );
      }
    }
    // In the same turn as the last check of the queue, so no request can be left behind in it.
    serving = false;
  }

  return {
    allocate(request) {
      return new Promise((resolve, reject) => {
        queue.push({ request, resolve, reject });
        // Released on setImmediate, like a start: the other requests read in this turn join too.
        if (gathering && queue.length >= gathering.target) setImmediate(gathering.release);
        // Start on setImmediate: every request already read in this turn of the event loop joins
        // the batch. Starting at once would run the transaction to its end before the other
        // requests are even parsed (better-sqlite3 is synchronous), giving batches of one.
        if (!serving) {
          serving = true;
          setImmediate(() => void serveQueue());
        }
      });
    },
  };
}
