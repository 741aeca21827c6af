import { afterEach, describe, expect, it } from 'vitest';
import { dialects } from '../../test/databases.js';
import { addWorkers, userToken } from '../../test/leasing.js';
import { useTestServer, type TestServer } from '../../test/server.js';
import type { SshWorker } from '../../test/ssh-worker.js';
import type { Config } from '../config.js';
import { WEEK_MS } from '../rentals/quotas.js';
import { CHECKED_WINDOWS, reserveHoldings } from './reserve-checks.js';
import { fireSchedules } from './schedule-firing.service.js';
import { upcomingWindows, type WindowSpec } from './windows.js';

const HOUR = 3_600_000;
const at = (iso: string) => Date.parse(iso);
const hourly = { cron_start: '0 * * * *', cron_stop: '0 * * * *' };

describe('reserve holdings', () => {
  const spec = (cronStart: string, cronStop: string, endTime = at('2026-03-01T00:00:00Z')): WindowSpec => ({
    startTime: at('2026-01-01T01:00:00Z'),
    endTime,
    recurrence: { cronStart, cronStop, timezone: 'UTC' },
  });
  const workerHours = (holdings: { from: number; until: number; workers: number }[]) =>
    holdings.reduce((sum, holding) => sum + ((holding.until - holding.from) * holding.workers) / HOUR, 0);
  const now = at('2026-01-01T00:00:00Z');

  it.each([
    // 50 hourly windows, then the rest of the first week as if held throughout: exactly what the windows hold.
    { name: 'back-to-back hourly windows', spec: spec('0 * * * *', '0 * * * *'), hours: 168 },
    // A minute every minute: the first 50 minutes, then held throughout.
    { name: 'back-to-back minutes', spec: spec('* * * * *', '* * * * *'), hours: 168 },
    // Fewer than 50 windows in a week: only the windows.
    { name: 'nights from 22:00 to 06:00', spec: spec('0 22 * * *', '0 6 * * *'), hours: 50 * 8 },
    { name: 'hourly, but the schedule ends first', spec: spec('0 * * * *', '0 * * * *', at('2026-01-02T01:00:00Z')), hours: 24 },
  ])('$name', ({ spec: windowSpec, hours }) => {
    const windows = upcomingWindows(windowSpec, now, CHECKED_WINDOWS);
    expect(workerHours(reserveHoldings(windowSpec, windows, 1, now, null))).toBe(hours);
  });

  it('counts a started window from now, and leaves out the running one', () => {
    const windowSpec = spec('0 22 * * *', '0 6 * * *');
    const inside = at('2026-01-02T02:00:00Z');
    const windows = upcomingWindows(windowSpec, inside, 2);
    expect(reserveHoldings(windowSpec, windows, 3, inside, null)).toEqual([
      { from: inside, until: at('2026-01-02T06:00:00Z'), workers: 3 },
      { from: at('2026-01-02T22:00:00Z'), until: at('2026-01-03T06:00:00Z'), workers: 3 },
    ]);
    expect(reserveHoldings(windowSpec, windows, 3, inside, at('2026-01-01T22:00:00Z'))).toHaveLength(1);
    expect(WEEK_MS).toBe(168 * HOUR);
  });
});

