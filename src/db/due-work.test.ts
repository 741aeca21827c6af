import { beforeEach, describe, expect, it } from 'vitest';
import { dialects, useTestDatabase, type TestDatabase } from '../../test/databases.js';
import type { TaskState } from '../tasks/tasks.table.js';
import type { Db } from './database.js';
import { claimDue, claimRow, endClaim, findDueIds, releaseClaim, renewClaim, updateHeld, type DueWork } from './due-work.js';

const NOW = 1_000_000;
const LEASE_MS = 60_000;

/** Timed work without a holder column (the outbox's shape). */
const TASKS: DueWork<'tasks'> = {
  table: 'tasks',
  waiting: 'pending',
  claimed: 'running',
  dueAt: 'run_after',
  leaseUntil: 'locked_until',
  orderBy: 'run_after',
};
/** Work due at once, with its holder recorded (the import jobs' shape, and the transfers' to come). */
const IMPORTS: DueWork<'imports'> = {
  table: 'imports',
  waiting: 'queued',
  claimed: 'running',
  leaseUntil: 'lease_expires_at',
  owner: 'lease_owner',
  orderBy: 'id',
};

async function insertTask(db: Db, state: TaskState, runAfter: number, lockedUntil: number | null = null): Promise<number> {
  const row = await db
    .insertInto('tasks')
    .values({
      kind: 'deprovision',
      state,
      rental_id: null,
      node_id: null,
      payload: '{}',
      attempts: state === 'pending' ? 0 : 1,
      max_attempts: 5,
      run_after: runAfter,
      locked_until: lockedUntil,
      last_error: null,
      created_at: 0,
      finished_at: null,
    })
    .returning('id')
    .executeTakeFirstOrThrow();
  return row.id;
}

async function insertImport(db: Db, owner: string | null = null, leaseExpiresAt: number | null = null): Promise<number> {
  const row = await db
    .insertInto('imports')
    .values({ kind: 'ckan', source: 'https://portal.example', params: '{}', state: owner === null ? 'queued' : 'running', created_by: 'test', created_at: 0 })
    .returning('id')
    .executeTakeFirstOrThrow();
  if (owner !== null)
    await db.updateTable('imports').set({ lease_owner: owner, lease_expires_at: leaseExpiresAt, attempts: 1 }).where('id', '=', row.id).execute();
  return row.id;
}

/** One task in every state that matters to a claim at NOW, inserted in the reverse of their due order. */
async function makeSelectionOfTasks(db: Db) {
  return {
    notYetDue: await insertTask(db, 'pending', NOW + 1),
    dueNow: await insertTask(db, 'pending', NOW),
    dueEarlier: await insertTask(db, 'pending', NOW - 10),
    lapsed: await insertTask(db, 'running', NOW - 20, NOW - 1),
    lapsingNow: await insertTask(db, 'running', NOW - 30, NOW),
    held: await insertTask(db, 'running', NOW - 40, NOW + LEASE_MS),
    done: await insertTask(db, 'done', NOW - 50),
    failed: await insertTask(db, 'failed', NOW - 60),
  };
}

const readTask = (db: Db, id: number) => db.selectFrom('tasks').selectAll().where('id', '=', id).executeTakeFirstOrThrow();
const readImport = (db: Db, id: number) => db.selectFrom('imports').selectAll().where('id', '=', id).executeTakeFirstOrThrow();

