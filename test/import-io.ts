import { buildConfig, type Config } from '../src/config.js';
import type { ImportIo } from '../src/catalog/catalog-import.js';

/** Import io that never waits: backoff and pacing sleeps are recorded, not slept. */
export function createTestIo(now = Date.parse('2026-01-01T00:00:00Z')): ImportIo & { lines: string[]; sleeps: number[]; setNow(ms: number): void } {
  const lines: string[] = [];
  const sleeps: number[] = [];
  let current = now;
  return {
    lines,
    sleeps,
    now: () => current,
    setNow: (ms) => {
      current = ms;
    },
    elapsedMs: () => performance.now(),
    sleep: async (ms) => {
      sleeps.push(ms);
    },
    log: (line) => lines.push(line),
  };
}

/** Fast, bounded catalog settings: a short timeout and two retries. */
export function catalogConfig(overrides: Partial<Config> = {}): Config {
  return buildConfig({ catalogRequestsPerSecond: 1000, catalogTimeoutMs: 300, catalogMaxRetries: 2, ...overrides });
}
