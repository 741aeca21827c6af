import { sql } from 'kysely';
import type { Db } from '../db/database.js';
import { backoffDelay } from '../lib/backoff.js';
import type { Dialect } from '../db/dialect.js';
import type { TaskKind, TaskRow } from './tasks.table.js';

/**
 * The outbox: side effects (SSH provisioning, cleanup) are queued as rows in the same transaction
 * as the state change that needs them, and run afterwards, outside any transaction, with retries,
 * exponential backoff and a cap on attempts.
 */
export interface NewTask {
  kind: TaskKind;
  rentalId: number | null;
  nodeId: number | null;
  payload: unknown;
  maxAttempts: number;
}

export interface RetryPolicy {
  maxAttempts: number;
  baseDelayMs: number;
}

const MAX_DELAY_MS = 3_600_000;

export function retryDelayMs(policy: RetryPolicy, attempts: number): number {
  return backoffDelay(attempts - 1, policy.baseDelayMs, MAX_DELAY_MS);
}

/** Queues tasks, due at once. `running` tasks are for a caller that runs them itself right away. */
export async function queueTasks(db: Db, tasks: NewTask[], now: number, options: { runningUntil?: number } = {}): Promise<TaskRow[]> {
  if (tasks.length === 0) return [];
  const running = options.runningUntil !== undefined;
  return db
    .insertInto('tasks')
    .values(
      tasks.map((task) => ({
        kind: task.kind,
        state: running ? ('running' as const) : ('pending' as const),
        rental_id: task.rentalId,
        node_id: task.nodeId,
        payload: JSON.stringify(task.payload),
        attempts: running ? 1 : 0,
        max_attempts: task.maxAttempts,
        run_after: now,
        locked_until: options.runningUntil ?? null,
        last_error: null,
        created_at: now,
        finished_at: null,
      })),
    )
    .returningAll()
    .execute();
}

/**
 * Takes up to `limit` due tasks for this instance: pending ones whose time has come, and running
 * ones whose instance stopped (lock expired). One conditional UPDATE, so two instances never take
 * the same task.
 */
export async function claimDueTasks(db: Db, dialect: Dialect, now: number, limit: number, lockMs: number): Promise<TaskRow[]> {
  let due = db
    .selectFrom('tasks')
    .select('id')
    .where((eb) =>
      eb.or([
        eb.and([eb('state', '=', 'pending'), eb('run_after', '<=', now)]),
        eb.and([eb('state', '=', 'running'), eb('locked_until', '<', now)]),
      ]),
    )
    .orderBy('run_after')
    .limit(limit);
  if (dialect.hasRowLocks) due = due.forUpdate().skipLocked();
  return db
    .updateTable('tasks')
    .set({ state: 'running', attempts: sql<number>`attempts + 1`, locked_until: now + lockMs })
    .where('id', 'in', due)
    .returningAll()
    .execute();
}

export async function markTasksDone(db: Db, ids: number[], now: number): Promise<void> {
  await db.updateTable('tasks').set({ state: 'done', locked_until: null, finished_at: now, last_error: null }).where('id', 'in', ids).execute();
}

/** Schedules the next attempt, or gives up at the cap (or at once for a permanent failure); true when given up. */
export async function markTaskFailed(db: Db, task: TaskRow, error: string, policy: RetryPolicy, now: number, permanent = false): Promise<boolean> {
  const giveUp = permanent || task.attempts >= Math.min(task.max_attempts, policy.maxAttempts);
  await db
    .updateTable('tasks')
    .set(
      giveUp
        ? { state: 'failed', locked_until: null, finished_at: now, last_error: error.slice(0, 1000) }
        : { state: 'pending', locked_until: null, run_after: now + retryDelayMs(policy, task.attempts), last_error: error.slice(0, 1000) },
    )
    .where('id', '=', task.id)
    .execute();
  return giveUp;
}

/** The provisioning of these rentals will not finish: their provision tasks still to run or running fail. */
export async function failProvisionTasks(db: Db, rentalIds: number[], error: string, now: number): Promise<void> {
  await db
    .updateTable('tasks')
    .set({ state: 'failed', locked_until: null, finished_at: now, last_error: error.slice(0, 1000) })
    .where('kind', '=', 'provision')
    .where('rental_id', 'in', rentalIds)
    .where('state', 'in', ['pending', 'running'])
    .execute();
}

/** Puts a node's given-up tasks back in the queue with fresh attempts (an admin cleared the node). */
export async function requeueFailedTasks(db: Db, nodeId: number, kind: TaskKind, now: number): Promise<number> {
  const rows = await db
    .updateTable('tasks')
    .set({ state: 'pending', attempts: 0, run_after: now, finished_at: null })
    .where('node_id', '=', nodeId)
    .where('kind', '=', kind)
    .where('state', '=', 'failed')
    .returning('id')
    .execute();
  return rows.length;
}
