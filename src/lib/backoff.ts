import { setTimeout as wait } from 'node:timers/promises';

/**
 * The one backoff: `baseMs` doubled per earlier attempt (attempt 0 waits `baseMs`), never more
 * than `maxMs`. The exponent is capped so that a long run of failures cannot overflow to Infinity.
 */
export function backoffDelay(attempt: number, baseMs: number, maxMs: number): number {
  return Math.min(maxMs, baseMs * 2 ** Math.min(52, Math.max(0, attempt)));
}

/** `ms` spread by ±20 %, so that many clients that failed together do not retry together. */
export function withJitter(ms: number, random: () => number = Math.random): number {
  return ms * (0.8 + random() * 0.4);
}

/** The one sleep: with a signal it ends early, rejecting with the signal's reason. */
export async function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  try {
    await wait(ms, undefined, { signal });
  } catch (error) {
    throw signal?.aborted ? signal.reason : error;
  }
}

/** A sleep that an abort only shortens: it resolves either way, for loops that check the signal next. */
export async function pause(ms: number, signal: AbortSignal): Promise<void> {
  await wait(ms, undefined, { signal }).catch(() => undefined);
}
