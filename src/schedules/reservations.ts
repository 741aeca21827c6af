import type { Db } from '../db/database.js';
import type { Holding } from '../rentals/quotas.js';
import type { Window } from './windows.js';

/**
 * Workers promised to reserve schedules whose next window overlaps [from, until) and has not
 * started yet (a running window already holds its rentals). A rental that would eat into them is
 * refused, so a reservation accepted at creation is kept.
 */
export async function reservedWorkers(db: Db, from: number, until: number): Promise<number> {
  const row = await db
    .selectFrom('schedules')
    .select((eb) => eb.fn.coalesce(eb.fn.sum<number>('reserve_count'), eb.lit(0)).as('reserved'))
    .where('status', '=', 'scheduled')
    .where('active', '=', 1)
    .where('reserve_count', 'is not', null)
    .where('window_start', '<', until)
    .where('window_end', '>', from)
    .executeTakeFirstOrThrow();
  return Number(row.reserved);
}

/**
 * The windows of a user's active reserve schedules that have not started yet, as each schedule
 * stores them (`next_windows`: no cron search), each holding the schedule's count from now on.
 * A running schedule's current window is left out: its rentals hold its workers.
 */
export async function pendingReserveWindows(db: Db, ownerId: number, now: number): Promise<Holding[]> {
  const rows = await db
    .selectFrom('schedules')
    .select(['status', 'window_start', 'reserve_count', 'next_windows'])
    .where('owner_id', '=', ownerId)
    .where('active', '=', 1)
    .where('status', 'in', ['scheduled', 'running'])
    .where('reserve_count', 'is not', null)
    .execute();
  return rows.flatMap((row) =>
    (JSON.parse(row.next_windows) as Window[])
      .filter((window) => window.end > now && !(row.status === 'running' && window.start === row.window_start))
      .map((window) => ({ from: Math.max(window.start, now), until: window.end, workers: row.reserve_count as number })),
  );
}
