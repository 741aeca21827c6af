import { sql } from 'kysely';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { createDatabaseBefore, createTestDatabase, dialects, type TestDatabase } from '../../test/databases.js';
import { addWorkers, userToken } from '../../test/leasing.js';
import { startTestServer, type TestServer } from '../../test/server.js';
import type { SshWorker } from '../../test/ssh-worker.js';
import { CHECKED_WINDOWS } from './reserve-checks.js';
import { fireSchedules } from './schedule-firing.service.js';
import type { Window } from './windows.js';

const HOUR = 3_600_000;
const at = (iso: string) => Date.parse(iso);
const iso = (window: Window) => ({ start: new Date(window.start).toISOString(), end: new Date(window.end).toISOString() });

describe.each(dialects)('reserve checks read stored windows on %s', (dialect) => {
  let database: TestDatabase;
  let server: TestServer;
  let workers: SshWorker[] = [];

  const create = (token: string, body: Record<string, unknown>) => server.api.post('/schedules', body, token);
  const reserve = (count: number, start_time: string, end_time: string, extra: Record<string, unknown> = {}) => ({
    name: `reserve ${count}`,
    start_time,
    end_time,
    action: { kind: 'reserve', count },
    ...extra,
  });
  const stored = async (id: number) =>
    JSON.parse(
      (await server.ctx.db.selectFrom('schedules').select('reserve_windows').where('id', '=', id).executeTakeFirstOrThrow()).reserve_windows!,
    ) as Window[];
  const overwrite = (id: number, windows: Window[]) =>
    server.ctx.db
      .updateTable('schedules')
      .set({ reserve_windows: JSON.stringify(windows) })
      .where('id', '=', id)
      .execute();

  beforeEach(async () => {
    database = await createTestDatabase(dialect);
    workers = [];
    server = await startTestServer(database, { loginRateLimitPerMinute: 10_000, workerProbeIntervalMs: 30_000, tokenTtlMs: 30 * 24 * HOUR, userMaxWorkers: 3 });
    await addWorkers(server, workers, 2);
  });
  afterEach(async () => {
    for (const worker of workers) await worker.stop();
    await server?.stop();
    await database.drop();
  });

  it('checks capacity and quotas against the windows other reserve schedules store, not a search of their times; a change writes them again', async () => {
    const alice = await userToken(server, 'alice');
    const bob = await userToken(server, 'bob');
    const june = await create(alice, reserve(2, '2026-06-01T01:00:00Z', '2026-06-01T02:00:00Z'));
    expect(june.status).toBe(200);
    expect((await stored(june.body.id)).map(iso)).toEqual([{ start: '2026-06-01T01:00:00.000Z', end: '2026-06-01T02:00:00.000Z' }]);
    // Its stored window moved to 5 January: that is what the checks count, June is free.
    await overwrite(june.body.id, [{ start: at('2026-01-05T10:00:00Z'), end: at('2026-01-05T11:00:00Z') }]);

    const conflict = await create(bob, reserve(1, '2026-01-05T10:30:00Z', '2026-01-05T12:00:00Z'));
    expect(conflict.status).toBe(409);
    expect(conflict.body).toMatchObject({ code: 'RESERVATION_CONFLICT', short: 1, window_start: '2026-01-05T10:30:00.000Z' });
    expect(conflict.body.detail).toBe(
      'From 2026-01-05T10:30:00.000Z to 2026-01-05T12:00:00.000Z, 1 worker would be reserved but only 0 are available (2 registered, 2 reserved by other schedules, 0 rented): 1 short.',
    );
    const quota = await create(alice, reserve(2, '2026-01-05T10:00:00Z', '2026-01-05T11:00:00Z'));
    expect(quota.body).toMatchObject({ code: 'QUOTA_EXCEEDED', quota: 'USER_MAX_WORKERS', held: 2, at: '2026-01-05T10:00:00.000Z' });
    const inJune = await create(bob, reserve(1, '2026-06-01T01:00:00Z', '2026-06-01T02:00:00Z'));
    expect(inJune.status).toBe(200);
    await server.api.request('DELETE', `/schedules/${inJune.body.id}`, { token: bob });

    // Any change writes the windows again, from the schedule's times.
    expect((await server.api.request('PATCH', `/schedules/${june.body.id}`, { body: { name: 'june' }, token: alice })).status).toBe(200);
    expect((await stored(june.body.id)).map(iso)).toEqual([{ start: '2026-06-01T01:00:00.000Z', end: '2026-06-01T02:00:00.000Z' }]);
    expect((await create(bob, reserve(1, '2026-06-01T01:00:00Z', '2026-06-01T02:00:00Z'))).body).toMatchObject({
      code: 'RESERVATION_CONFLICT',
      window_start: '2026-06-01T01:00:00.000Z',
    });
    expect((await create(bob, reserve(1, '2026-01-05T10:30:00Z', '2026-01-05T12:00:00Z'))).status).toBe(200);
  });

  it('searches a schedule whose stored windows passed before the loop moved it on, and the loop writes them again as each window opens and ends', async () => {
    const alice = await userToken(server, 'alice');
    const bob = await userToken(server, 'bob');
    // Half an hour every hour from 01:00, all 2 workers.
    const hourly = await create(
      server.adminToken,
      reserve(2, '2026-01-01T01:00:00Z', '2026-01-10T00:00:00Z', { cron_start: '0 * * * *', cron_stop: '30 * * * *' }),
    );
    expect(hourly.status).toBe(200);
    const id = hourly.body.id;
    const first = await stored(id);
    expect(first).toHaveLength(CHECKED_WINDOWS);
    expect(iso(first[0]!)).toEqual({ start: '2026-01-01T01:00:00.000Z', end: '2026-01-01T01:30:00.000Z' });
    expect(iso(first.at(-1)!)).toEqual({ start: '2026-01-03T02:00:00.000Z', end: '2026-01-03T02:30:00.000Z' });

    // Four windows pass while no loop runs: the stored list now ends short of 50 windows from now.
    server.clock.set(at('2026-01-01T04:45:00Z'));
    const beyondStored = reserve(1, '2026-01-03T03:00:00Z', '2026-01-03T03:15:00Z');
    expect((await create(bob, beyondStored)).body).toMatchObject({ code: 'RESERVATION_CONFLICT', window_start: '2026-01-03T03:00:00.000Z' });

    await fireSchedules(server.ctx.db, server.ctx, server.clock.now());
    const caughtUp = await stored(id);
    expect(caughtUp).toHaveLength(CHECKED_WINDOWS);
    expect(iso(caughtUp[0]!)).toEqual({ start: '2026-01-01T05:00:00.000Z', end: '2026-01-01T05:30:00.000Z' });
    server.clock.set(at('2026-01-01T05:00:00Z'));
    await fireSchedules(server.ctx.db, server.ctx, server.clock.now());
    expect(await stored(id)).toEqual(caughtUp);
    server.clock.set(at('2026-01-01T05:30:00Z'));
    await fireSchedules(server.ctx.db, server.ctx, server.clock.now());
    expect(iso((await stored(id))[0]!)).toEqual({ start: '2026-01-01T06:00:00.000Z', end: '2026-01-01T06:30:00.000Z' });
    expect((await create(bob, beyondStored)).body).toMatchObject({ code: 'RESERVATION_CONFLICT' });
    // Between its windows the workers are free.
    expect((await create(alice, reserve(1, '2026-01-01T06:40:00Z', '2026-01-01T06:50:00Z'))).status).toBe(200);
  });
});

