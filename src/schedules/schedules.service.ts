import { encrypt as cryptSha512 } from 'unixcrypt';
import type { Db } from '../db/database.js';
import { inTransaction } from '../db/transaction.js';
import { AppError } from '../errors.js';
import { appendEvents } from '../events/events.repository.js';
import { findNodeByName } from '../nodes/nodes.repository.js';
import { checkPasswordStrength, generatePassword } from '../rentals/rental-credentials.js';
import { findLiveScheduleRentalIds } from '../rentals/rentals.repository.js';
import { endRentals, type LeasingDeps, type Renter } from '../rentals/rentals.service.js';
import { findSchedule } from './schedules.repository.js';
import type { ScheduleAction, ScheduleRow, ScheduleStatus } from './schedules.table.js';
import { checkReservation, checkReserveSpan, checkScheduleCount, PLANNED_STATUSES, reserveWindowsOf } from './reserve-checks.js';
import { checkRecurs, checkTimezone, nextWindowsOf, parseCron, parseIsoTime, specOf, WindowError, windowAt, type WindowSpec } from './windows.js';

/** What a client sends; times are ISO 8601 text (UTC when without an offset). */
export interface ScheduleInput {
  name?: string;
  start_time?: string;
  end_time?: string;
  status?: string;
  active?: boolean;
  cron_start?: string | null;
  cron_stop?: string | null;
  timezone?: string | null;
  action?: { kind: 'reserve' | 'node-window'; count?: number; ssh_password?: string; node?: string } | null;
}

/** What schedule changes use besides the database; the schedule loop, which rents, takes LeasingDeps. */
export type ScheduleDeps = Pick<LeasingDeps, 'dialect' | 'config'>;

/** A transition counts as late when it fires this long after its boundary (the loop runs every 15 s). */
export const LATE_AFTER_MS = 60_000;

export function actionOf(row: Pick<ScheduleRow, 'action'>): ScheduleAction | null {
  return row.action ? (JSON.parse(row.action) as ScheduleAction) : null;
}

function invalid(detail: string): AppError {
  return new AppError('VALIDATION_ERROR', detail);
}

function time(value: string, field: string): number {
  const parsed = parseIsoTime(value);
  if (parsed === undefined)
    throw invalid(`body/${field} must be an ISO 8601 date-time such as "2026-04-20T10:00:00Z" (without an offset it is UTC), got "${value}"`);
  return parsed;
}

/** Checks the timing fields together and returns them as stored. */
function timing(merged: { start_time: number; end_time: number; cron_start: string | null; cron_stop: string | null; timezone: string | null }, now: number) {
  if (merged.end_time <= merged.start_time) throw invalid('body/end_time must be after start_time.');
  if ((merged.cron_start === null) !== (merged.cron_stop === null))
    throw invalid('body/cron_start and body/cron_stop go together: a window opens at each cron_start and closes at the next cron_stop.');
  const timezone = merged.timezone ?? 'UTC';
  try {
    checkTimezone(timezone);
    if (merged.cron_start === null) return merged;
    const from = Math.max(now, merged.start_time);
    checkRecurs(parseCron(merged.cron_start, timezone, 'cron_start'), from, 'cron_start', merged.cron_start);
    checkRecurs(parseCron(merged.cron_stop as string, timezone, 'cron_stop'), from, 'cron_stop', merged.cron_stop as string);
  } catch (error) {
    if (error instanceof WindowError) throw invalid(`body/${error.message}`);
    throw error;
  }
  return { ...merged, timezone };
}

function clientStatus(status: string | undefined): ScheduleStatus | undefined {
  if (status === undefined) return undefined;
  if (status === 'scheduled' || status === 'cancelled') return status;
  if (status === 'running' || status === 'completed') {
    throw invalid(`body/status "${status}" is set by Dispatcher at the window's start and end; send "scheduled" or "cancelled".`);
  }
  throw invalid(`body/status must be one of scheduled, running, completed, cancelled (clients send scheduled or cancelled), got "${status}"`);
}

