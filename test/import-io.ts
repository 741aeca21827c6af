import { afterAll, afterEach, beforeAll, beforeEach } from 'vitest';
import { buildConfig, type Config } from '../src/config.js';
import type { ImportIo } from '../src/catalog/catalog-import.js';
import { createLineDisplay } from '../src/catalog/import-progress.js';
import { createTestDatabase, type DialectName, type TestDatabase } from './databases.js';
import { startFakePortal, type FakePortal } from './fake-portal.js';

/**
 * Import io that never waits: backoff and pacing sleeps are recorded, not slept. `lines` holds the
 * progress and notice lines; `timeline` the same lines and `sleep <ms>` in the order they happened.
 */
export function createTestIo(
  now = Date.parse('2026-01-01T00:00:00Z'),
): ImportIo & { lines: string[]; sleeps: number[]; timeline: string[]; setNow(ms: number): void } {
  const lines: string[] = [];
  const sleeps: number[] = [];
  const timeline: string[] = [];
  let current = now;
  return {
    lines,
    sleeps,
    timeline,
    now: () => current,
    setNow: (ms) => {
      current = ms;
    },
    elapsedMs: () => performance.now(),
    sleep: async (ms) => {
      sleeps.push(ms);
      timeline.push(`sleep ${ms}`);
    },
    display: createLineDisplay((line) => {
      lines.push(line);
      timeline.push(line);
    }),
  };
}

/** Fast, bounded catalog settings: a short timeout and two retries. */
export function catalogConfig(overrides: Partial<Config> = {}): Config {
  return buildConfig({ catalogRequestsPerSecond: 1000, catalogTimeoutMs: 300, catalogMaxRetries: 2, ...overrides });
}

/**
 * The same for a server running import jobs: no retries, so a failing page fails the job at once.
 * The timeout is long enough for a loopback portal on a loaded machine (tests of a hanging portal
 * set their own): a page that times out here fails its job.
 */
export function importServerConfig(overrides: Partial<Config> = {}): Partial<Config> {
  return { catalogRequestsPerSecond: 1000, catalogTimeoutMs: 10_000, catalogMaxRetries: 0, tokenTtlMs: 24 * 3_600_000, ...overrides };
}

/**
 * A fake portal for the whole suite and a fresh database for every test, on one dialect: the
 * setup every catalog suite shares. Read `portal` and `database` inside tests and hooks.
 */
export function useCatalogTestbed(dialect: DialectName): { readonly portal: FakePortal; readonly database: TestDatabase } {
  const testbed = {} as { portal: FakePortal; database: TestDatabase };
  beforeAll(async () => {
    testbed.portal = await startFakePortal();
  });
  afterAll(async () => {
    await testbed.portal.close();
  });
  beforeEach(async () => {
    testbed.database = await createTestDatabase(dialect);
  });
  afterEach(async () => {
    await testbed.database.drop();
  });
  return testbed;
}
