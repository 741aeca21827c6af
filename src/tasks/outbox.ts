import type { Db } from '../db/database.js';
import type { Dialect } from '../db/dialect.js';
import { claimDue, endClaim, releaseClaim, type DueWork } from '../db/due-work.js';
import { backoffDelay } from '../lib/backoff.js';
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

/** Pending tasks fall due at `run_after`; a running one whose lock lapsed (its instance stopped) is due again. */
const DUE_TASKS: DueWork<'tasks'> = {
  table: 'tasks',
  waiting: 'pending',
  claimed: 'running',
  dueAt: 'run_after',
  leaseUntil: 'locked_until',
  orderBy: 'run_after',
};

/**
 * Takes up to `limit` due tasks for this instance: pending ones whose time has come, and running
 * ones whose instance stopped (lock expired). One conditional UPDATE, so two instances never take
 * the same task.
 */
export async function claimDueTasks(db: Db, dialect: Dialect, now: number, limit: number, lockMs: number): Promise<TaskRow[]> {
  return claimDue(db, dialect, DUE_TASKS, { now, limit, leaseMs: lockMs });
}

/** Ends running tasks as done; a task no longer running (failed meanwhile) is left as it is. */
export async function markTasksDone(db: Db, ids: number[], now: number): Promise<void> {
  await endClaim(db, DUE_TASKS, { id: ids }, 'done', { finished_at: now, last_error: null });
}

/** Schedules the next attempt, or gives up at the cap (or at once for a permanent failure); true when given up. */
export async function markTaskFailed(db: Db, task: TaskRow, error: string, policy: RetryPolicy, now: number, permanent = false): Promise<boolean> {
  const giveUp = permanent || task.attempts >= Math.min(task.max_attempts, policy.maxAttempts);
  const lastError = error.slice(0, 1000);
  if (giveUp) await endClaim(db, DUE_TASKS, { id: task.id }, 'failed', { finished_at: now, last_error: lastError });
  else await releaseClaim(db, DUE_TASKS, { id: task.id }, { dueAt: now + retryDelayMs(policy, task.attempts), set: { last_error: lastError } });
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
