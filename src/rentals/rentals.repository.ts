import type { Db } from '../db/database.js';
import { HANDED_OVER_RENTAL_STATES, WORKER_HOLDING_RENTAL_STATES, type RentalRow } from './rentals.table.js';

/** A batch of rentals requested together: all become active, or all fail. */
export interface NewBatch {
  batch: string;
  userId: number;
  passwordHash: string;
  leasedUntil: number;
  scheduleId: number | null;
}

/** One provisioning rental of the batch per worker, each with its own account. */
export function insertBatch(db: Db, batch: NewBatch, accounts: { nodeId: number; account: string }[], now: number): Promise<RentalRow[]> {
  return db
    .insertInto('rentals')
    .values(
      accounts.map(({ nodeId, account }) => ({
        user_id: batch.userId,
        node_id: nodeId,
        state: 'provisioning' as const,
        batch: batch.batch,
        account,
        password_hash: batch.passwordHash,
        leased_from: now,
        leased_until: batch.leasedUntil,
        created_at: now,
        ended_at: null,
        end_reason: null,
        schedule_id: batch.scheduleId,
      })),
    )
    .returningAll()
    .execute();
}

/** The batch's rentals still provisioning become active. */
export function activateBatch(db: Db, batch: string): Promise<RentalRow[]> {
  return db.updateTable('rentals').set({ state: 'active' }).where('batch', '=', batch).where('state', '=', 'provisioning').returningAll().execute();
}

/** The batch's rentals still provisioning fail; a rental that became active meanwhile is left alone. */
export function failProvisioningBatch(db: Db, batch: string, reason: string, now: number): Promise<RentalRow[]> {
  return db
    .updateTable('rentals')
    .set({ state: 'failed', ended_at: now, end_reason: reason.slice(0, 1000) })
    .where('batch', '=', batch)
    .where('state', '=', 'provisioning')
    .returningAll()
    .execute();
}

/** Batches with rentals still provisioning. */
export async function findProvisioningBatches(db: Db): Promise<string[]> {
  const rows = await db.selectFrom('rentals').select('batch').distinct().where('state', '=', 'provisioning').execute();
  return rows.map((row) => row.batch);
}

/** Ends the given (or every) active rental; one already ended is not ended again. */
export function endActiveRentals(
  db: Db,
  where: { ids?: number[]; all?: true },
  end: { state: 'ended' | 'failed'; reason: string },
  now: number,
): Promise<RentalRow[]> {
  let query = db.updateTable('rentals').set({ state: end.state, ended_at: now, end_reason: end.reason }).where('state', 'in', HANDED_OVER_RENTAL_STATES);
  if (!where.all) query = query.where('id', 'in', where.ids && where.ids.length > 0 ? where.ids : [-1]);
  return query.returningAll().execute();
}

/** Moves a live rental's end later, unless it ended or its end moved since it was read. */
export function extendLease(db: Db, rental: Pick<RentalRow, 'id' | 'leased_until'>, additionalMs: number): Promise<RentalRow | undefined> {
  return db
    .updateTable('rentals')
    .set({ leased_until: rental.leased_until + additionalMs })
    .where('id', '=', rental.id)
    .where('leased_until', '=', rental.leased_until)
    .where('state', 'in', WORKER_HOLDING_RENTAL_STATES)
    .returningAll()
    .executeTakeFirst();
}

export function findRental(db: Db, id: number): Promise<RentalRow | undefined> {
  return db.selectFrom('rentals').selectAll().where('id', '=', id).executeTakeFirst();
}

/** Up to `limit` active rentals whose end time has come. */
export async function findDueRentalIds(db: Db, now: number, limit: number): Promise<number[]> {
  const rows = await db
    .selectFrom('rentals')
    .select('id')
    .where('state', 'in', HANDED_OVER_RENTAL_STATES)
    .where('leased_until', '<=', now)
    .limit(limit)
    .execute();
  return rows.map((row) => row.id);
}

/** Newest first: a user's rentals, or everyone's; `live` keeps those holding a worker now. */
export function listRentals(db: Db, filter: { userId?: number; live: boolean }): Promise<RentalRow[]> {
  return db
    .selectFrom('rentals')
    .selectAll()
    .$if(filter.userId !== undefined, (q) => q.where('user_id', '=', filter.userId as number))
    .$if(filter.live, (q) => q.where('state', 'in', WORKER_HOLDING_RENTAL_STATES))
    .orderBy('id', 'desc')
    .limit(1000)
    .execute();
}

/** The latest 100 rentals a reserve schedule made, newest first. */
export function listScheduleRentals(db: Db, scheduleId: number) {
  return db
    .selectFrom('rentals')
    .select(['id', 'node_id', 'account', 'state', 'leased_until'])
    .where('schedule_id', '=', scheduleId)
    .orderBy('id', 'desc')
    .limit(100)
    .execute();
}

/** The rentals of a reserve schedule that hold a worker now. */
export async function findLiveScheduleRentalIds(db: Db, scheduleId: number): Promise<number[]> {
  const rows = await db.selectFrom('rentals').select('id').where('schedule_id', '=', scheduleId).where('state', 'in', WORKER_HOLDING_RENTAL_STATES).execute();
  return rows.map((row) => row.id);
}