describe.each(dialects)('migration 0014-reserve-windows on %s', (dialect) => {
  let database: TestDatabase;
  afterEach(async () => {
    await database.drop();
  });

  it('stores the next 50 windows of each reserve schedule from its current or next one, and none for other schedules', async () => {
    const before = await createDatabaseBefore(dialect, '0014-reserve-windows');
    database = before.database;
    const db = before.db;
    await sql`insert into users (username, password_hash, role, created_at) values ('old-user', 'scrypt$x', 'user', 1)`.execute(db);
    const owner = (await sql<{ id: number }>`select id from users`.execute(db)).rows[0]!.id;
    const start = at('2030-01-01T00:00:00Z');
    const end = at('2030-03-01T00:00:00Z');
    const insert = (name: string, status: string, reserveCount: number | null) =>
      sql`
      insert into schedules (owner_id, name, start_time, end_time, status, cron_start, cron_stop, timezone, reserve_count, window_start, window_end, created_at, updated_at)
      values (${owner}, ${name}, ${start}, ${end}, ${status}, '0 * * * *', '30 * * * *', 'UTC', ${reserveCount}, ${start}, ${start + HOUR / 2}, 1, 1)`.execute(
        db,
      );
    await insert('reserve', 'scheduled', 2);
    await insert('cancelled reserve', 'cancelled', 2);
    await insert('plain', 'scheduled', null);
    await before.up();

    const rows = await database.handle.db.selectFrom('schedules').select(['name', 'reserve_windows']).orderBy('id').execute();
    const windows = JSON.parse(rows[0]!.reserve_windows!) as Window[];
    expect(windows).toHaveLength(50);
    expect(iso(windows[0]!)).toEqual({ start: '2030-01-01T00:00:00.000Z', end: '2030-01-01T00:30:00.000Z' });
    expect(iso(windows[49]!)).toEqual({ start: '2030-01-03T01:00:00.000Z', end: '2030-01-03T01:30:00.000Z' });
    expect(rows.slice(1)).toEqual([
      { name: 'cancelled reserve', reserve_windows: '[]' },
      { name: 'plain', reserve_windows: null },
    ]);
  });
});
