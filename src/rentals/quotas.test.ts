import { describe, expect, it } from 'vitest';
import { busiestSpan, findQuotaViolation, peakHeld, quotaError, WEEK_MS, type Holding } from './quotas.js';

const HOUR = 3_600_000;
const T0 = Date.parse('2026-01-01T00:00:00Z');
/** A holding in hours from T0. */
const held = (fromHours: number, untilHours: number, workers = 1): Holding => ({ from: T0 + fromHours * HOUR, until: T0 + untilHours * HOUR, workers });
const limits = { maxWorkers: 10, maxWorkerHoursPerWeek: 336 };

describe('quota rules', () => {
  it.each([
    { name: 'nothing held', holdings: [], from: 0, until: 10, peak: 0, at: 0 },
    { name: 'two overlapping', holdings: [held(0, 10), held(5, 15, 2)], from: 0, until: 20, peak: 3, at: 5 },
    { name: 'after the first ended', holdings: [held(0, 10), held(5, 15, 2)], from: 10, until: 20, peak: 2, at: 10 },
    { name: 'back to back, never together', holdings: [held(0, 5, 4), held(5, 10, 4)], from: 0, until: 10, peak: 4, at: 0 },
    { name: 'a holding ending where the interval starts', holdings: [held(0, 5, 4), held(5, 10, 1)], from: 5, until: 10, peak: 1, at: 5 },
    { name: 'a holding starting where the interval ends', holdings: [held(0, 5, 1), held(5, 10, 4)], from: 0, until: 5, peak: 1, at: 0 },
  ])('peak held: $name', ({ holdings, from, until, peak, at }) => {
    expect(peakHeld(holdings, T0 + from * HOUR, T0 + until * HOUR)).toEqual({ held: peak, at: T0 + at * HOUR });
  });

  it.each([
    { name: 'one rental', holdings: [held(0, 100, 3)], within: held(0, 100), hours: 300 },
    { name: 'two full weeks, one at a time', holdings: [held(0, 168, 2), held(168, 336, 2)], within: held(168, 336), hours: 336 },
    // Rolling: a worker more for an hour at the end while the first hour leaves the span.
    { name: 'an hour more of one of two', holdings: [held(0, 169), held(0, 168)], within: held(168, 169), hours: 336 },
    { name: 'an hour more of both', holdings: [held(0, 169, 2)], within: held(168, 169), hours: 336 },
    { name: 'spans reach back a week', holdings: [held(-100, 0, 2), held(0, 10, 2)], within: held(0, 10), hours: 220 },
    { name: 'a far rental does not count', holdings: [held(-200, -169, 5), held(0, 10)], within: held(0, 10), hours: 10 },
  ])('busiest 7 days: $name', ({ holdings, within, hours }) => {
    expect(busiestSpan(holdings, [within], WEEK_MS).workerMs).toBe(hours * HOUR);
  });

  it('finds the busiest 7 days exactly: the same maximum as trying every hour, for random holdings', () => {
    let seed = 7;
    const random = (below: number) => {
      seed = (seed * 1_103_515_245 + 12_345) % 2 ** 31;
      return seed % below;
    };
    for (let round = 0; round < 200; round += 1) {
      const holdings = Array.from({ length: 1 + random(12) }, () => {
        const from = random(600) - 300;
        return held(from, from + 1 + random(200), 1 + random(4));
      });
      const withinFrom = random(400) - 200;
      const within = held(withinFrom, withinFrom + 1 + random(150));
      let expected = 0;
      // Every boundary is a whole hour, so the maximum is at a whole hour.
      for (let start = withinFrom - 168; start <= (within.until - T0) / HOUR; start += 1) {
        const total = holdings.reduce((sum, holding) => {
          const overlap = Math.min(holding.until, T0 + (start + 168) * HOUR) - Math.max(holding.from, T0 + start * HOUR);
          return sum + Math.max(0, overlap) * holding.workers;
        }, 0);
        expected = Math.max(expected, total);
      }
      expect(busiestSpan(holdings, [within], WEEK_MS).workerMs, JSON.stringify({ holdings, within })).toBe(expected);
    }
  });

  it.each([
    { name: 'within both limits', existing: [held(0, 10, 9)], added: [held(0, 2)], violation: undefined },
    { name: 'an 11th worker', existing: [held(0, 10, 10)], added: [held(0, 2)], violation: { quota: 'USER_MAX_WORKERS', held: 11, existing: 10, added: 1 } },
    {
      name: 'a reserve window later on',
      existing: [held(0, 100, 2), held(50, 51, 8)],
      added: [held(0, 60)],
      violation: { quota: 'USER_MAX_WORKERS', held: 11, existing: 10, added: 1 },
    },
    {
      name: 'past the weekly worker-hours',
      existing: [held(0, 100, 3)],
      added: [held(100, 140)],
      violation: { quota: 'USER_MAX_WORKER_HOURS_PER_WEEK', workerMs: 340 * HOUR, existingMs: 300 * HOUR },
    },
    { name: 'at the weekly worker-hours', existing: [held(0, 100, 3)], added: [held(100, 136)], violation: undefined },
  ])('violation: $name', ({ existing, added, violation }) => {
    const found = findQuotaViolation(limits, existing, added);
    if (violation === undefined) expect(found).toBeUndefined();
    else expect(found).toMatchObject(violation);
  });

  it('says what is held, the limit and what to do', () => {
    const now = T0;
    const atNow = findQuotaViolation(limits, [held(0, 10, 10)], [held(0, 2)])!;
    expect(quotaError(atNow, limits, 'Renting 1 worker for 2 hours', now)).toMatchObject({
      status: 409,
      code: 'QUOTA_EXCEEDED',
      detail: 'You hold 10 workers (USER_MAX_WORKERS 10); renting 1 worker for 2 hours would make 11: release 1 first or ask for fewer.',
      extra: { quota: 'USER_MAX_WORKERS', limit: 10, held: 10 },
    });
    const later = findQuotaViolation(limits, [held(5, 6, 10)], [held(0, 8, 2)])!;
    expect(quotaError(later, limits, 'This reserve schedule', now).detail).toBe(
      'At 2026-01-01T05:00:00.000Z you will hold 10 workers with your rentals and reserve schedules (USER_MAX_WORKERS 10); this reserve schedule would add 2 then, making 12.',
    );
    const week = findQuotaViolation(limits, [held(0, 100, 3)], [held(100, 140)])!;
    expect(quotaError(week, limits, 'Extending rental 3 by 40 hours', now)).toMatchObject({
      detail:
        'Extending rental 3 by 40 hours would make 340 worker-hours in the 7 days from 2026-01-01T00:00:00.000Z (USER_MAX_WORKER_HOURS_PER_WEEK 336); your rentals and reserve windows already take 300 of them. Ask for fewer workers or hours.',
      extra: { quota: 'USER_MAX_WORKER_HOURS_PER_WEEK', limit: 336, worker_hours: 340 },
    });
  });
});
