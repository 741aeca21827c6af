import { AppError } from '../errors.js';

/**
 * The per-user quotas as pure rules over what a user holds: `workers` workers from `from` until
 * `until`. Rentals hold their worker from leased_from until they end; a reserve schedule's window
 * that has not started yet holds its count (a started one holds through its rentals).
 */
export interface Holding {
  from: number;
  until: number;
  workers: number;
}

export interface QuotaLimits {
  /** USER_MAX_WORKERS: held at any one moment. */
  maxWorkers: number;
  /** USER_MAX_WORKER_HOURS_PER_WEEK: held in any 7 consecutive days. */
  maxWorkerHoursPerWeek: number;
}

const HOUR = 3_600_000;
export const WEEK_MS = 7 * 24 * HOUR;

interface Step {
  at: number;
  /** Workers held from `at` until the next step. */
  held: number;
  /** Worker-milliseconds held before `at`. */
  before: number;
}

/** The step function of workers held, with its running integral. */
function stepsOf(holdings: Holding[]): Step[] {
  const changes = new Map<number, number>();
  for (const { from, until, workers } of holdings) {
    if (until <= from || workers <= 0) continue;
    changes.set(from, (changes.get(from) ?? 0) + workers);
    changes.set(until, (changes.get(until) ?? 0) - workers);
  }
  const steps: Step[] = [];
  let held = 0;
  let before = 0;
  for (const at of [...changes.keys()].sort((a, b) => a - b)) {
    const previous = steps.at(-1);
    if (previous) before += previous.held * (at - previous.at);
    held += changes.get(at) as number;
    steps.push({ at, held, before });
  }
  return steps;
}

/** Index of the last step at or before `at`, or -1. */
function stepIndexAt(steps: Step[], at: number): number {
  let low = 0;
  let high = steps.length - 1;
  let found = -1;
  while (low <= high) {
    const middle = (low + high) >> 1;
    if ((steps[middle] as Step).at <= at) {
      found = middle;
      low = middle + 1;
    } else {
      high = middle - 1;
    }
  }
  return found;
}

export function heldAt(holdings: Holding[], at: number): number {
  return holdings.reduce((sum, holding) => sum + (holding.from <= at && at < holding.until ? holding.workers : 0), 0);
}

/** The most workers held at once at a moment of [from, until), and the first such moment. */
export function peakHeld(holdings: Holding[], from: number, until: number): { held: number; at: number } {
  return peakOf(stepsOf(holdings), from, until);
}

function peakOf(steps: Step[], from: number, until: number): { held: number; at: number } {
  const first = stepIndexAt(steps, from);
  let peak = { held: first >= 0 ? (steps[first] as Step).held : 0, at: from };
  for (let index = first + 1; index < steps.length && (steps[index] as Step).at < until; index += 1) {
    const step = steps[index] as Step;
    if (step.held > peak.held) peak = { held: step.held, at: step.at };
  }
  return peak;
}

function integralUntil(steps: Step[], at: number): number {
  const index = stepIndexAt(steps, at);
  if (index < 0) return 0;
  const step = steps[index] as Step;
  return step.before + step.held * (at - step.at);
}

/**
 * The span of `spanMs` holding the most worker-milliseconds among those overlapping one of
 * `within`. The total is piecewise linear in the span's start, so its maximum is at a start where
 * the span's start or end meets a holding's start or end, or at the edge of the overlapping starts.
 */
export function busiestSpan(holdings: Holding[], within: Holding[], spanMs: number): { start: number; workerMs: number } {
  const steps = stepsOf(holdings);
  const candidates = new Set<number>();
  for (const { from, until } of [...holdings, ...within]) for (const at of [from, until, from - spanMs, until - spanMs]) candidates.add(at);
  let busiest = { start: within[0]?.from ?? 0, workerMs: 0 };
  for (const start of candidates) {
    if (!within.some((interval) => start <= interval.until && start + spanMs >= interval.from)) continue;
    const workerMs = integralUntil(steps, start + spanMs) - integralUntil(steps, start);
    if (workerMs > busiest.workerMs) busiest = { start, workerMs };
  }
  return busiest;
}

export type QuotaViolation =
  | { quota: 'USER_MAX_WORKERS'; held: number; at: number; existing: number; added: number }
  | { quota: 'USER_MAX_WORKER_HOURS_PER_WEEK'; workerMs: number; existingMs: number; start: number };

/**
 * What `added` would break, given what the user already holds: more than USER_MAX_WORKERS at one
 * moment of `added`, or more than USER_MAX_WORKER_HOURS_PER_WEEK in a 7-day span overlapping it.
 */
export function findQuotaViolation(limits: QuotaLimits, existing: Holding[], added: Holding[]): QuotaViolation | undefined {
  const all = [...existing, ...added];
  const steps = stepsOf(all);
  for (const interval of added) {
    const peak = peakOf(steps, interval.from, interval.until);
    if (peak.held > limits.maxWorkers) {
      return { quota: 'USER_MAX_WORKERS', held: peak.held, at: peak.at, existing: heldAt(existing, peak.at), added: heldAt(added, peak.at) };
    }
  }
  const busiest = busiestSpan(all, added, WEEK_MS);
  if (busiest.workerMs > limits.maxWorkerHoursPerWeek * HOUR) {
    const before = stepsOf(existing);
    const existingMs = integralUntil(before, busiest.start + WEEK_MS) - integralUntil(before, busiest.start);
    return { quota: 'USER_MAX_WORKER_HOURS_PER_WEEK', workerMs: busiest.workerMs, existingMs, start: busiest.start };
  }
  return undefined;
}

const hours = (ms: number) => Math.round((ms / HOUR) * 100) / 100;
const plural = (count: number, word: string) => `${count} ${word}${count === 1 ? '' : 's'}`;
const iso = (at: number) => new Date(at).toISOString();
const lowerFirst = (text: string) => text.charAt(0).toLowerCase() + text.slice(1);

/**
 * The refusal, with the numbers. `subject` names what was asked ("This rental", "Extending
 * rental 3 by 5 hours"); a refusal about the present speaks of what the user holds now.
 */
export function quotaError(violation: QuotaViolation, limits: QuotaLimits, subject: string, now: number): AppError {
  if (violation.quota === 'USER_MAX_WORKERS') {
    const { held, at, existing, added } = violation;
    const limit = `USER_MAX_WORKERS ${limits.maxWorkers}`;
    const detail =
      at <= now
        ? `You hold ${plural(existing, 'worker')} (${limit}); ${lowerFirst(subject)} would make ${held}: release ${held - limits.maxWorkers} first or ask for fewer.`
        : `At ${iso(at)} you will hold ${plural(existing, 'worker')} with your rentals and reserve schedules (${limit}); ${lowerFirst(subject)} would add ${added} then, making ${held}.`;
    return new AppError('QUOTA_EXCEEDED', detail, { quota: violation.quota, limit: limits.maxWorkers, held: existing, at: iso(at) });
  }
  const { workerMs, existingMs, start } = violation;
  const detail = `${subject} would make ${hours(workerMs)} worker-hours in the 7 days from ${iso(start)} (USER_MAX_WORKER_HOURS_PER_WEEK ${limits.maxWorkerHoursPerWeek}); your rentals and reserve windows already take ${hours(existingMs)} of them. Ask for fewer workers or hours.`;
  return new AppError('QUOTA_EXCEEDED', detail, {
    quota: violation.quota,
    limit: limits.maxWorkerHoursPerWeek,
    worker_hours: hours(workerMs),
    span_start: iso(start),
  });
}
