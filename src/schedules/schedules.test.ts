import { afterEach, describe, expect, it } from 'vitest';
import { dialects } from '../../test/databases.js';
import { addWorkers, userToken } from '../../test/leasing.js';
import { makeAssets, registerNode, startTestServer, useTestServer, type TestServer } from '../../test/server.js';
import { sshLogin, type SshWorker } from '../../test/ssh-worker.js';
import type { Config } from '../config.js';
import { TASKS_LOOP } from '../loops.js';
import { fireSchedules } from './schedule-firing.service.js';

const HOUR = 3_600_000;
const MINUTE = 60_000;
const at = (iso: string) => Date.parse(iso);

describe.each(dialects)('schedules on %s', (dialect) => {
  const options: Partial<Config> = { loginRateLimitPerMinute: 10_000, workerProbeIntervalMs: 30_000, tokenTtlMs: 30 * 24 * HOUR };
  const suite = useTestServer(dialect, options);
  let server: TestServer;
  let others: TestServer[] = [];
  const workers: SshWorker[] = [];

  const start = async () => {
    server = await suite.start();
  };
  const fire = (target = server) => fireSchedules(target.ctx.db, target.ctx, target.clock.now());
  const events = async (kind: string) => server.ctx.db.selectFrom('events').selectAll().where('kind', '=', kind).execute();
  const create = (token: string, body: Record<string, unknown>) => server.api.post('/schedules', body, token);
  const view = async (id: number, token = server.adminToken) => (await server.api.get(`/schedules/${id}`, token)).body;

  afterEach(async () => {
    for (const worker of workers.splice(0)) await worker.stop();
    for (const other of others.splice(0)) await other.stop();
  });

  it('refuses a cron pair that never recurs, and lists schedules from their stored windows without searching them again', async () => {
    await start();
    const mallory = await userToken(server, 'mallory');
    const never = await create(mallory, {
      name: 'never',
      start_time: '2026-01-01T00:00:00Z',
      end_time: '2031-01-01T00:00:00Z',
      cron_start: '0 0 * * *',
      cron_stop: '0 0 31 2 *',
    });
    expect(never.status).toBe(422);
    expect(never.body.detail).toMatch(/cron_stop "0 0 31 2 \*" has no occurrence in the two years after/);
    const rare = await create(mallory, {
      name: 'rare',
      start_time: '2026-01-01T00:00:00Z',
      end_time: '2031-01-01T00:00:00Z',
      cron_start: '0 0 30 2 *',
      cron_stop: '0 1 * * *',
    });
    expect(rare.status).toBe(422);
    const nightly = await create(mallory, {
      name: 'nightly',
      start_time: '2026-01-01T00:00:00Z',
      end_time: '2031-01-01T00:00:00Z',
      cron_start: '0 22 * * *',
      cron_stop: '0 6 * * *',
    });
    expect(nightly.status).toBe(200);
    const stored = await server.ctx.db.selectFrom('schedules').select('next_windows').where('id', '=', nightly.body.id).executeTakeFirstOrThrow();
    expect(JSON.parse(stored.next_windows)).toHaveLength(5);
    // What the list shows is what was stored: it computes nothing per schedule.
    const marker = [{ start: at('2030-01-01T00:00:00Z'), end: at('2030-01-01T01:00:00Z') }];
    await server.ctx.db
      .updateTable('schedules')
      .set({ next_windows: JSON.stringify(marker) })
      .where('id', '=', nightly.body.id)
      .execute();
    const [listed] = (await server.api.get('/schedules', mallory)).body;
    expect(listed.next_windows).toEqual([{ start: '2030-01-01T00:00:00.000Z', end: '2030-01-01T01:00:00.000Z' }]);
  });

  it("keeps seed 004's contract: create, list, delete, 404 for an unknown id", async () => {
    await start();
    const alice = await userToken(server, 'alice');
    const created = await create(alice, {
      name: 'Backup Database',
      start_time: '2026-04-20T10:00:00',
      end_time: '2026-04-20T11:00:00',
      status: 'scheduled',
      active: true,
    });
    expect(created.status).toBe(200);
    expect(created.body).toMatchObject({ status: 'created', id: expect.any(Number) });
    const list = (await server.api.get('/schedules', alice)).body;
    expect(list).toHaveLength(1);
    // Times without an offset are UTC.
    expect(list[0]).toMatchObject({
      id: created.body.id,
      name: 'Backup Database',
      start_time: '2026-04-20T10:00:00.000Z',
      end_time: '2026-04-20T11:00:00.000Z',
      status: 'scheduled',
      active: true,
    });
    expect(list[0].next_windows).toEqual([{ start: '2026-04-20T10:00:00.000Z', end: '2026-04-20T11:00:00.000Z' }]);
    const withOffset = await create(alice, { name: 'Paris', start_time: '2026-04-20T10:00:00+02:00', end_time: '2026-04-20T11:00:00+02:00' });
    expect((await view(withOffset.body.id, alice)).start_time).toBe('2026-04-20T08:00:00.000Z');

    expect(await server.api.request('DELETE', `/schedules/${created.body.id}`, { token: alice })).toMatchObject({ status: 200, body: { status: 'deleted' } });
    expect((await server.api.request('DELETE', `/schedules/${created.body.id}`, { token: alice })).status).toBe(404);
    expect((await server.api.get(`/schedules/${created.body.id}`, alice)).status).toBe(404);
    expect((await server.api.get('/schedules', alice)).body).toHaveLength(1);
  });

  it('refuses invalid schedules with a detail and changes nothing; users see only their own', async () => {
    await start();
    const alice = await userToken(server, 'alice');
    const bob = await userToken(server, 'bob');
    const base = { name: 'window', start_time: '2026-02-01T00:00:00Z', end_time: '2026-03-01T00:00:00Z' };
    const cases: [Record<string, unknown>, RegExp][] = [
      [{ ...base, name: undefined }, /name/],
      [{ ...base, name: '' }, /name/],
      [{ ...base, end_time: '2026-01-15T00:00:00Z' }, /end_time must be after start_time/],
      [{ ...base, start_time: 'tomorrow' }, /start_time must be an ISO 8601/],
      [{ ...base, start_time: '2026-02-30T00:00:00' }, /start_time must be an ISO 8601/],
      [{ ...base, start_time: 20260201 }, /start_time/],
      [{ ...base, status: 'running' }, /set by Dispatcher/],
      [{ ...base, status: 'paused' }, /status must be one of/],
      [{ ...base, active: 'yes' }, /active/],
      [{ ...base, cron_start: '0 22 * * *' }, /go together/],
      [{ ...base, cron_start: '0 0 22 * * *', cron_stop: '0 6 * * *' }, /standard 5-field cron.*6 fields/],
      [{ ...base, cron_start: '61 22 * * *', cron_stop: '0 6 * * *' }, /cron_start "61 22 \* \* \*" is not a valid cron expression/],
      [{ ...base, cron_start: '0 22 * * *', cron_stop: '0 6 * * *', timezone: 'Mars/Olympus' }, /IANA time zone/],
      [{ ...base, action: { kind: 'reserve', count: 0 } }, /count/],
      [{ ...base, action: { kind: 'teleport' } }, /action/],
    ];
    for (const [body, detail] of cases) {
      const response = await create(alice, body);
      expect(response.status, JSON.stringify(body)).toBe(422);
      expect(response.body.detail, JSON.stringify(body)).toMatch(detail);
    }
    expect((await create(alice, { ...base, action: { kind: 'node-window', node: 'somewhere' } })).status).toBe(403);
    expect((await server.api.post('/schedules', base)).status).toBe(401);
    expect((await server.api.get('/schedules', alice)).body).toEqual([]);

    const own = (await create(alice, base)).body.id;
    expect((await server.api.get(`/schedules/${own}`, bob)).status).toBe(404);
    expect((await server.api.request('PATCH', `/schedules/${own}`, { body: { name: 'mine now' }, token: bob })).status).toBe(404);
    expect((await server.api.request('DELETE', `/schedules/${own}`, { token: bob })).status).toBe(404);
    expect((await server.api.get('/schedules', bob)).body).toEqual([]);
    expect((await server.api.get('/schedules', server.adminToken)).body.map((entry: { id: number }) => entry.id)).toEqual([own]);
    expect((await view(own, alice)).name).toBe('window');
  });

  it('runs a window scheduled → running → completed, each transition once; a suspended or deleted window ends first', async () => {
    await start();
    const alice = await userToken(server, 'alice');
    const id = (await create(alice, { name: 'one hour', start_time: '2026-01-01T01:00:00Z', end_time: '2026-01-01T02:00:00Z' })).body.id;
    await fire();
    expect((await view(id)).status).toBe('scheduled');
    server.clock.set(at('2026-01-01T01:00:00Z'));
    expect(await fire()).toMatchObject({ started: 1 });
    expect(await fire()).toMatchObject({ started: 0 });
    expect((await view(id)).status).toBe('running');
    server.clock.set(at('2026-01-01T02:00:05Z'));
    expect(await fire()).toMatchObject({ ended: 1, started: 0 });
    expect((await view(id)).status).toBe('completed');
    expect(await events('schedule.started')).toHaveLength(1);
    expect(await events('schedule.completed')).toHaveLength(1);
    expect(JSON.parse((await events('schedule.started'))[0]!.data!)).toMatchObject({ late: false, late_ms: 0 });

    // Suspended while running: the window's effect ends; active again, it waits for its next window.
    const daily = (
      await create(alice, {
        name: 'daily',
        start_time: '2026-01-02T00:00:00Z',
        end_time: '2026-01-10T00:00:00Z',
        cron_start: '0 8 * * *',
        cron_stop: '0 9 * * *',
      })
    ).body.id;
    server.clock.set(at('2026-01-02T08:00:00Z'));
    await fire();
    expect((await view(daily)).status).toBe('running');
    const suspended = await server.api.request('PATCH', `/schedules/${daily}`, { body: { active: false }, token: alice });
    expect(suspended.body).toMatchObject({ status: 'scheduled', active: false });
    // Resumed inside the window, the window starts again; the next pass after it ends goes on with the next day's.
    const resumed = await server.api.request('PATCH', `/schedules/${daily}`, { body: { active: true }, token: alice });
    expect(resumed.body).toMatchObject({ status: 'scheduled', active: true, window: { start: '2026-01-02T08:00:00.000Z', end: '2026-01-02T09:00:00.000Z' } });
    server.clock.set(at('2026-01-03T08:30:00Z'));
    expect(await fire()).toMatchObject({ missed: 1, started: 1 });
    expect(await view(daily)).toMatchObject({ status: 'running', window: { start: '2026-01-03T08:00:00.000Z', end: '2026-01-03T09:00:00.000Z' } });
    expect((await server.api.request('DELETE', `/schedules/${daily}`, { token: alice })).body).toEqual({ status: 'deleted' });
    expect(await events('schedule.cancelled')).toHaveLength(1);
  });

  it('fires each transition exactly once with two instances, and catches up after a restart, recorded as late', async () => {
    await start();
    // Several instances share a database only on PostgreSQL; on SQLite, two passes race in one instance.
    const second = dialect === 'postgres' ? await startTestServer(suite.database, options, server.clock) : server;
    if (second !== server) others.push(second);
    const alice = await userToken(server, 'alice');
    const ids = [];
    for (let index = 0; index < 5; index += 1) {
      ids.push((await create(alice, { name: `w${index}`, start_time: '2026-01-01T01:00:00Z', end_time: '2026-01-01T02:00:00Z' })).body.id);
    }
    server.clock.set(at('2026-01-01T01:00:00Z'));
    const [one, two] = await Promise.all([fire(server), fire(second)]);
    expect(one!.started + two!.started).toBe(5);
    server.clock.set(at('2026-01-01T02:00:00Z'));
    const [three, four] = await Promise.all([fire(server), fire(second)]);
    expect(three!.completed + three!.ended + four!.completed + four!.ended).toBe(5);
    expect(await events('schedule.started')).toHaveLength(5);
    expect(await events('schedule.completed')).toHaveLength(5);

    // A restart that slept through a start, and one that slept through a whole window.
    const late = (await create(alice, { name: 'late', start_time: '2026-01-01T03:00:00Z', end_time: '2026-01-01T05:00:00Z' })).body.id;
    const missed = (await create(alice, { name: 'missed', start_time: '2026-01-01T03:00:00Z', end_time: '2026-01-01T04:00:00Z' })).body.id;
    await server.stop();
    if (second !== server) await second.stop();
    others = [];
    server.clock.set(at('2026-01-01T04:30:00Z'));
    server = await suite.start({}, server.clock);
    await fire();
    expect((await view(late)).status).toBe('running');
    expect(JSON.parse((await events('schedule.started')).at(-1)!.data!)).toMatchObject({ late: true, late_ms: 90 * MINUTE });
    expect((await view(missed)).status).toBe('completed');
    expect(JSON.parse((await events('schedule.window_missed'))[0]!.data!)).toMatchObject({ late: true, window_start: at('2026-01-01T03:00:00Z') });
  });

  it('opens recurring windows at wall-clock times in their time zone, across a daylight-saving change', async () => {
    await start();
    server.clock.set(at('2026-03-27T12:00:00Z'));
    const alice = await userToken(server, 'alice');
    const night = await create(alice, {
      name: 'nights in Berlin',
      start_time: '2026-03-27T00:00:00Z',
      end_time: '2026-04-01T00:00:00Z',
      cron_start: '0 22 * * *',
      cron_stop: '0 6 * * *',
      timezone: 'Europe/Berlin',
    });
    expect(night.status).toBe(200);
    // 22:00 CET is 21:00Z; on the night of 28–29 March clocks jump to summer time: 06:00 CEST is 04:00Z (a 7-hour night).
    expect(night.body.schedule.next_windows.slice(0, 3)).toEqual([
      { start: '2026-03-27T21:00:00.000Z', end: '2026-03-28T05:00:00.000Z' },
      { start: '2026-03-28T21:00:00.000Z', end: '2026-03-29T04:00:00.000Z' },
      { start: '2026-03-29T20:00:00.000Z', end: '2026-03-30T04:00:00.000Z' },
    ]);
    // 02:30 does not exist on 29 March in Berlin: that window opens when the clocks jump (03:00 CEST, 01:00Z).
    const gap = await create(alice, {
      name: 'gap',
      start_time: '2026-03-28T12:00:00Z',
      end_time: '2026-03-31T00:00:00Z',
      cron_start: '30 2 * * *',
      cron_stop: '30 4 * * *',
      timezone: 'Europe/Berlin',
    });
    expect(gap.body.schedule.next_windows[0]).toEqual({ start: '2026-03-29T01:00:00.000Z', end: '2026-03-29T02:30:00.000Z' });
    const id = night.body.id;
    server.clock.set(at('2026-03-28T21:00:00Z'));
    await fire();
    expect((await view(id, alice)).status).toBe('running');
    server.clock.set(at('2026-03-29T03:59:59Z'));
    await fire();
    expect((await view(id, alice)).status).toBe('running');
    server.clock.set(at('2026-03-29T04:00:00Z'));
    await fire();
    expect(await view(id, alice)).toMatchObject({ status: 'scheduled', window: { start: '2026-03-29T20:00:00.000Z', end: '2026-03-30T04:00:00.000Z' } });
  });

  it('reserves workers: conflicts are refused at creation, rentals are made at the start for the owner and ended at the end', async () => {
    await start();
    await addWorkers(server, workers, 2);
    const alice = await userToken(server, 'alice');
    const bob = await userToken(server, 'bob');
    const reserve = await create(alice, {
      name: 'training',
      start_time: '2026-01-01T01:00:00Z',
      end_time: '2026-01-01T03:00:00Z',
      action: { kind: 'reserve', count: 2 },
    });
    expect(reserve.status).toBe(200);
    expect(reserve.body.ssh_password).toHaveLength(20);
    const id = reserve.body.id;

    const conflict = await create(bob, {
      name: 'mine',
      start_time: '2026-01-01T02:00:00Z',
      end_time: '2026-01-01T04:00:00Z',
      action: { kind: 'reserve', count: 1 },
    });
    expect(conflict.status).toBe(409);
    expect(conflict.body).toMatchObject({ code: 'RESERVATION_CONFLICT', short: 1, window_start: '2026-01-01T02:00:00.000Z' });
    expect(conflict.body.detail).toMatch(/only 0 are available \(2 registered, 2 reserved by other schedules, 0 rented\): 1 short/);
    // A rental that would run into the reserved window is refused; one that ends before it is fine.
    const overlapping = await server.api.post('/api/rent', { duration_hours: 2 }, bob);
    expect(overlapping.body).toMatchObject({ code: 'NOT_ENOUGH_WORKERS', free: 0 });
    expect(overlapping.body.detail).toMatch(/2 more are reserved by schedules/);
    const short = await server.api.post('/api/rent', { duration_hours: 0.5 }, bob);
    expect(short.status).toBe(200);
    server.clock.advance(31 * MINUTE);
    await server.loops.find((loop) => loop.name === 'expire-rentals')!.runOnce();
    await server.loops.find((loop) => loop.name === TASKS_LOOP)!.runOnce();

    server.clock.set(at('2026-01-01T01:00:00Z'));
    expect(await fire()).toMatchObject({ started: 1 });
    const running = await view(id, alice);
    expect(running.status).toBe('running');
    expect(running.rentals).toHaveLength(2);
    expect(
      running.rentals.every(
        (rental: { state: string; leased_until: string }) => rental.state === 'active' && rental.leased_until === '2026-01-01T03:00:00.000Z',
      ),
    ).toBe(true);
    const rentals = (await server.api.get('/api/rentals?active=true', alice)).body;
    expect(rentals).toHaveLength(2);
    for (const rental of rentals) expect(await sshLogin(rental.ssh_port, rental.client_user, reserve.body.ssh_password)).toBe(rental.client_user);

    server.clock.set(at('2026-01-01T03:00:00Z'));
    await fire();
    expect((await view(id, alice)).rentals.map((rental: { state: string }) => rental.state)).toEqual(['ended', 'ended']);
    await server.loops.find((loop) => loop.name === TASKS_LOOP)!.runOnce();
    expect(workers.map((worker) => worker.accounts.size)).toEqual([0, 0]);
  });

  it('gives a node new allocations only inside its node windows, with leases that end with the window', async () => {
    await start();
    const node = await registerNode(server, 'nightly');
    await server.api.post('/assets', makeAssets(3), server.adminToken);
    const window = await create(server.adminToken, {
      name: 'lent at night',
      start_time: '2026-01-01T01:00:00Z',
      end_time: '2026-01-01T02:00:00Z',
      action: { kind: 'node-window', node: 'nightly' },
    });
    expect(window.status).toBe(200);
    const allocate = () => server.api.post('/allocate', { free_space_gb: 100, node_id: 'nightly', max_assets: 1 }, node.token);

    const before = await allocate();
    expect(before.status).toBe(409);
    expect(before.body.code).toBe('OUTSIDE_NODE_WINDOW');
    // The boundary holds even before the schedule loop has run.
    server.clock.set(at('2026-01-01T01:00:00Z'));
    const inside = await allocate();
    expect(inside.status).toBe(200);
    const allocation = (await server.api.get('/allocations?node=nightly', server.adminToken)).body.items[0];
    expect(Date.parse(allocation.expires_at)).toBe(at('2026-01-01T02:00:00Z'));
    server.clock.set(at('2026-01-01T02:00:00Z'));
    expect((await allocate()).body.code).toBe('OUTSIDE_NODE_WINDOW');

    // Without node windows the node is free again.
    await server.api.request('DELETE', `/schedules/${window.body.id}`, { token: server.adminToken });
    expect((await allocate()).status).toBe(200);
  });
});
