import type { Logger } from 'pino';
import type { Clock } from '../clock.js';
import type { Db } from '../db/database.js';

export interface LoopDefinition {
  name: string;
  intervalMs: number;
  /** One pass. A plain service call, testable on its own. */
  tick(now: number): Promise<unknown>;
}

export interface Loop {
  name: string;
  start(): void;
  /** Runs one pass now if no instance has run it within the interval; true when this call ran it. */
  runOnce(): Promise<boolean>;
  /** Stops scheduling and waits for a running pass to finish. */
  stop(): Promise<void>;
}

/** One row per loop: when its next pass is due on any instance, and how its last one went. */
export interface LoopsTable {
  name: string;
  next_run_at: number;
  last_started_at: number | null;
  last_finished_at: number | null;
  last_error: string | null;
}

/** Told about every pass this instance ran (the metrics), so this file needs no metrics library. */
export interface LoopObserver {
  passFinished(loop: string, durationSeconds: number, failed: boolean): void;
}

/**
 * Claims the next pass of a loop for this instance: one conditional UPDATE, so among several
 * instances sharing a database exactly one wins each interval (pg-boss's maintenance pattern).
 */
export async function claimLoopPass(db: Db, name: string, now: number, intervalMs: number): Promise<boolean> {
  await db
    .insertInto('loops')
    .values({ name, next_run_at: now, last_started_at: null, last_finished_at: null, last_error: null })
    .onConflict((conflict) => conflict.column('name').doNothing())
    .execute();
  const claimed = await db
    .updateTable('loops')
    .set({ next_run_at: now + intervalMs, last_started_at: now })
    .where('name', '=', name)
    .where('next_run_at', '<=', now)
    .returning('name')
    .executeTakeFirst();
  return claimed !== undefined;
}

export async function readNextRun(db: Db, name: string): Promise<number | null> {
  const row = await db.selectFrom('loops').select('next_run_at').where('name', '=', name).executeTakeFirst();
  return row?.next_run_at ?? null;
}

/** The loops whose last pass failed, on any instance. */
export async function failingLoops(db: Db): Promise<string[]> {
  return (await db.selectFrom('loops').select('name').where('last_error', 'is not', null).execute()).map((row) => row.name);
}

/**
 * A background job: a self-rescheduling timer with jitter, never two passes at once in this
 * process, one pass per interval across instances, errors logged per pass with the loop's name.
 */
export function createLoop(definition: LoopDefinition, deps: { db: Db; clock: Clock; logger: Logger; observer?: LoopObserver }): Loop {
  const { db, clock, logger, observer } = deps;
  let timer: NodeJS.Timeout | undefined;
  let running: Promise<boolean> | undefined;
  let stopped = true;
  // Check at a tenth of the interval (at most every 10 s) so a pass claimed by a dead instance is
  // picked up soon after its slot; jitter keeps instances from polling in lockstep.
  const checkEvery = Math.min(definition.intervalMs / 10, 10_000);

  async function pass(): Promise<boolean> {
    const now = clock.now();
    if (!(await claimLoopPass(db, definition.name, now, definition.intervalMs))) return false;
    let error: string | null = null;
    // Real elapsed time, not the injected clock: tests move that one by hours.
    const startedAt = performance.now();
    try {
      const result = await definition.tick(now);
      logger.debug({ loop: definition.name, result }, 'loop pass done');
    } catch (caught) {
      error = (caught as Error).message;
      logger.error({ loop: definition.name, err: caught }, 'loop pass failed');
    }
    observer?.passFinished(definition.name, (performance.now() - startedAt) / 1000, error !== null);
    await db.updateTable('loops').set({ last_finished_at: clock.now(), last_error: error }).where('name', '=', definition.name).execute();
    return true;
  }

  function runOnce(): Promise<boolean> {
    running ??= pass().finally(() => {
      running = undefined;
    });
    return running;
  }

  function schedule(delayMs: number): void {
    if (stopped) return;
    timer = setTimeout(() => {
      runOnce()
        .catch((error: unknown) => logger.error({ loop: definition.name, err: error }, 'loop claim failed'))
        .finally(() => schedule(checkEvery * (0.75 + Math.random() / 2)));
    }, delayMs);
    timer.unref();
  }

  return {
    name: definition.name,
    runOnce,
    start() {
      if (!stopped) return;
      stopped = false;
      schedule(Math.random() * 1000);
    },
    async stop() {
      stopped = true;
      clearTimeout(timer);
      await running?.catch(() => undefined);
    },
  };
}
