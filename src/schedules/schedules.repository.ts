import type { Db } from '../db/database.js';
import type { ScheduleRow } from './schedules.table.js';

export function findSchedule(db: Db, id: number): Promise<ScheduleRow | undefined> {
  return db.selectFrom('schedules').selectAll().where('id', '=', id).executeTakeFirst();
}

/** Up to 1000 schedules in id order: one owner's, or everyone's. */
export function listSchedules(db: Db, filter: { ownerId?: number }): Promise<ScheduleRow[]> {
  return db
    .selectFrom('schedules')
    .selectAll()
    .$if(filter.ownerId !== undefined, (q) => q.where('owner_id', '=', filter.ownerId as number))
    .orderBy('id')
    .limit(1000)
    .execute();
}

/** Active schedules with a transition due: a window to open (or none left to plan), or a running one to close. */
export function findDueSchedules(db: Db, now: number, limit: number): Promise<ScheduleRow[]> {
  return db
    .selectFrom('schedules')
    .selectAll()
    .where('active', '=', 1)
    .where((eb) =>
      eb.or([
        eb.and([eb('status', '=', 'scheduled'), eb.or([eb('window_start', '<=', now), eb('window_start', 'is', null)])]),
        eb.and([eb('status', '=', 'running'), eb('window_end', '<=', now)]),
      ]),
    )
    .orderBy('window_start')
    .limit(limit)
    .execute();
}

export function findActiveSchedule(db: Db, id: number): Promise<ScheduleRow | undefined> {
  return db.selectFrom('schedules').selectAll().where('id', '=', id).where('active', '=', 1).executeTakeFirst();
}