describe.each(dialects)('claims of due work on %s', (dialect) => {
  const suite = useTestDatabase(dialect);
  let database: TestDatabase;
  let db: Db;
  beforeEach(() => ({ database, db } = suite));

  it('claims waiting rows whose time has come and lapsed claims, in order, and counts an attempt on each', async () => {
    const tasks = await makeSelectionOfTasks(db);
    expect(await findDueIds(db, TASKS, NOW, 10)).toEqual([tasks.lapsed, tasks.dueEarlier, tasks.dueNow]);

    const claimed = await claimDue(db, database.handle.dialect, TASKS, { now: NOW, limit: 10, leaseMs: LEASE_MS });
    expect(claimed.map((row) => row.id).sort((a, b) => a - b)).toEqual([tasks.dueNow, tasks.dueEarlier, tasks.lapsed].sort((a, b) => a - b));
    for (const row of claimed) expect(row).toMatchObject({ state: 'running', locked_until: NOW + LEASE_MS });
    expect(Object.fromEntries(claimed.map((row) => [row.id, row.attempts]))).toEqual({ [tasks.dueNow]: 1, [tasks.dueEarlier]: 1, [tasks.lapsed]: 2 });
    // What was not due is untouched.
    expect(await readTask(db, tasks.notYetDue)).toMatchObject({ state: 'pending', attempts: 0, locked_until: null });
    expect(await readTask(db, tasks.lapsingNow)).toMatchObject({ state: 'running', attempts: 1, locked_until: NOW });
    expect(await readTask(db, tasks.held)).toMatchObject({ state: 'running', attempts: 1, locked_until: NOW + LEASE_MS });
    expect(await readTask(db, tasks.done)).toMatchObject({ state: 'done', attempts: 1 });
    expect(await readTask(db, tasks.failed)).toMatchObject({ state: 'failed', attempts: 1 });
    expect(await claimDue(db, database.handle.dialect, TASKS, { now: NOW, limit: 10, leaseMs: LEASE_MS })).toEqual([]);
  });

  it('claims at most `limit` rows, the first due first', async () => {
    const tasks = await makeSelectionOfTasks(db);
    const claimed = await claimDue(db, database.handle.dialect, TASKS, { now: NOW, limit: 2, leaseMs: LEASE_MS });
    expect(claimed.map((row) => row.id).sort((a, b) => a - b)).toEqual([tasks.lapsed, tasks.dueEarlier].sort((a, b) => a - b));
  });

  it('gives two instances claiming at once disjoint rows, every due row to exactly one', async () => {
    const ids = await Promise.all(Array.from({ length: 60 }, (_, index) => insertTask(db, 'pending', NOW - index)));
    const instances = [database.handle, database.open()];
    const claimedBy = instances.map(() => [] as number[]);
    await Promise.all(
      instances.map(async (instance, index) => {
        for (;;) {
          const rows = await claimDue(instance.db, instance.dialect, TASKS, { now: NOW, limit: 7, leaseMs: LEASE_MS });
          if (rows.length === 0) return;
          claimedBy[index]!.push(...rows.map((row) => row.id));
        }
      }),
    );
    const all = claimedBy.flat();
    expect(new Set(all).size).toBe(all.length);
    expect(all.sort((a, b) => a - b)).toEqual(ids.sort((a, b) => a - b));
    const attempts = await db.selectFrom('tasks').select('attempts').distinct().execute();
    expect(attempts).toEqual([{ attempts: 1 }]);
  });

  it('lets one of two instances claiming the same row at once have it', async () => {
    const id = await insertImport(db);
    const instances = [database.handle, database.open()];
    const claims = await Promise.all(
      instances.map((instance, index) => claimRow(instance.db, IMPORTS, id, { now: NOW, leaseMs: LEASE_MS, owner: `instance-${index}` })),
    );
    const winners = claims.filter((row) => row !== undefined);
    expect(winners).toHaveLength(1);
    expect(await readImport(db, id)).toMatchObject({ state: 'running', attempts: 1, lease_owner: winners[0]!.lease_owner, lease_expires_at: NOW + LEASE_MS });
  });

  it('takes a lapsed claim over: the old holder can no longer renew, write, release or end it; the new one can', async () => {
    const id = await insertImport(db);
    expect(await claimRow(db, IMPORTS, id, { now: NOW, leaseMs: LEASE_MS, owner: 'first' })).toMatchObject({ lease_owner: 'first', attempts: 1 });
    // Held until its deadline, renewed by its holder only.
    expect(await claimRow(db, IMPORTS, id, { now: NOW + LEASE_MS, leaseMs: LEASE_MS, owner: 'second' })).toBeUndefined();
    expect(await renewClaim(db, IMPORTS, { id, owner: 'second' }, { now: NOW + 1, leaseMs: LEASE_MS })).toBe(false);
    expect(await renewClaim(db, IMPORTS, { id, owner: 'first' }, { now: NOW + 1, leaseMs: LEASE_MS, set: { progress_at: NOW + 1 } })).toBe(true);
    expect(await readImport(db, id)).toMatchObject({ lease_expires_at: NOW + 1 + LEASE_MS, progress_at: NOW + 1 });

    // The first holder stops renewing (its instance died): past the deadline another takes it over.
    const lapsedAt = NOW + 1 + LEASE_MS + 1;
    expect(await findDueIds(db, IMPORTS, lapsedAt, 10)).toEqual([id]);
    expect(await claimRow(db, IMPORTS, id, { now: lapsedAt, leaseMs: LEASE_MS, owner: 'second' })).toMatchObject({ lease_owner: 'second', attempts: 2 });
    const old = { id, owner: 'first' };
    expect(await renewClaim(db, IMPORTS, old, { now: lapsedAt, leaseMs: LEASE_MS })).toBe(false);
    expect(await updateHeld(db, IMPORTS, old, { cursor: 'stale' })).toBe(false);
    expect(await releaseClaim(db, IMPORTS, old)).toBe(false);
    expect(await endClaim(db, IMPORTS, old, 'failed')).toEqual([]);
    expect(await readImport(db, id)).toMatchObject({ state: 'running', lease_owner: 'second', cursor: null });

    expect(await updateHeld(db, IMPORTS, { id, owner: 'second' }, { cursor: 'page-2' })).toBe(true);
    expect(await endClaim(db, IMPORTS, { id, owner: 'second' }, 'succeeded', { finished_at: lapsedAt })).toMatchObject([
      { id, state: 'succeeded', lease_owner: null, lease_expires_at: null, cursor: 'page-2', finished_at: lapsedAt },
    ]);
  });

  it('ends a claim once: an ended row is neither due nor held', async () => {
    const id = await insertImport(db, 'holder', NOW + LEASE_MS);
    expect(await endClaim(db, IMPORTS, { id, owner: 'holder' }, 'failed', (eb) => ({ errors: eb('errors', '+', 1) }))).toHaveLength(1);
    expect(await endClaim(db, IMPORTS, { id, owner: 'holder' }, 'succeeded')).toEqual([]);
    expect(await readImport(db, id)).toMatchObject({ state: 'failed', errors: 1 });
    expect(await findDueIds(db, IMPORTS, NOW + 10 * LEASE_MS, 10)).toEqual([]);
  });

  it('releases a row to be claimed again at once, or after a backoff', async () => {
    const job = await insertImport(db, 'holder', NOW + LEASE_MS);
    expect(await releaseClaim(db, IMPORTS, { id: job, owner: 'holder' })).toBe(true);
    expect(await readImport(db, job)).toMatchObject({ state: 'queued', lease_owner: null, lease_expires_at: null });
    expect(await findDueIds(db, IMPORTS, NOW, 10)).toEqual([job]);

    const id = await insertTask(db, 'pending', NOW);
    expect(await claimDue(db, database.handle.dialect, TASKS, { now: NOW, limit: 1, leaseMs: LEASE_MS })).toMatchObject([{ id, attempts: 1 }]);
    const retryAt = NOW + 5_000;
    expect(await releaseClaim(db, TASKS, { id: id }, { dueAt: retryAt, set: { last_error: 'busy' } })).toBe(true);
    expect(await readTask(db, id)).toMatchObject({ state: 'pending', locked_until: null, run_after: retryAt, last_error: 'busy', attempts: 1 });
    expect(await findDueIds(db, TASKS, retryAt - 1, 10)).toEqual([]);
    expect(await claimDue(db, database.handle.dialect, TASKS, { now: retryAt, limit: 10, leaseMs: LEASE_MS })).toMatchObject([{ id: id, attempts: 2 }]);
  });

  it('ends several held rows at once, leaving those no longer held as they are', async () => {
    const tasks = await makeSelectionOfTasks(db);
    const ended = await endClaim(db, TASKS, { id: [tasks.held, tasks.failed, tasks.lapsingNow] }, 'done', { finished_at: NOW });
    expect(ended.map((row) => row.id).sort((a, b) => a - b)).toEqual([tasks.held, tasks.lapsingNow].sort((a, b) => a - b));
    expect(await readTask(db, tasks.failed)).toMatchObject({ state: 'failed', finished_at: null });
    expect(await endClaim(db, TASKS, { id: [] }, 'done')).toEqual([]);
  });

  it('refuses a claim or a write on a table with holders that names none', async () => {
    const id = await insertImport(db);
    await expect(claimRow(db, IMPORTS, id, { now: NOW, leaseMs: LEASE_MS })).rejects.toThrow(/names its owner/);
    await expect(renewClaim(db, IMPORTS, { id }, { now: NOW, leaseMs: LEASE_MS })).rejects.toThrow(/names its owner/);
    await expect(releaseClaim(db, IMPORTS, { id: 1, owner: 'x' }, { dueAt: NOW })).rejects.toThrow(/no due time/);
  });
});
