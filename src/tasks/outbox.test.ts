import { beforeEach, describe, expect, it } from 'vitest';
import { dialects, useTestDatabase, type TestDatabase } from '../../test/databases.js';
import type { Db } from '../db/database.js';
import { claimDueTasks, markTaskFailed, markTasksDone, queueTasks, retryDelayMs, type RetryPolicy } from './outbox.js';

const NOW = 1_000_000;
const LOCK_MS = 20_000;
const POLICY: RetryPolicy = { maxAttempts: 3, baseDelayMs: 1_000 };
const task = { kind: 'deprovision' as const, rentalId: null, nodeId: null, payload: { account: 'x' }, maxAttempts: 5 };

describe.each(dialects)('the outbox on %s', (dialect) => {
  const suite = useTestDatabase(dialect);
  let database: TestDatabase;
  let db: Db;
  beforeEach(() => ({ database, db } = suite));

  const claim = (now: number) => claimDueTasks(db, database.handle.dialect, now, 10, LOCK_MS);

  it('retries a failed task after a doubling backoff and gives up at the cap', async () => {
    await queueTasks(db, [task], NOW);
    let now = NOW;
    for (const attempt of [1, 2]) {
      const [claimed] = await claim(now);
      expect(claimed).toMatchObject({ state: 'running', attempts: attempt });
      expect(await markTaskFailed(db, claimed!, 'busy', POLICY, now)).toBe(false);
      const retryAt = now + retryDelayMs(POLICY, attempt);
      expect(retryAt - now).toBe(1_000 * 2 ** (attempt - 1));
      expect(await claim(retryAt - 1)).toEqual([]);
      now = retryAt;
    }
    const [last] = await claim(now);
    expect(await markTaskFailed(db, last!, 'still busy', POLICY, now)).toBe(true);
    const row = await db.selectFrom('tasks').selectAll().executeTakeFirstOrThrow();
    expect(row).toMatchObject({ state: 'failed', attempts: 3, locked_until: null, finished_at: now, last_error: 'still busy' });
    expect(await claim(now + 10 * LOCK_MS)).toEqual([]);
  });

  it('runs a task again once the instance that took it stopped, and a late "done" from a failed run is not recorded', async () => {
    await queueTasks(db, [task], NOW);
    const [first] = await claim(NOW);
    expect(await claim(NOW + LOCK_MS)).toEqual([]);
    const [again] = await claim(NOW + LOCK_MS + 1);
    expect(again).toMatchObject({ id: first!.id, attempts: 2, locked_until: NOW + 2 * LOCK_MS + 1 });

    expect(await markTaskFailed(db, again!, 'host key changed', POLICY, NOW + LOCK_MS + 2, true)).toBe(true);
    await markTasksDone(db, [first!.id], NOW + LOCK_MS + 3);
    expect(await db.selectFrom('tasks').select(['state', 'finished_at']).executeTakeFirstOrThrow()).toEqual({
      state: 'failed',
      finished_at: NOW + LOCK_MS + 2,
    });
  });

  it('marks the tasks a request ran itself done', async () => {
    const queued = await queueTasks(db, [task, task], NOW, { runningUntil: NOW + LOCK_MS });
    await markTasksDone(
      db,
      queued.map((row) => row.id),
      NOW + 5,
    );
    const rows = await db.selectFrom('tasks').select(['state', 'locked_until', 'finished_at']).execute();
    expect(rows).toEqual([
      { state: 'done', locked_until: null, finished_at: NOW + 5 },
      { state: 'done', locked_until: null, finished_at: NOW + 5 },
    ]);
  });
});