/** `POST /schedules`. Returns the row, and the generated password of a reserve action (shown once). */
export async function createSchedule(
  db: Db,
  deps: ScheduleDeps,
  owner: Renter,
  input: ScheduleInput,
  now: number,
): Promise<{ row: ScheduleRow; password?: string }> {
  if (!input.name || !input.name.trim()) throw invalid('body/name is required.');
  if (input.start_time === undefined || input.end_time === undefined) throw invalid('body/start_time and body/end_time are required.');
  const timed = timing(
    {
      start_time: time(input.start_time, 'start_time'),
      end_time: time(input.end_time, 'end_time'),
      cron_start: input.cron_start ?? null,
      cron_stop: input.cron_stop ?? null,
      timezone: input.timezone ?? null,
    },
    now,
  );
  let status = clientStatus(input.status) ?? 'scheduled';
  const active = input.active ?? true;
  let action: ScheduleAction | null = null;
  let nodeId: number | null = null;
  let passwordHash: string | null = null;
  let password: string | undefined;
  if (input.action?.kind === 'reserve') {
    if (input.action.count === undefined || input.action.node !== undefined)
      throw invalid('body/action: reserve takes count (and optionally ssh_password), not node.');
    if (input.action.count > deps.config.rentMaxCount) throw invalid(`body/action/count may be at most ${deps.config.rentMaxCount} (RENT_MAX_COUNT).`);
    if (input.action.ssh_password !== undefined) checkPasswordStrength(input.action.ssh_password, owner.username);
    else password = generatePassword();
    passwordHash = cryptSha512(input.action.ssh_password ?? (password as string));
    action = { kind: 'reserve', count: input.action.count };
  } else if (input.action?.kind === 'node-window') {
    if (input.action.node === undefined || input.action.count !== undefined || input.action.ssh_password !== undefined) {
      throw invalid("body/action: node-window takes node, the rescue node's name, and nothing else.");
    }
    if (!owner.admin) throw new AppError('FORBIDDEN', 'Only admins open and close nodes with node-window schedules.');
    const node = await findNodeByName(db, input.action.node);
    if (!node) throw new AppError('NODE_NOT_FOUND', `No node "${input.action.node}".`);
    nodeId = node.id;
    action = { kind: 'node-window', node: node.name };
  }
  const window = windowAt(specOf(timed), now);
  if (!window && status === 'scheduled') status = 'completed';
  if (action?.kind === 'reserve') checkReserveSpan(deps.config, owner, timed.start_time, timed.end_time);

  const row = await inTransaction(db, async (trx) => {
    await checkScheduleCount(trx, deps.dialect, deps.config, owner);
    if (action?.kind === 'reserve' && active && status === 'scheduled') {
      await checkReservation(trx, deps, { owner, spec: specOf(timed), count: action.count, runningStart: null, capacity: true }, now);
    }
    const inserted = await trx
      .insertInto('schedules')
      .values({
        owner_id: owner.userId,
        name: input.name!.trim(),
        ...timed,
        status,
        active: active ? 1 : 0,
        action: action ? JSON.stringify(action) : null,
        node_id: nodeId,
        reserve_count: action?.kind === 'reserve' ? action.count : null,
        password_hash: passwordHash,
        window_start: window?.start ?? null,
        window_end: window?.end ?? null,
        ...storedWindows(specOf(timed), action, status, window?.start ?? null, now),
        last_fired_at: null,
        created_at: now,
        updated_at: now,
      })
      .returningAll()
      .executeTakeFirstOrThrow();
    await appendEvents(trx, now, [
      { actor: owner.actor, kind: 'schedule.created', subjectType: 'schedule', subjectId: inserted.id, data: { name: inserted.name, action } },
    ]);
    if (nodeId !== null) await refreshNodeWindow(trx, nodeId, now);
    return inserted;
  });
  return { row, password };
}

export async function findOwnSchedule(db: Db, owner: Renter, id: number): Promise<ScheduleRow> {
  const row = await findSchedule(db, id);
  if (!row || (!owner.admin && row.owner_id !== owner.userId)) throw new AppError('SCHEDULE_NOT_FOUND', `No schedule ${id} of yours.`);
  return row;
}

