import { Cron } from 'croner';
import type { ScheduleRow, ScheduleStatus } from './schedules.table.js';

/**
 * Time windows of a schedule. A plain schedule has one window, start_time to end_time. A
 * recurring one (cron_start and cron_stop, 5-field cron, in an IANA time zone) has a window from
 * each cron_start occurrence to the next cron_stop occurrence, for occurrences between start_time
 * and end_time (a window is cut at end_time).
 *
 * Daylight-saving time, as croner implements it for wall-clock times: a local time skipped by the
 * spring jump fires at the first instant after the gap (02:30 → 03:00); a local time that occurs
 * twice in autumn fires once, at its first occurrence.
 */
export interface Recurrence {
  cronStart: string;
  cronStop: string;
  timezone: string;
}

export interface WindowSpec {
  startTime: number;
  endTime: number;
  recurrence: Recurrence | null;
}

export interface Window {
  start: number;
  end: number;
}

/** Parses a standard 5-field expression; the detail says what is wrong. Never rewritten. */
export function parseCron(expression: string, timezone: string, field: string): Cron {
  const fields = expression.trim().split(/\s+/);
  if (fields.length !== 5) {
    throw new WindowError(
      `${field} must be a standard 5-field cron expression (minute hour day-of-month month day-of-week), got ${fields.length} field${fields.length === 1 ? '' : 's'}: "${expression}"`,
    );
  }
  let cron: Cron;
  try {
    cron = new Cron(expression, { timezone, paused: true, mode: '5-part', domAndDow: false });
  } catch (error) {
    throw new WindowError(`${field} "${expression}" is not a valid cron expression: ${(error as Error).message.replace(/^CronPattern: /, '')}`);
  }
  return cron;
}

export function checkTimezone(timezone: string): void {
  try {
    new Intl.DateTimeFormat('en-US', { timeZone: timezone });
  } catch {
    throw new WindowError(`timezone "${timezone}" is not an IANA time zone name (such as "Europe/Berlin" or "UTC").`);
  }
}

export class WindowError extends Error {}

const RECURRENCE_HORIZON_MS = 2 * 366 * 86_400_000;

/**
 * Refuses a cron expression with no occurrence in the next two years (`0 0 31 2 *`): every window
 * of it would make the search run to croner's limit, and a list of such schedules would hold the
 * event loop for seconds.
 */
export function checkRecurs(cron: Cron, from: number, field: string, expression: string): void {
  const next = cron.nextRun(new Date(from))?.getTime();
  if (next === undefined || next > from + RECURRENCE_HORIZON_MS) {
    throw new WindowError(`${field} "${expression}" has no occurrence in the two years after ${new Date(from).toISOString()}: a schedule must recur.`);
  }
}

/** How many upcoming windows are kept with each schedule (`next_windows`), written whenever its window moves. */
export const SHOWN_WINDOWS = 5;

/** A spec with its cron expressions parsed once, for walking many windows. */
interface Walker {
  spec: WindowSpec;
  opens: Cron;
  closes: Cron;
}

function walkerOf(spec: WindowSpec & { recurrence: Recurrence }): Walker {
  const { cronStart, cronStop, timezone } = spec.recurrence;
  return { spec, opens: parseCron(cronStart, timezone, 'cron_start'), closes: parseCron(cronStop, timezone, 'cron_stop') };
}

/** The window containing `at`, or else the first one starting after it; undefined when none is left. */
export function windowAt(spec: WindowSpec, at: number): Window | undefined {
  if (at >= spec.endTime) return undefined;
  if (!spec.recurrence) return { start: spec.startTime, end: spec.endTime };
  return recurringWindowAt(walkerOf({ ...spec, recurrence: spec.recurrence }), at);
}

function closeAfter({ spec, closes }: Walker, start: number): number {
  return Math.min(closes.nextRun(new Date(start))?.getTime() ?? spec.endTime, spec.endTime);
}

function recurringWindowAt(walker: Walker, at: number): Window | undefined {
  const { spec, opens } = walker;
  if (at >= spec.endTime) return undefined;
  // A window that opened before `at` may still be open.
  const previous = opens.previousRuns(1, new Date(at + 1))[0]?.getTime();
  if (previous !== undefined && previous >= spec.startTime) {
    const end = closeAfter(walker, previous);
    if (end > at) return { start: previous, end };
  }
  return windowOpeningAfter(walker, Math.max(at, spec.startTime - 1));
}

/** The first window opening strictly after `from`. */
function windowOpeningAfter(walker: Walker, from: number): Window | undefined {
  const start = walker.opens.nextRun(new Date(from))?.getTime();
  if (start === undefined || start >= walker.spec.endTime) return undefined;
  return { start, end: closeAfter(walker, start) };
}

/** Up to `count` windows from `at` on (the current one first, if any); the crons are parsed once. */
export function upcomingWindows(spec: WindowSpec, at: number, count: number): Window[] {
  if (at >= spec.endTime || count < 1) return [];
  if (!spec.recurrence) return [{ start: spec.startTime, end: spec.endTime }];
  const walker = walkerOf({ ...spec, recurrence: spec.recurrence });
  const windows: Window[] = [];
  // After a window, the next one opens at its end or later: no window can still be open there.
  for (let next = recurringWindowAt(walker, at); next && windows.length < count; next = windowOpeningAfter(walker, next.end - 1)) {
    windows.push(next);
  }
  return windows;
}

const ISO_TIME = /^(\d{4})-(\d{2})-(\d{2})[T ](\d{2}):(\d{2})(?::(\d{2})(\.\d{1,9})?)?(Z|[+-]\d{2}:?\d{2})?$/;

/** ISO 8601 date-time; without an offset it is UTC. Returns epoch milliseconds, or undefined. */
export function parseIsoTime(text: string): number | undefined {
  const match = ISO_TIME.exec(text.trim());
  if (!match) return undefined;
  const [, year, month, day, hour, minute, second = '00', fraction = '', offset = 'Z'] = match;
  const normalized = `${year}-${month}-${day}T${hour}:${minute}:${second}${fraction.slice(0, 4)}${offset === 'Z' ? 'Z' : offset.length === 5 ? `${offset.slice(0, 3)}:${offset.slice(3)}` : offset}`;
  const value = Date.parse(normalized);
  if (Number.isNaN(value)) return undefined;
  // Date.parse rolls 2026-02-30 over to March; a real calendar date round-trips.
  const check = new Date(Date.UTC(Number(year), Number(month) - 1, Number(day)));
  if (check.getUTCMonth() !== Number(month) - 1 || check.getUTCDate() !== Number(day) || Number(hour) > 23 || Number(minute) > 59 || Number(second) > 59)
    return undefined;
  return value;
}

export function specOf(row: Pick<ScheduleRow, 'start_time' | 'end_time' | 'cron_start' | 'cron_stop' | 'timezone'>): WindowSpec {
  return {
    startTime: row.start_time,
    endTime: row.end_time,
    recurrence: row.cron_start && row.cron_stop ? { cronStart: row.cron_start, cronStop: row.cron_stop, timezone: row.timezone ?? 'UTC' } : null,
  };
}

/**
 * The windows a schedule shows (the current one first), as stored with it: computed when its window
 * moves, so that listing schedules never searches cron occurrences. `count` windows at most: fewer
 * only when the schedule has no more.
 */
export function nextWindowsOf(spec: WindowSpec, status: ScheduleStatus, windowStart: number | null, now: number, count = SHOWN_WINDOWS): string {
  const windows = status === 'cancelled' || status === 'completed' ? [] : upcomingWindows(spec, windowStart ?? now, count);
  return JSON.stringify(windows);
}
