import type { Db } from '../db/database.js';

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