describe.each(dialects)('reserve schedule quotas on %s', (dialect) => {
  const suite = useTestServer(dialect, { loginRateLimitPerMinute: 10_000, workerProbeIntervalMs: 30_000, tokenTtlMs: 30 * 24 * HOUR });
  let server: TestServer;
  const workers: SshWorker[] = [];

  const start = async (overrides: Partial<Config> = {}) => {
    server = await suite.start(overrides);
  };
  const create = (token: string, body: Record<string, unknown>) => server.api.post('/schedules', body, token);
  const reserve = (count: number, start_time: string, end_time: string, extra: Record<string, unknown> = {}) => ({
    name: `reserve ${count}`,
    start_time,
    end_time,
    action: { kind: 'reserve', count },
    ...extra,
  });
  const patch = (token: string, id: number, body: Record<string, unknown>) => server.api.request('PATCH', `/schedules/${id}`, { body, token });
  const fire = () => fireSchedules(server.ctx.db, server.ctx, server.clock.now());
  const planned = async (ownerId: number) =>
    Number(
      (
        await server.ctx.db
          .selectFrom('schedules')
          .select((eb) => eb.fn.countAll<number>().as('n'))
          .where('owner_id', '=', ownerId)
          .where('status', 'in', ['scheduled', 'running'])
          .executeTakeFirstOrThrow()
      ).n,
    );

  afterEach(async () => {
    for (const worker of workers.splice(0)) await worker.stop();
  });

  it('refuses back-to-back hourly reserve windows until 2031: the span first, then the weekly worker-hours; an admin is exempt', async () => {
    await start();
    await addWorkers(server, workers, 2);
    const mallory = await userToken(server, 'mallory');

    const until2031 = await create(mallory, reserve(10, '2026-01-01T01:00:00Z', '2031-01-01T00:00:00Z', hourly));
    expect(until2031.status).toBe(409);
    expect(until2031.body).toMatchObject({
      code: 'QUOTA_EXCEEDED',
      quota: 'RESERVE_MAX_SPAN_DAYS',
      limit: 90,
      detail:
        'A reserve schedule may span at most 90 days from start_time to end_time (RESERVE_MAX_SPAN_DAYS 90); this one spans 1826 days. Move end_time earlier.',
    });
    // Within the span, the windows of the first week hold 10 workers all the time: 1,680 worker-hours.
    const tenAllWeek = await create(mallory, reserve(10, '2026-01-01T01:00:00Z', '2026-03-01T00:00:00Z', hourly));
    expect(tenAllWeek.body).toMatchObject({
      code: 'QUOTA_EXCEEDED',
      quota: 'USER_MAX_WORKER_HOURS_PER_WEEK',
      worker_hours: 1680,
      span_start: '2026-01-01T01:00:00.000Z',
    });
    expect(tenAllWeek.body.detail).toBe(
      'This reserve schedule would make 1680 worker-hours in the 7 days from 2026-01-01T01:00:00.000Z (USER_MAX_WORKER_HOURS_PER_WEEK 336); your rentals and reserve windows already take 0 of them. Ask for fewer workers or hours.',
    );
    expect((await create(mallory, reserve(3, '2026-01-01T01:00:00Z', '2026-03-01T00:00:00Z', hourly))).body).toMatchObject({
      code: 'QUOTA_EXCEEDED',
      worker_hours: 504,
    });
    expect((await server.api.get('/schedules', mallory)).body).toEqual([]);
    // Two workers all week is the whole quota, and nothing more fits beside it.
    expect((await create(mallory, reserve(2, '2026-01-01T01:00:00Z', '2026-03-01T00:00:00Z', hourly))).status).toBe(200);
    expect((await create(mallory, reserve(1, '2026-01-05T00:00:00Z', '2026-01-05T01:00:00Z'))).body).toMatchObject({
      code: 'QUOTA_EXCEEDED',
      quota: 'USER_MAX_WORKER_HOURS_PER_WEEK',
    });
    // Changing the schedule's end is checked too.
    const id = (await server.api.get('/schedules', mallory)).body[0].id;
    expect((await patch(mallory, id, { end_time: '2027-01-01T00:00:00Z' })).body).toMatchObject({ code: 'QUOTA_EXCEEDED', quota: 'RESERVE_MAX_SPAN_DAYS' });

    const admin = await create(server.adminToken, reserve(2, '2026-04-01T00:00:00Z', '2031-01-01T00:00:00Z', hourly));
    expect(admin.status).toBe(200);
  });

  it('refuses a 101st schedule scheduled or running, and planning a cancelled one again at the limit; an admin is exempt', async () => {
    await start();
    const alice = await userToken(server, 'alice');
    const aliceId = (await server.ctx.db.selectFrom('users').select('id').where('username', '=', 'alice').executeTakeFirstOrThrow()).id;
    const plain = (index: number) => ({ name: `entry ${index}`, start_time: '2026-02-01T00:00:00Z', end_time: '2026-02-01T01:00:00Z' });
    const ids: number[] = [];
    for (let index = 0; index < 100; index += 1) {
      const created = await create(alice, plain(index));
      expect(created.status).toBe(200);
      ids.push(created.body.id);
    }
    const refused = await create(alice, plain(100));
    expect(refused.status).toBe(409);
    expect(refused.body).toMatchObject({
      code: 'QUOTA_EXCEEDED',
      quota: 'MAX_SCHEDULES_PER_USER',
      limit: 100,
      schedules: 100,
      detail: 'You have 100 schedules scheduled or running (MAX_SCHEDULES_PER_USER 100); delete or cancel one first.',
    });
    expect(await planned(aliceId)).toBe(100);

    expect((await patch(alice, ids[0]!, { status: 'cancelled' })).status).toBe(200);
    expect((await create(alice, plain(101))).status).toBe(200);
    expect((await patch(alice, ids[0]!, { status: 'scheduled' })).body).toMatchObject({ code: 'QUOTA_EXCEEDED', quota: 'MAX_SCHEDULES_PER_USER' });
    expect((await patch(alice, ids[1]!, { name: 'renamed' })).status).toBe(200);
    expect(await planned(aliceId)).toBe(100);

    for (let index = 0; index < 101; index += 1) expect((await create(server.adminToken, plain(index))).status).toBe(200);
  }, 60_000);

  it("checks a reserve schedule against the owner's rentals and other schedules, and each window again as it opens", async () => {
    await start({ userMaxWorkers: 3, userMaxWorkerHoursPerWeek: 10 });
    await addWorkers(server, workers, 3);
    const alice = await userToken(server, 'alice');

    // Eight hourly windows of one worker: 8 of the 10 worker-hours.
    const hours = await create(alice, reserve(1, '2026-01-01T01:00:00Z', '2026-01-01T09:00:00Z', hourly));
    expect(hours.status).toBe(200);
    const id = hours.body.id;
    const crowded = await create(alice, reserve(3, '2026-01-01T01:00:00Z', '2026-01-01T02:00:00Z'));
    expect(crowded.body).toMatchObject({ code: 'QUOTA_EXCEEDED', quota: 'USER_MAX_WORKERS', held: 1, at: '2026-01-01T01:00:00.000Z' });
    expect(crowded.body.detail).toBe(
      'At 2026-01-01T01:00:00.000Z you will hold 1 worker with your rentals and reserve schedules (USER_MAX_WORKERS 3); this reserve schedule would add 3 then, making 4.',
    );

    // /api/rent counts the windows each schedule shows (its next 5): 5 + 6 hours is too much, 5 + 4 is not.
    const long = await server.api.post('/api/rent', { duration_hours: 6 }, alice);
    expect(long.body).toMatchObject({ code: 'QUOTA_EXCEEDED', quota: 'USER_MAX_WORKER_HOURS_PER_WEEK', worker_hours: 11 });
    expect((await server.api.post('/api/rent', { duration_hours: 4 }, alice)).status).toBe(200);

    // Each window's rentals are checked as it opens, with what was rented since: the third no longer fits.
    for (const hour of ['01', '02', '03']) {
      server.clock.set(at(`2026-01-01T${hour}:00:00Z`));
      await fire();
    }
    const failed = await server.ctx.db.selectFrom('events').selectAll().where('kind', '=', 'schedule.reserve_failed').execute();
    expect(failed).toHaveLength(1);
    expect(JSON.parse(failed[0]!.data!)).toMatchObject({ code: 'QUOTA_EXCEEDED' });
    expect(JSON.parse(failed[0]!.data!).detail).toMatch(new RegExp(`^Schedule ${id}'s window of 1 worker would make 11 worker-hours in the 7 days from`));
    const made = await server.ctx.db.selectFrom('rentals').select(['leased_from', 'state']).where('schedule_id', '=', id).orderBy('id').execute();
    expect(made.map((rental) => new Date(rental.leased_from).toISOString())).toEqual(['2026-01-01T01:00:00.000Z', '2026-01-01T02:00:00.000Z']);
  });
});
