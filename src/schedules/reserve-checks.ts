import type { Config } from '../config.js';
import type { Db } from '../db/database.js';
import type { Dialect } from '../db/dialect.js';
import { AppError } from '../errors.js';
import { WEEK_MS, type Holding } from '../rentals/quotas.js';
import { checkUserQuotas, lockQuotaOwner, type QuotaOwner } from '../rentals/quotas.service.js';
import { WORKER_HOLDING_RENTAL_STATES } from '../rentals/rentals.table.js';
import { isRentableWorker } from '../rentals/workers.repository.js';
import type { ScheduleRow, ScheduleStatus } from './schedules.table.js';
import { nextWindowsOf, specOf, upcomingWindows, type Window, type WindowSpec } from './windows.js';

/** How many of a reserve schedule's next windows are checked, for capacity and for quotas. */
export const CHECKED_WINDOWS = 50;

const DAY = 86_400_000;

/** Statuses in which a schedule counts against MAX_SCHEDULES_PER_USER. */
export const PLANNED_STATUSES = ['scheduled', 'running'] as const;

/** RESERVE_MAX_SPAN_DAYS: end_time − start_time of a user's reserve schedule. */
export function checkReserveSpan(config: Config, owner: QuotaOwner, startTime: number, endTime: number): void {
  if (owner.admin || endTime - startTime <= config.reserveMaxSpanMs) return;
  const limit = config.reserveMaxSpanMs / DAY;
  const days = Math.round(((endTime - startTime) / DAY) * 10) / 10;
  throw new AppError(
    'QUOTA_EXCEEDED',
    `A reserve schedule may span at most ${limit} days from start_time to end_time (RESERVE_MAX_SPAN_DAYS ${limit}); this one spans ${days} days. Move end_time earlier.`,
    { quota: 'RESERVE_MAX_SPAN_DAYS', limit, days },
  );
}

/**
 * MAX_SCHEDULES_PER_USER: schedules scheduled or running, `excludeId` aside (the one being planned
 * again). Inside the transaction that then writes: the owner is locked first.
 */
export async function checkScheduleCount(db: Db, dialect: Dialect, config: Config, owner: QuotaOwner, excludeId?: number): Promise<void> {
  if (owner.admin) return;
  await lockQuotaOwner(db, dialect, owner);
  const { planned } = await db
    .selectFrom('schedules')
    .select((eb) => eb.fn.countAll<number>().as('planned'))
    .where('owner_id', '=', owner.userId)
    .where('status', 'in', PLANNED_STATUSES)
    .$if(excludeId !== undefined, (q) => q.where('id', '<>', excludeId as number))
    .executeTakeFirstOrThrow();
  if (Number(planned) < config.maxSchedulesPerUser) return;
  throw new AppError(
    'QUOTA_EXCEEDED',
    `You have ${Number(planned)} schedules scheduled or running (MAX_SCHEDULES_PER_USER ${config.maxSchedulesPerUser}); delete or cancel one first.`,
    { quota: 'MAX_SCHEDULES_PER_USER', limit: config.maxSchedulesPerUser, schedules: Number(planned) },
  );
}

/**
 * What a reserve schedule holds, as its quotas are checked: its next CHECKED_WINDOWS windows from
 * now (a started one only from now; the running one, held by its rentals, left out). When those
 * end before 7 days from the first, the rest of those 7 days counts as held throughout: windows
 * are not searched without end, and back-to-back short windows cannot slip past the weekly quota.
 */
export function reserveHoldings(spec: WindowSpec, windows: Window[], count: number, now: number, runningStart: number | null): Holding[] {
  const holdings = windows
    .filter((window) => window.start !== runningStart)
    .map((window) => ({ from: Math.max(window.start, now), until: window.end, workers: count }));
  const first = windows[0];
  const last = windows.at(-1);
  if (first && last && windows.length === CHECKED_WINDOWS) {
    const weekEnd = Math.min(spec.endTime, first.start + WEEK_MS);
    if (last.end < weekEnd) holdings.push({ from: last.end, until: weekEnd, workers: count });
  }
  return holdings;
}

export interface ReservationCheck {
  owner: QuotaOwner;
  spec: WindowSpec;
  count: number;
  /** The schedule being changed: its own windows and reservation are not counted again. */
  scheduleId?: number;
  /** Its running window's start, when it stays running. */
  runningStart: number | null;
  /** Also check that the workers can cover it (a planned, not running, reservation). */
  capacity: boolean;
}

/**
 * A reserve schedule about to be stored, inside the transaction that stores it: the owner's quotas
 * over its next windows, with their other reserve schedules' windows as each stores them, then the
 * workers' capacity. Only this schedule's windows are searched: the others' cost a JSON parse each.
 */