/** `PATCH /schedules/{id}`: timing, name, active and status; a running window that no longer holds ends first. */
export async function updateSchedule(db: Db, deps: ScheduleDeps, owner: Renter, id: number, input: ScheduleInput, now: number): Promise<ScheduleRow> {
  if (input.action !== undefined) throw invalid('body/action cannot be changed; delete the schedule and create another.');
  const row = await findOwnSchedule(db, owner, id);
  const timed = timing(
    {
      start_time: input.start_time === undefined ? row.start_time : time(input.start_time, 'start_time'),
      end_time: input.end_time === undefined ? row.end_time : time(input.end_time, 'end_time'),
      cron_start: input.cron_start === undefined ? row.cron_start : input.cron_start,
      cron_stop: input.cron_stop === undefined ? row.cron_stop : input.cron_stop,
      timezone: input.timezone === undefined ? row.timezone : input.timezone,
    },
    now,
  );
  const requested = clientStatus(input.status);
  const active = input.active ?? row.active === 1;
  const window = windowAt(specOf(timed), now);
  const stillOpen =
    row.status === 'running' && active && requested !== 'cancelled' && window !== undefined && window.start <= now && window.start === row.window_start;
  // A cancelled schedule stays cancelled until it is explicitly planned again ("status": "scheduled").
  const cancelled = requested === 'cancelled' || (row.status === 'cancelled' && requested !== 'scheduled');
  const status: ScheduleStatus = cancelled ? 'cancelled' : stillOpen ? 'running' : window ? 'scheduled' : 'completed';
  const action = actionOf(row);
  // The quotas are the owner's, whoever changes the schedule (an admin changing it is exempt).
  const quotaOwner = { userId: row.owner_id, admin: owner.admin };
  if (action?.kind === 'reserve' && (input.start_time !== undefined || input.end_time !== undefined))
    checkReserveSpan(deps.config, quotaOwner, timed.start_time, timed.end_time);
  return inTransaction(db, async (trx) => {
    if (isPlanned(status) && !isPlanned(row.status)) await checkScheduleCount(trx, deps.dialect, deps.config, quotaOwner, row.id);
    if (action?.kind === 'reserve' && active && isPlanned(status)) {
      const runningStart = status === 'running' ? row.window_start : null;
      await checkReservation(
        trx,
        deps,
        { owner: quotaOwner, spec: specOf(timed), count: action.count, scheduleId: row.id, runningStart, capacity: status === 'scheduled' },
        now,
      );
    }
    if (row.status === 'running' && !stillOpen) await endEffect(trx, deps, row, requested === 'cancelled' ? 'schedule cancelled' : 'schedule changed', now);
    const updated = await trx
      .updateTable('schedules')
      .set({
        ...timed,
        name: input.name?.trim() || row.name,
        active: active ? 1 : 0,
        status,
        window_start: status === 'running' ? row.window_start : (window?.start ?? null),
        window_end: status === 'running' ? (window?.end ?? row.window_end) : (window?.end ?? null),
        ...storedWindows(specOf(timed), action, status, status === 'running' ? row.window_start : (window?.start ?? null), now),
        updated_at: now,
      })
      .where('id', '=', row.id)
      .returningAll()
      .executeTakeFirstOrThrow();
    const kind = status === 'cancelled' && row.status !== 'cancelled' ? 'schedule.cancelled' : 'schedule.updated';
    await appendEvents(trx, now, [{ actor: owner.actor, kind, subjectType: 'schedule', subjectId: row.id, data: { from: row.status, to: status, active } }]);
    if (row.node_id !== null) await refreshNodeWindow(trx, row.node_id, now);
    return updated;
  });
}

/** `DELETE /schedules/{id}`: a running window's effect ends first (recorded as cancelled). */
export async function deleteSchedule(db: Db, deps: Pick<ScheduleDeps, 'config'>, owner: Renter, id: number, now: number): Promise<void> {
  const row = await findOwnSchedule(db, owner, id);
  if (row.status === 'running') await endEffect(db, deps, row, 'schedule deleted', now);
  await inTransaction(db, async (trx) => {
    await trx.deleteFrom('schedules').where('id', '=', row.id).execute();
    const events = [{ actor: owner.actor, kind: 'schedule.deleted', subjectType: 'schedule', subjectId: row.id, data: { name: row.name, status: row.status } }];
    if (row.status === 'running')
      events.unshift({
        actor: owner.actor,
        kind: 'schedule.cancelled',
        subjectType: 'schedule',
        subjectId: row.id,
        data: { name: row.name, status: row.status },
      });
    await appendEvents(trx, now, events);
    if (row.node_id !== null) await refreshNodeWindow(trx, row.node_id, now);
  });
}

/** The windows a schedule stores, written together wherever its window moves: those it shows, and a reserve schedule's checked ones. */
export function storedWindows(spec: WindowSpec, action: ScheduleAction | null, status: ScheduleStatus, windowStart: number | null, now: number) {
  return {
    next_windows: nextWindowsOf(spec, status, windowStart, now),
    reserve_windows: action?.kind === 'reserve' ? reserveWindowsOf(spec, status, windowStart, now) : null,
  };
}

export async function endEffect(db: Db, deps: Pick<ScheduleDeps, 'config'>, row: ScheduleRow, reason: string, now: number): Promise<void> {
  if (actionOf(row)?.kind !== 'reserve') return;
  const live = await findLiveScheduleRentalIds(db, row.id);
  await endRentals(db, { ids: live }, { reason, actor: `schedule:${row.id}` }, deps.config.taskMaxAttempts, now);
}

function isPlanned(status: ScheduleStatus): boolean {
  return (PLANNED_STATUSES as readonly ScheduleStatus[]).includes(status);
}

/**
 * A node with node-window schedules takes new work only inside a window: the node row keeps the
 * current or next window of its active schedules, which every claim checks. No such schedule
 * (or none left): both null, the node is not restricted.
 */
export async function refreshNodeWindow(db: Db, nodeId: number, now: number): Promise<void> {
  const rows = await db
    .selectFrom('schedules')
    .select(['active', 'window_start', 'window_end'])
    .where('node_id', '=', nodeId)
    .where('status', 'in', ['scheduled', 'running'])
    .execute();
  const windows = rows
    .filter((row) => row.active === 1 && row.window_start !== null && row.window_end !== null && row.window_end > now)
    .map((row) => ({ start: row.window_start as number, end: row.window_end as number }))
    .sort((a, b) => a.start - b.start);
  const first = windows[0];
  const value =
    rows.length === 0
      ? { window_from: null, window_until: null }
      : first
        ? { window_from: first.start, window_until: first.end }
        : { window_from: 0, window_until: 0 };
  await db.updateTable('nodes').set(value).where('id', '=', nodeId).execute();
}
