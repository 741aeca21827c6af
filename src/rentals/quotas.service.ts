import type { Config } from '../config.js';
import type { Db } from '../db/database.js';
import type { Dialect } from '../db/dialect.js';
import { pendingReserveWindows } from '../schedules/reservations.js';
import { findQuotaViolation, quotaError, WEEK_MS, type Holding, type QuotaLimits } from './quotas.js';

/** Whose quota a request uses: the user who would hold the workers; admins are exempt. */
export interface QuotaOwner {
  userId: number;
  admin: boolean;
}

export interface QuotaCheck {
  owner: QuotaOwner;
  /** What the request would add to the user's holdings. */
  added: Holding[];
  /** What was asked, to start the refusal: "Renting 2 workers for 3 hours". */
  subject: string;
  /** The user's reserve windows still to come, when the caller has searched them; else as each schedule stores them. */
  reserveWindows?: Holding[];
}

export function limitsOf(config: Config): QuotaLimits {
  return { maxWorkers: config.userMaxWorkers, maxWorkerHoursPerWeek: config.userMaxWorkerHoursPerWeek };
}

/**
 * Serialises a user's quota checks: call it first in the transaction that checks and then writes.
 * PostgreSQL locks the user's row; SQLite already runs one write transaction at a time.
 */
export async function lockQuotaOwner(db: Db, dialect: Dialect, owner: QuotaOwner): Promise<void> {
  if (owner.admin || !dialect.hasRowLocks) return;
  await db.selectFrom('users').select('id').where('id', '=', owner.userId).forUpdate().execute();
}

/** Time each of the user's rentals held (or holds) its worker, for those held at some moment of [from, until). */
async function rentalHoldings(db: Db, userId: number, from: number, until: number): Promise<Holding[]> {
  const rows = await db
    .selectFrom('rentals')
    .select(['leased_from', 'leased_until', 'ended_at'])
    .where('user_id', '=', userId)
    .where('leased_from', '<', until)
    .where('leased_until', '>', from)
    .where((eb) => eb.or([eb('ended_at', 'is', null), eb('ended_at', '>', from)]))
    .execute();
  return rows.map((row) => ({ from: row.leased_from, until: row.ended_at === null ? row.leased_until : Math.min(row.ended_at, row.leased_until), workers: 1 }));
}

/**
 * Refuses (409 QUOTA_EXCEEDED) what would make the user hold more than USER_MAX_WORKERS at one
 * moment, or more than USER_MAX_WORKER_HOURS_PER_WEEK in a 7-day span, counting their rentals and
 * their reserve schedules' windows still to come. Admins are exempt. Call it inside the
 * transaction that then writes: it locks the user first (lockQuotaOwner).
 */
export async function checkUserQuotas(db: Db, dialect: Dialect, config: Config, check: QuotaCheck, now: number): Promise<void> {
  if (check.owner.admin || check.added.length === 0) return;
  await lockQuotaOwner(db, dialect, check.owner);
  const from = Math.min(...check.added.map((holding) => holding.from)) - WEEK_MS;
  const until = Math.max(...check.added.map((holding) => holding.until)) + WEEK_MS;
  const existing = [
    ...(await rentalHoldings(db, check.owner.userId, from, until)),
    ...(check.reserveWindows ?? (await pendingReserveWindows(db, check.owner.userId, now))),
  ];
  const violation = findQuotaViolation(limitsOf(config), existing, check.added);
  if (violation) throw quotaError(violation, limitsOf(config), check.subject, now);
}
