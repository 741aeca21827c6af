import { afterEach, describe, expect, it } from 'vitest';
import { dialects } from '../../test/databases.js';
import { addWorkers as addTestWorkers, userToken as signUpAndLogIn } from '../../test/leasing.js';
import { useTestServer, type TestServer } from '../../test/server.js';
import type { SshWorker } from '../../test/ssh-worker.js';
import type { Config } from '../config.js';
import { TASKS_LOOP } from '../loops.js';

const HOUR = 3_600_000;

describe.each(dialects)('rental quotas and rate limits on %s', (dialect) => {
  const suite = useTestServer(dialect, { loginRateLimitPerMinute: 10_000, workerProbeIntervalMs: 30_000, sshTimeoutMs: 5_000 });
  let server: TestServer;
  const workers: SshWorker[] = [];

  const start = async (overrides: Partial<Config> = {}) => {
    server = await suite.start(overrides);
  };
  const addWorkers = (count: number) => addTestWorkers(server, workers, count);
  const userToken = (username: string) => signUpAndLogIn(server, username);
  const rent = (token: string, body: Record<string, unknown>) => server.api.post('/api/rent', body, token);
  const extend = (token: string, id: number, hours: number) => server.api.post(`/api/extend/${id}`, { additional_hours: hours }, token);
  const release = (token: string, id: number) => server.api.post(`/api/release/${id}`, {}, token);
  const cleanUp = async () => {
    server.clock.advance(5_000);
    await server.loops.find((loop) => loop.name === TASKS_LOOP)!.runOnce();
  };
  const liveRentals = async (token: string) => (await server.api.get('/api/rentals?active=true', token)).body as { rental_id: number }[];

  afterEach(async () => {
    for (const worker of workers.splice(0)) await worker.stop();
  });

  it('refuses repeated /api/rent past USER_MAX_WORKERS with what is held, renting nothing; an admin is exempt', async () => {
    await start({ userMaxWorkers: 3 });
    await addWorkers(4);
    const alice = await userToken('alice');

    // An admin may hold every worker.
    const all = await rent(server.adminToken, { duration_hours: 2, count: 4 });
    expect(all.status).toBe(200);
    for (const rental of all.body) await release(server.adminToken, rental.rental_id);
    await cleanUp();

    expect((await rent(alice, { duration_hours: 2, count: 2 })).status).toBe(200);
    expect((await rent(alice, { duration_hours: 2 })).status).toBe(200);
    const fourth = await rent(alice, { duration_hours: 2 });
    expect(fourth.status).toBe(409);
    expect(fourth.body).toMatchObject({
      code: 'QUOTA_EXCEEDED',
      quota: 'USER_MAX_WORKERS',
      limit: 3,
      held: 3,
      detail: 'You hold 3 workers (USER_MAX_WORKERS 3); renting 1 worker for 2 hours would make 4: release 1 first or ask for fewer.',
    });
    expect(await liveRentals(alice)).toHaveLength(3);
    expect(workers.reduce((sum, worker) => sum + worker.accounts.size, 0)).toBe(3);

    // A released worker no longer counts.
    await release(alice, (await liveRentals(alice))[0]!.rental_id);
    expect((await rent(alice, { duration_hours: 2, count: 2 })).body).toMatchObject({ code: 'QUOTA_EXCEEDED', held: 2 });
    await cleanUp();
    expect((await rent(alice, { duration_hours: 2 })).status).toBe(200);
  });

  it("checks one user's rentals asked for at the same moment one after the other", async () => {
    await start({ userMaxWorkers: 1 });
    await addWorkers(3);
    const alice = await userToken('alice');
    const answers = await Promise.all([1, 2, 3].map(() => rent(alice, { duration_hours: 1 })));
    expect(answers.map((answer) => answer.status).sort()).toEqual([200, 409, 409]);
    expect(await liveRentals(alice)).toHaveLength(1);
  });

  it('counts worker-hours over any 7 days: an extension past USER_MAX_WORKER_HOURS_PER_WEEK is refused, released rentals count the time they were held; an admin is exempt', async () => {
    await start();
    await addWorkers(3);
    const alice = await userToken('alice');
    const rented = await rent(alice, { duration_hours: 100, count: 3 });
    expect(rented.status).toBe(200);
    const [first, second, third] = rented.body.map((rental: { rental_id: number }) => rental.rental_id);
    const leasedFrom = new Date(server.clock.now()).toISOString();

    const tooLong = await extend(alice, first, 40);
    expect(tooLong.status).toBe(409);
    expect(tooLong.body).toMatchObject({
      code: 'QUOTA_EXCEEDED',
      quota: 'USER_MAX_WORKER_HOURS_PER_WEEK',
      limit: 336,
      worker_hours: 340,
      span_start: leasedFrom,
      detail: `Extending rental ${first} by 40 hours would make 340 worker-hours in the 7 days from ${leasedFrom} (USER_MAX_WORKER_HOURS_PER_WEEK 336); your rentals and reserve windows already take 300 of them. Ask for fewer workers or hours.`,
    });
    expect((await extend(alice, first, 36)).status).toBe(200);
    // At the limit: one more hour of any rental is refused.
    expect((await extend(alice, second, 1)).body).toMatchObject({ code: 'QUOTA_EXCEEDED', worker_hours: 337 });
    const rentals = (await server.api.get('/api/rentals', alice)).body as { rental_id: number; leased_until: string }[];
    expect(rentals.find((rental) => rental.rental_id === second)!.leased_until).toBe(new Date(Date.parse(leasedFrom) + 100 * HOUR).toISOString());

    // Released after 10 hours, the third rental counts 10 worker-hours: 136 + 100 + 10 leave 90.
    server.clock.advance(10 * HOUR);
    await release(alice, third);
    await cleanUp();
    const refused = await rent(alice, { duration_hours: 91 });
    expect(refused.body).toMatchObject({ code: 'QUOTA_EXCEEDED', worker_hours: 337 });
    expect(refused.body.detail).toMatch(/^Renting 1 worker for 91 hours would make 337 worker-hours in the 7 days from .* already take 246 of them/);
    expect((await rent(alice, { duration_hours: 90 })).status).toBe(200);

    // An admin extends past the quota.
    expect((await extend(server.adminToken, second, 30)).status).toBe(200);
  });

  it('limits schedule and rental calls per user per minute with one budget across the routes: 429 with the number; other users keep theirs', async () => {
    await start({ userRateLimitPerMinute: 5 });
    const [alice, bob] = [await userToken('alice'), await userToken('bob')];
    const calls = ['/api/rentals', '/schedules', '/api/rentals?active=true', '/schedules', '/api/rentals', '/schedules', '/api/rentals', '/schedules'];
    const answers = await Promise.all(calls.map((path) => server.api.get(path, alice)));
    expect(answers.filter((answer) => answer.status === 200)).toHaveLength(5);
    const limited = answers.filter((answer) => answer.status === 429);
    expect(limited).toHaveLength(3);
    for (const answer of limited) {
      expect(answer.body).toMatchObject({ code: 'RATE_LIMITED', retry_after_seconds: expect.any(Number) });
      expect(answer.body.detail).toMatch(/^More than 5 schedule and rental calls in a minute \(USER_RATE_LIMIT_PER_MINUTE 5\); retry in \d+ seconds?\.$/);
      expect(Number(answer.headers.get('retry-after'))).toBeGreaterThan(0);
    }
    // Every route spends the same budget, writes too; nothing was created.
    const schedule = await server.api.post('/schedules', { name: 'late', start_time: '2026-02-01T00:00:00Z', end_time: '2026-02-01T01:00:00Z' }, alice);
    expect(schedule.body.code).toBe('RATE_LIMITED');
    expect((await rent(alice, { duration_hours: 1 })).status).toBe(429);
    expect((await server.api.get('/schedules', server.adminToken)).body).toEqual([]);

    for (let call = 0; call < 5; call += 1) expect((await server.api.get('/schedules', bob)).status).toBe(200);
    expect((await server.api.get('/api/rentals', bob)).status).toBe(429);
  });
});
