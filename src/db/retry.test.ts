import { sql } from 'kysely';
import { afterEach, describe, expect, it } from 'vitest';
import { createTestDatabase, dialects, type TestDatabase } from '../../test/databases.js';
import { retryingLockConflicts } from './retry.js';

describe.skipIf(!dialects.includes('postgres'))('retrying lock conflicts on postgres', () => {
  let database: TestDatabase;
  afterEach(async () => {
    await database.drop();
  });

  it('runs a deadlock victim again, so both transactions commit', async () => {
    database = await createTestDatabase('postgres');
    const { db, dialect } = database.handle;
    await sql`create table counters (id int primary key, value int not null)`.execute(db);
    await sql`insert into counters values (1, 0), (2, 0)`.execute(db);
    // Two transactions lock the same two rows in opposite orders; each waits at a barrier after its
    // first lock, so PostgreSQL must pick a victim.
    let arrived = 0;
    let release: () => void = () => undefined;
    const barrier = new Promise<void>((resolve) => (release = resolve));
    const attempts = { first: 0, second: 0 };
    const increment = (order: [number, number], counter: keyof typeof attempts) =>
      retryingLockConflicts(dialect, () =>
        db.transaction().execute(async (trx) => {
          attempts[counter] += 1;
          await sql`update counters set value = value + 1 where id = ${order[0]}`.execute(trx);
          if ((arrived += 1) === 2) release();
          await barrier;
          await sql`update counters set value = value + 1 where id = ${order[1]}`.execute(trx);
        }),
      );
    await Promise.all([increment([1, 2], 'first'), increment([2, 1], 'second')]);
    expect(attempts.first + attempts.second).toBe(3);
    const rows = await sql<{ id: number; value: number }>`select id, value from counters order by id`.execute(db);
    expect(rows.rows).toEqual([
      { id: 1, value: 2 },
      { id: 2, value: 2 },
    ]);
  });

  it('gives up after three conflicts in a row and passes other errors through at once', async () => {
    database = await createTestDatabase('postgres');
    let calls = 0;
    const deadlock = Object.assign(new Error('deadlock detected'), { code: '40P01' });
    await expect(
      retryingLockConflicts(database.handle.dialect, async () => {
        calls += 1;
        throw deadlock;
      }),
    ).rejects.toBe(deadlock);
    expect(calls).toBe(3);
    calls = 0;
    await expect(
      retryingLockConflicts(database.handle.dialect, async () => {
        calls += 1;
        throw new Error('not a lock conflict');
      }),
    ).rejects.toThrow('not a lock conflict');
    expect(calls).toBe(1);
  });
});