export async function checkReservation(db: Db, deps: { dialect: Dialect; config: Config }, check: ReservationCheck, now: number): Promise<void> {
  if (check.owner.admin && !check.capacity) return;
  const windows = upcomingWindows(check.spec, now, CHECKED_WINDOWS);
  const others = (
    await db
      .selectFrom('schedules')
      .selectAll()
      .where('reserve_count', 'is not', null)
      .where('active', '=', 1)
      .where('status', 'in', PLANNED_STATUSES)
      .$if(check.scheduleId !== undefined, (q) => q.where('id', '<>', check.scheduleId as number))
      .$if(!check.capacity, (q) => q.where('owner_id', '=', check.owner.userId))
      .execute()
  ).map((row) => ({ row, checked: checkedWindowsOf(row, now) }));
  if (!check.owner.admin) {
    const reserveWindows = others
      .filter(({ row }) => row.owner_id === check.owner.userId)
      .flatMap(({ row, checked }) =>
        reserveHoldings(specOf(row), checked, row.reserve_count as number, now, row.status === 'running' ? row.window_start : null),
      );
    const added = reserveHoldings(check.spec, windows, check.count, now, check.runningStart);
    await checkUserQuotas(db, deps.dialect, deps.config, { owner: check.owner, added, subject: 'This reserve schedule', reserveWindows }, now);
  }
  if (check.capacity)
    await checkCapacity(
      db,
      windows,
      check.count,
      others.map(({ row, checked }) => ({ count: row.reserve_count as number, windows: checked })),
    );
}

/** What a reserve schedule stores in `reserve_windows`, written with next_windows whenever its window moves. */
export function reserveWindowsOf(spec: WindowSpec, status: ScheduleStatus, windowStart: number | null, now: number): string {
  return nextWindowsOf(spec, status, windowStart, now, CHECKED_WINDOWS);
}

/**
 * A reserve schedule's next CHECKED_WINDOWS windows still to end, read from `reserve_windows`. The
 * list starts at the schedule's current or next window and is written again as each window opens
 * and ends, so it holds CHECKED_WINDOWS such windows, or fewer because the schedule has no more.
 * Only when windows passed before the schedule loop moved it on (a late or stopped loop) does it
 * end short of the horizon: that schedule is then searched, as before the list was stored.
 */
function checkedWindowsOf(row: ScheduleRow, now: number): Window[] {
  if (row.reserve_windows !== null) {
    const stored = JSON.parse(row.reserve_windows) as Window[];
    const upcoming = stored.filter((window) => window.end > now);
    if (stored.length < CHECKED_WINDOWS || upcoming.length === CHECKED_WINDOWS) return upcoming;
  }
  return upcomingWindows(specOf(row), now, CHECKED_WINDOWS);
}

/**
 * Refuses a reservation that the workers cannot cover in one of its next windows: rentable
 * workers (host key proven, approved, not quarantined), minus what other reservations and running
 * rentals hold during that window.
 */
async function checkCapacity(db: Db, windows: Window[], count: number, otherWindows: { count: number; windows: Window[] }[]): Promise<void> {
  if (windows.length === 0) return;
  const { registered } = await db
    .selectFrom('nodes')
    .select((eb) => eb.fn.countAll<number>().as('registered'))
    .where(isRentableWorker)
    .executeTakeFirstOrThrow();
  const rentals = await db.selectFrom('rentals').select(['leased_until', 'schedule_id']).where('state', 'in', WORKER_HOLDING_RENTAL_STATES).execute();
  for (const window of windows) {
    const reserved = otherWindows.reduce((sum, other) => sum + (other.windows.some((candidate) => overlaps(candidate, window)) ? other.count : 0), 0);
    // Rentals of a running reservation are counted with that reservation.
    const rented = rentals.filter((rental) => rental.schedule_id === null && rental.leased_until > window.start).length;
    const available = Number(registered) - reserved - rented;
    if (available < count) {
      throw new AppError(
        'RESERVATION_CONFLICT',
        `From ${new Date(window.start).toISOString()} to ${new Date(window.end).toISOString()}, ${count} worker${count === 1 ? '' : 's'} would be reserved but only ${Math.max(0, available)} are available (${registered} registered, ${reserved} reserved by other schedules, ${rented} rented): ${count - Math.max(0, available)} short.`,
        { window_start: new Date(window.start).toISOString(), window_end: new Date(window.end).toISOString(), short: count - Math.max(0, available) },
      );
    }
  }
}

function overlaps(a: Window, b: Window): boolean {
  return a.start < b.end && b.start < a.end;
}
