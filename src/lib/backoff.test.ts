import { describe, expect, it } from 'vitest';
import { backoffDelay, pause, sleep, withJitter } from './backoff.js';

describe('backoff', () => {
  it.each([
    [0, 1000, 60_000, 1000],
    [1, 1000, 60_000, 2000],
    [5, 1000, 60_000, 32_000],
    [6, 1000, 60_000, 60_000],
    [-3, 1000, 60_000, 1000],
    [10_000, 1000, 60_000, 60_000],
    [3, 10_000, 3_600_000, 80_000],
  ])('attempt %i from %i ms capped at %i ms waits %i ms', (attempt, base, max, expected) => {
    expect(backoffDelay(attempt, base, max)).toBe(expected);
  });

  it('spreads a delay by at most a fifth either way', () => {
    expect(withJitter(1000, () => 0)).toBe(800);
    expect(withJitter(1000, () => 0.5)).toBe(1000);
    expect(withJitter(1000, () => 0.999_999)).toBeCloseTo(1200, 2);
  });

  it('ends a sleep when its signal aborts: sleep rejects with the reason, pause resolves', async () => {
    const controller = new AbortController();
    const reason = new Error('stopping');
    const sleeping = sleep(3_600_000, controller.signal);
    const pausing = pause(3_600_000, controller.signal);
    controller.abort(reason);
    await expect(sleeping).rejects.toBe(reason);
    await expect(pausing).resolves.toBeUndefined();
    await expect(sleep(0)).resolves.toBeUndefined();
  });
});
