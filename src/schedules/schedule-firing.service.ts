import type { Db } from '../db/database.js';
import { inTransaction } from '../db/transaction.js';
import { AppError } from '../errors.js';
import { appendEvents } from '../events/events.repository.js';
import { rentWorkers, type LeasingDeps, type Renter } from '../rentals/rentals.service.js';
import { findActiveSchedule, findDueSchedules } from './schedules.repository.js';
import { actionOf, endEffect, LATE_AFTER_MS, refreshNodeWindow, storedWindows } from './schedules.service.js';
import type { ScheduleRow, ScheduleStatus } from './schedules.table.js';
import { specOf, windowAt, type Window } from './windows.js';

// The schedule loop's pass: each schedule's windows open and close, with what they do.

export interface FirePassResult {
  started: number;
  ended: number;
  missed: number;
  completed: number;
}

/**
 * The schedule loop. Every transition is one conditional UPDATE on (id, status, window_start), so
 * it fires exactly once even when several instances (or a restarted one catching up) run the
 * pass at the same moment; only the winner runs the action and records the event.
 */
export async function fireSchedules(db: Db, deps: LeasingDeps, now: number): Promise<FirePassResult> {
  const due = await findDueSchedules(db, now, 500);
  const result: FirePassResult = { started: 0, ended: 0, missed: 0, completed: 0 };
  for (const first of due) {
    // A pass catches up: an ended window may be followed by one that has already begun.
    let row: ScheduleRow | undefined = first;
    for (let step = 0; row && isDue(row, now) && step < 4; step += 1) {
      if (!(await fireOne(db, deps, row, now, result))) break;
      row = await findActiveSchedule(db, row.id);
    }
  }
  return result;
}

function isDue(row: ScheduleRow, now: number): boolean {
  if (row.status === 'running') return row.window_end !== null && row.window_end <= now;
  return row.status === 'scheduled' && (row.window_start === null || row.window_start <= now);
}

/** One transition of one schedule; false when another pass won it. */
async function fireOne(db: Db, deps: LeasingDeps, row: ScheduleRow, now: number, result: FirePassResult): Promise<boolean> {
  if (row.status === 'running') {
    const ended = await endWindow(db, deps, row, now);
    if (ended) result.ended += 1;
    return ended;
  }
  if (row.window_start === null || row.window_end === null) {
    const completed = await moveTo(db, row, { status: 'completed', window: undefined }, now, 'schedule.completed', {});
    if (completed) result.completed += 1;
    return completed;
  }
  if (row.window_end <= now) {
    // The whole window passed while no instance ran (a restart): recorded, its action skipped.
    const next = windowAt(specOf(row), now);
    const late = { window_start: row.window_start, window_end: row.window_end, late_ms: now - row.window_start, late: true };
    const missed = await moveTo(db, row, { status: next ? 'scheduled' : 'completed', window: next }, now, 'schedule.window_missed', late);
    if (missed) result.missed += 1;
    return missed;
  }
  const lateMs = now - row.window_start;
  const window = { start: row.window_start, end: row.window_end };
  const started = await moveTo(db, row, { status: 'running', window }, now, 'schedule.started', {
    window_start: window.start,
    window_end: window.end,
    late_ms: lateMs,
    late: lateMs > LATE_AFTER_MS,
  });
  if (started) {
    result.started += 1;
    await startEffect(db, deps, row, now);
  }
  return started;
}

async function endWindow(db: Db, deps: LeasingDeps, row: ScheduleRow, now: number): Promise<boolean> {
  const next = windowAt(specOf(row), Math.max(now, row.window_end ?? now));
  const lateMs = now - (row.window_end ?? now);
  const ended = await moveTo(db, row, { status: next ? 'scheduled' : 'completed', window: next }, now, next ? 'schedule.ended' : 'schedule.completed', {
    window_start: row.window_start,
    window_end: row.window_end,
    late_ms: lateMs,
    late: lateMs > LATE_AFTER_MS,
  });
  if (ended) await endEffect(db, deps, row, 'schedule window ended', now);
  return ended;
}

/** One transition, won by exactly one caller; its event is written with it. */
async function moveTo(
  db: Db,
  row: ScheduleRow,
  to: { status: ScheduleStatus; window: Window | undefined },
  now: number,
  kind: string,
  data: Record<string, unknown>,
): Promise<boolean> {
  return inTransaction(db, async (trx) => {
    const moved = await trx
      .updateTable('schedules')
      .set({
        status: to.status,
        window_start: to.window?.start ?? null,
        window_end: to.window?.end ?? null,
        ...storedWindows(specOf(row), actionOf(row), to.status, to.window?.start ?? null, now),
        last_fired_at: now,
        updated_at: now,
      })
      .where('id', '=', row.id)
      .where('status', '=', row.status)
      .where((eb) => (row.window_start === null ? eb('window_start', 'is', null) : eb('window_start', '=', row.window_start)))
      .returning('id')
      .executeTakeFirst();
    if (!moved) return false;
    await appendEvents(trx, now, [{ actor: 'system', kind, subjectType: 'schedule', subjectId: row.id, data }]);
    if (row.node_id !== null) await refreshNodeWindow(trx, row.node_id, now);
    return true;
  });
}

async function ownerOf(db: Db, row: ScheduleRow): Promise<Renter> {
  const user = await db.selectFrom('users').select(['id', 'username', 'role']).where('id', '=', row.owner_id).executeTakeFirstOrThrow();
  return { userId: user.id, username: user.username, admin: user.role === 'admin', actor: `schedule:${row.id}` };
}

/**
 * A reserve window opens: its rentals are made for the owner. They start at the clock's time, not
 * the pass's `now`: schedules started earlier in the same pass may have spent seconds on SSH.
 */
async function startEffect(db: Db, deps: LeasingDeps, row: ScheduleRow, now: number): Promise<void> {
  const action = actionOf(row);
  if (action?.kind !== 'reserve' || row.window_end === null) return;
  try {
    const owner = await ownerOf(db, row);
    const rent = { durationMs: row.window_end - now, count: action.count, passwordHash: row.password_hash ?? undefined, scheduleId: row.id };
    await rentWorkers(db, deps, owner, rent, deps.clock.now());
  } catch (error) {
    if (!(error instanceof AppError)) throw error;
    await appendEvents(db, deps.clock.now(), [
      { actor: 'system', kind: 'schedule.reserve_failed', subjectType: 'schedule', subjectId: row.id, data: { code: error.code, detail: error.detail } },
    ]);
  }
}
