import { SignJWT } from 'jose';
import { afterEach, describe, expect, it } from 'vitest';
import { dialects } from '../../test/databases.js';
import { addWorkers as addTestWorkers, userToken as signUpAndLogIn } from '../../test/leasing.js';
import { useTestServer, type TestServer } from '../../test/server.js';
import { sshLogin, type SshWorker } from '../../test/ssh-worker.js';
import type { Config } from '../config.js';
import { RENTAL_EXPIRY_LOOP, TASKS_LOOP, WORKER_CHECK_LOOP } from '../loops.js';

const HOUR = 3_600_000;
const PROBE_EVERY = 30_000;

describe.each(dialects)('worker leasing on %s', (dialect) => {
  const suite = useTestServer(dialect, {
    loginRateLimitPerMinute: 10_000,
    workerProbeIntervalMs: PROBE_EVERY,
    workerProbeFailures: 3,
    taskRetryBaseMs: 10_000,
    taskMaxAttempts: 3,
    sshTimeoutMs: 5_000,
  });
  let server: TestServer;
  const workers: SshWorker[] = [];

  const start = async (overrides: Partial<Config> = {}) => {
    server = await suite.start(overrides);
  };
  const runLoop = async (name: string) => {
    // Each pass is due one interval after the last: move the clock past it, then run it.
    server.clock.advance(name === WORKER_CHECK_LOOP ? PROBE_EVERY : name === TASKS_LOOP ? 5_000 : 30_000);
    expect(await server.loops.find((loop) => loop.name === name)!.runOnce()).toBe(true);
  };
  const addWorkers = (count: number) => addTestWorkers(server, workers, count);
  const userToken = (username: string) => signUpAndLogIn(server, username);
  const rent = (token: string, body: Record<string, unknown> = { duration_hours: 2 }) => server.api.post('/api/rent', body, token);
  const rentalCount = async () => (await server.api.get('/api/rentals', server.adminToken)).body.length;
  const events = async (kind: string) => await server.ctx.db.selectFrom('events').selectAll().where('kind', '=', kind).execute();

  afterEach(async () => {
    for (const worker of workers.splice(0)) await worker.stop();
  });

  it('rents a worker whose credentials log in over SSH, then stop working once released; the worker is rented again only after its cleanup', async () => {
    await start();
    const [first] = await addWorkers(2);
    const alice = await userToken('alice');
    const bob = await userToken('bob');

    const rented = await rent(alice, { duration_hours: 2, count: 1 });
    expect(rented.status).toBe(200);
    expect(rented.body).toHaveLength(1);
    const rental = rented.body[0];
    expect(rental).toMatchObject({ host_ip: '127.0.0.1', ssh_port: first!.worker.port, leased_until: new Date(server.clock.now() + 2 * HOUR).toISOString() });
    expect(rental.client_user).toMatch(/^rent_[a-z0-9]{8}$/);
    expect(rental.client_pass).toHaveLength(20);
    expect(await sshLogin(rental.ssh_port, rental.client_user, rental.client_pass)).toBe(rental.client_user);
    await expect(sshLogin(rental.ssh_port, rental.client_user, 'wrong-password')).rejects.toThrow();

    // The renter sees the worker with its lease; another user sees nothing of it.
    const aliceNodes = (await server.api.get('/api/nodes', alice)).body;
    expect(aliceNodes).toHaveLength(1);
    expect(aliceNodes[0]).toMatchObject({
      node_id: first!.id,
      hostname: first!.name,
      ssh_port: first!.worker.port,
      status: expect.any(String),
      allocated: true,
    });
    expect(aliceNodes[0].lease).toMatchObject({ rental_id: rental.rental_id, active: true, leased_until: rental.leased_until });
    expect((await server.api.get('/api/nodes', bob)).body).toEqual([]);

    // Someone else's rental is "not found", like an unknown one.
    expect((await server.api.post(`/api/release/${rental.rental_id}`, {}, bob)).status).toBe(404);
    expect((await server.api.post(`/api/extend/${rental.rental_id}`, { additional_hours: 1 }, bob)).status).toBe(404);
    expect((await server.api.get(`/api/rentals/${rental.rental_id}`, bob)).status).toBe(404);

    const released = await server.api.post(`/api/release/${rental.rental_id}`, {}, alice);
    expect(released).toMatchObject({ status: 200, body: { message: 'Lease released' } });
    expect((await server.api.post(`/api/release/${rental.rental_id}`, {}, alice)).body.code).toBe('RENTAL_ENDED');

    // Until its cleanup ran, the released worker is not rentable.
    const tooMany = await rent(bob, { duration_hours: 1, count: 2 });
    expect(tooMany.status).toBe(503);
    expect(tooMany.body).toMatchObject({ code: 'NOT_ENOUGH_WORKERS', free: 1 });
    expect(tooMany.body.detail).toMatch(/2 workers requested, 1 free/);

    await runLoop(TASKS_LOOP);
    expect(first!.worker.accounts.size).toBe(0);
    await expect(sshLogin(rental.ssh_port, rental.client_user, rental.client_pass)).rejects.toThrow(/authentication/i);
    expect((await rent(bob, { duration_hours: 1, count: 2 })).status).toBe(200);
    expect(await events('rental.ended')).toHaveLength(1);
    expect(await events('worker.cleaned')).toHaveLength(1);
  });

  it('ends rentals at their end time and refuses extensions past RENT_MAX_HOURS with the longest one possible', async () => {
    await start({ rentMaxMs: 10 * HOUR });
    const [worker] = await addWorkers(1);
    const alice = await userToken('alice');
    const rental = (await rent(alice, { duration_hours: 2, ssh_password: 'Correct-Horse-9-battery' })).body[0];
    expect(rental.client_pass).toBe('Correct-Horse-9-battery');

    const tooLong = await server.api.post(`/api/extend/${rental.rental_id}`, { additional_hours: 9 }, alice);
    expect(tooLong.status).toBe(409);
    expect(tooLong.body).toMatchObject({ code: 'EXTENSION_TOO_LONG', max_additional_hours: 8 });
    const leasedFrom = server.clock.now() - PROBE_EVERY * 0;
    const extended = await server.api.post(`/api/extend/${rental.rental_id}`, { additional_hours: 3 }, alice);
    expect(extended.body).toEqual({ lease_id: rental.rental_id, new_end_at: new Date(leasedFrom + 5 * HOUR).toISOString() });

    server.clock.advance(5 * HOUR - 60_000);
    await runLoop(RENTAL_EXPIRY_LOOP);
    expect((await server.api.get(`/api/rentals/${rental.rental_id}`, alice)).body.state).toBe('active');
    expect(await sshLogin(worker!.worker.port, rental.client_user, rental.client_pass)).toBe(rental.client_user);

    await runLoop(RENTAL_EXPIRY_LOOP);
    await runLoop(RENTAL_EXPIRY_LOOP);
    const ended = (await server.api.get(`/api/rentals/${rental.rental_id}`, alice)).body;
    expect(ended).toMatchObject({ state: 'ended', active: false, end_reason: 'expired' });
    expect((await server.api.post(`/api/extend/${rental.rental_id}`, { additional_hours: 1 }, alice)).body.code).toBe('RENTAL_ENDED');
    await runLoop(TASKS_LOOP);
    await expect(sshLogin(worker!.worker.port, rental.client_user, rental.client_pass)).rejects.toThrow(/authentication/i);
    // Every lease ends exactly once, with its event.
    expect(await events('rental.ended')).toHaveLength(1);
  });

  it('refuses a worker that presents another host key than the pinned one, and quarantines it', async () => {
    await start();
    const [node] = await addWorkers(1);
    await node!.worker.stop();
    await node!.worker.restart({ newHostKey: true });
    const alice = await userToken('alice');

    const refused = await rent(alice);
    expect(refused.status).toBe(503);
    expect(refused.body.code).toBe('PROVISIONING_FAILED');
    expect(refused.body.detail).toMatch(/host key/);
    expect(node!.worker.commands).toEqual([]);
    const view = (await server.api.get('/api/nodes', server.adminToken)).body.find((entry: { node_id: number }) => entry.node_id === node!.id);
    expect(view).toMatchObject({ quarantined: true, quarantine_reason: 'host key changed' });
    expect(await events('worker.host_key_changed')).toHaveLength(1);
    expect((await rent(alice)).body.code).toBe('NOT_ENOUGH_WORKERS');

    // The agent re-registering with the new key cannot re-pin it; an admin can.
    const body = { hostname: node!.name, node_id: node!.name, ssh_port: node!.worker.port, ssh_host_key: node!.worker.hostKey };
    const reregistered = await server.api.post('/api/workers/register', body, node!.token);
    expect(reregistered.status).toBe(409);
    expect(reregistered.body.code).toBe('HOST_KEY_CHANGED');
    expect((await server.api.post('/api/workers/register', body, server.adminToken)).status).toBe(200);
    expect((await server.api.post(`/api/nodes/${node!.id}/clear`, {}, server.adminToken)).status).toBe(200);
    // The failed rent's cleanup runs against the newly pinned key before the worker is rented again,
    // and the control plane proves that key itself first.
    await runLoop(TASKS_LOOP);
    expect((await rent(alice)).body.code).toBe('NOT_ENOUGH_WORKERS');
    await runLoop(WORKER_CHECK_LOOP);
    expect(await events('worker.host_key_proven')).toHaveLength(2);
    expect((await rent(alice)).status).toBe(200);
  });

  it('rents all of `count` or none: a failure on one worker rolls the others back and cleans them up', async () => {
    await start();
    const nodes = await addWorkers(3);
    const alice = await userToken('alice');

    const short = await rent(alice, { duration_hours: 1, count: 4 });
    expect(short.status).toBe(503);
    expect(short.body).toMatchObject({ code: 'NOT_ENOUGH_WORKERS', free: 3 });
    expect(await rentalCount()).toBe(0);

    nodes[1]!.worker.failProvisioning = 'useradd: cannot lock /etc/passwd';
    const failed = await rent(alice, { duration_hours: 1, count: 3 });
    expect(failed.status).toBe(503);
    expect(failed.body.code).toBe('PROVISIONING_FAILED');
    expect(failed.body.detail).toMatch(/1 of 3 workers.*cannot lock/);
    const rentals = (await server.api.get('/api/rentals', alice)).body;
    expect(rentals.map((entry: { state: string }) => entry.state)).toEqual(['failed', 'failed', 'failed']);
    expect(nodes[0]!.worker.accounts.size + nodes[2]!.worker.accounts.size).toBe(2);

    nodes[1]!.worker.failProvisioning = undefined;
    await runLoop(TASKS_LOOP);
    expect(nodes.map((node) => node.worker.accounts.size)).toEqual([0, 0, 0]);
    const rented = await rent(alice, { duration_hours: 1, count: 3 });
    expect(rented.status).toBe(200);
    expect(new Set(rented.body.map((entry: { node_id: number }) => entry.node_id)).size).toBe(3);
  });

  it('never gives one worker to two of 20 users renting at once', async () => {
    await start();
    const nodes = await addWorkers(8);
    const tokens = await Promise.all(Array.from({ length: 20 }, (_, index) => userToken(`user${index}`)));
    const responses = await Promise.all(tokens.map((token) => rent(token, { duration_hours: 1 })));
    const granted = responses.filter((response) => response.status === 200);
    expect(granted).toHaveLength(8);
    expect(responses.filter((response) => response.status === 503).every((response) => response.body.code === 'NOT_ENOUGH_WORKERS')).toBe(true);
    const nodeIds = granted.map((response) => response.body[0].node_id);
    expect(new Set(nodeIds).size).toBe(8);
    // Each account is on its own worker and logs in there.
    for (const response of granted) {
      const rental = response.body[0];
      const worker = nodes.find((node) => node.id === rental.node_id)!.worker;
      expect([...worker.accounts.keys()]).toEqual([rental.client_user]);
      expect(await sshLogin(worker.port, rental.client_user, rental.client_pass)).toBe(rental.client_user);
    }
  });

  it('moves a rental off a worker that stops answering after N probes, with the same end time and password; fails it when no worker is free', async () => {
    await start();
    const [a, b] = await addWorkers(2);
    const alice = await userToken('alice');
    const rental = (await rent(alice, { duration_hours: 3 })).body[0];
    expect(rental.node_id).toBe(a!.id);

    await a!.worker.stop();
    await runLoop(WORKER_CHECK_LOOP);
    await runLoop(WORKER_CHECK_LOOP);
    expect((await server.api.get(`/api/rentals/${rental.rental_id}`, alice)).body).toMatchObject({ state: 'active', node_id: a!.id });
    await runLoop(WORKER_CHECK_LOOP);
    const moving = (await server.api.get(`/api/rentals/${rental.rental_id}`, alice)).body;
    expect(moving).toMatchObject({ state: 'migrating', node_id: b!.id, leased_until: rental.leased_until });
    expect(moving.migrations).toEqual([{ from_node: a!.id, to_node: b!.id, at: expect.any(String) }]);
    expect(await events('worker.dead')).toHaveLength(1);

    await runLoop(TASKS_LOOP);
    const moved = (await server.api.get(`/api/rentals/${rental.rental_id}`, alice)).body;
    expect(moved).toMatchObject({
      state: 'active',
      host_ip: '127.0.0.1',
      ssh_port: b!.worker.port,
      client_user: rental.client_user,
      leased_until: rental.leased_until,
    });
    expect(await sshLogin(b!.worker.port, rental.client_user, rental.client_pass)).toBe(rental.client_user);

    // The second worker dies too, and the first is still down: nowhere to go.
    await b!.worker.stop();
    for (let probe = 0; probe < 3; probe += 1) await runLoop(WORKER_CHECK_LOOP);
    const failed = (await server.api.get(`/api/rentals/${rental.rental_id}`, alice)).body;
    expect(failed).toMatchObject({ state: 'failed', active: false });
    expect(failed.end_reason).toMatch(/dead and no free worker/);
    const view = (await server.api.get('/api/nodes', alice)).body;
    expect(view).toHaveLength(1);
    expect(view[0]).toMatchObject({ node_id: b!.id, status: 'dead', allocated: false, lease: { rental_id: rental.rental_id, state: 'failed', active: false } });
    expect(await events('rental.failed')).toHaveLength(1);
  });

  it('quarantines a worker whose cleanup keeps failing, and takes it back once an admin clears it and the cleanup succeeds', async () => {
    await start();
    const [node] = await addWorkers(1);
    const alice = await userToken('alice');
    const rental = (await rent(alice)).body[0];
    node!.worker.failDeprovisioning = 'userdel: user is busy';
    await server.api.post(`/api/release/${rental.rental_id}`, {}, alice);
    await runLoop(TASKS_LOOP);
    server.clock.advance(10_000);
    await runLoop(TASKS_LOOP);
    server.clock.advance(20_000);
    await runLoop(TASKS_LOOP);
    const view = (await server.api.get('/api/nodes', server.adminToken)).body[0];
    expect(view).toMatchObject({ quarantined: true });
    expect(view.quarantine_reason).toMatch(/cleanup failed 3 times: .*user is busy/);
    expect(await events('worker.quarantined')).toHaveLength(1);
    // Given up: later passes leave it alone.
    server.clock.advance(HOUR);
    await runLoop(TASKS_LOOP);
    expect(node!.worker.commands.filter((line) => line.startsWith('deprovision'))).toHaveLength(3);
    expect((await rent(alice)).body.code).toBe('NOT_ENOUGH_WORKERS');

    node!.worker.failDeprovisioning = undefined;
    await server.api.post(`/api/nodes/${node!.id}/clear`, {}, server.adminToken);
    expect((await rent(alice)).body.code).toBe('NOT_ENOUGH_WORKERS');
    await runLoop(TASKS_LOOP);
    expect(node!.worker.accounts.size).toBe(0);
    expect((await rent(alice)).status).toBe(200);
  });

  it('keeps user input away from the worker: generated account names, passwords only as hashes', async () => {
    await start();
    const [node] = await addWorkers(1);
    const root = await userToken('root');
    const password = `Pa55word'; rm -rf / #$(reboot)`;
    const rented = await rent(root, { duration_hours: 1, ssh_password: password });
    expect(rented.status).toBe(200);
    const rental = rented.body[0];
    expect(rental.client_user).toMatch(/^rent_[a-z0-9]{8}$/);
    expect(node!.worker.commands).toHaveLength(1);
    expect(node!.worker.commands[0]).toMatch(/^provision rent_[a-z0-9]{8} \$6\$[./0-9A-Za-z]+\$[./0-9A-Za-z]{86}$/);
    expect(await sshLogin(node!.worker.port, rental.client_user, password)).toBe(rental.client_user);
    const stored = await server.ctx.db.selectFrom('rentals').select('password_hash').executeTakeFirstOrThrow();
    expect(stored.password_hash).not.toContain(password);
  });

  it('refuses bad input, other users, forged and expired tokens and non-admin resets, changing nothing', async () => {
    await start({ rentMaxMs: 24 * HOUR, rentMaxCount: 2, tokenTtlMs: HOUR });
    const [node] = await addWorkers(1);
    const alice = await userToken('alice');
    const cases: [Record<string, unknown> | string, number, RegExp][] = [
      [{ duration_hours: 0 }, 422, /duration_hours/],
      [{ duration_hours: -1 }, 422, /duration_hours/],
      [{ duration_hours: '2' }, 422, /duration_hours/],
      [{ duration_hours: 25 }, 422, /at most 24/],
      [{ duration_hours: 1, count: 0 }, 422, /count/],
      [{ duration_hours: 1, count: 3 }, 422, /at most 2/],
      [{ duration_hours: 1, count: 1.5 }, 422, /count/],
      [{ duration_hours: 1, ssh_password: 'short' }, 422, /too weak/],
      [{ duration_hours: 1, ssh_password: 'alice-Password-123' }, 422, /user name/],
      [{ duration_hours: 1, ssh_password: 'tab\there-Password-1' }, 422, /printable/],
      ['{"duration_hours": ', 400, /JSON/],
    ];
    for (const [body, status, detail] of cases) {
      const response = typeof body === 'string' ? await server.api.request('POST', '/api/rent', { rawBody: body, token: alice }) : await rent(alice, body);
      expect(response.status, JSON.stringify(body)).toBe(status);
      expect(response.body.detail, JSON.stringify(body)).toMatch(detail);
    }
    expect(await rentalCount()).toBe(0);
    expect(node!.worker.commands).toEqual([]);

    expect((await server.api.post('/api/rent', { duration_hours: 1 })).status).toBe(401);
    expect((await rent(node!.token)).status).toBe(403);
    const forged = await new SignJWT({ username: 'admin', role: 'admin' })
      .setProtectedHeader({ alg: 'HS256' })
      .setSubject('1')
      .setIssuer('dispatcher')
      .setIssuedAt()
      .setExpirationTime('1h')
      .sign(new TextEncoder().encode('not-the-server-secret-not-the-server-secret'));
    expect((await rent(forged)).status).toBe(401);
    expect((await server.api.post('/api/reset', { confirm: 'reset' }, forged)).status).toBe(401);

    const rental = (await rent(alice)).body[0];
    expect((await server.api.post('/api/release/abc', {}, alice)).status).toBe(422);
    expect((await server.api.post('/api/release/999999', {}, alice)).body.code).toBe('RENTAL_NOT_FOUND');
    expect((await server.api.post(`/api/extend/${rental.rental_id}`, { additional_hours: -2 }, alice)).status).toBe(422);
    expect((await server.api.post('/api/reset', { confirm: 'reset' }, alice)).status).toBe(403);
    expect((await server.api.post('/api/reset', {}, server.adminToken)).status).toBe(422);
    expect((await server.api.post('/api/reset', { confirm: 'yes' }, server.adminToken)).body.code).toBe('CONFIRMATION_REQUIRED');
    expect((await server.api.get(`/api/rentals/${rental.rental_id}`, alice)).body.state).toBe('active');

    // Registration needs a credential; a bogus host key is refused.
    expect((await server.api.post('/api/workers/register', { hostname: 'intruder', ssh_port: 22 })).status).toBe(401);
    expect((await server.api.post('/api/workers/register', { hostname: 'intruder', ssh_port: 22 }, 'de_not-a-real-token')).status).toBe(401);
    const enrollment = (await server.api.post('/api/enrollment-tokens', {}, server.adminToken)).body.token;
    const badKey = await server.api.post('/api/workers/register', { hostname: 'odd', ssh_port: 22, ssh_host_key: 'ssh-ed25519 bm90IGEga2V5' }, enrollment);
    expect(badKey.status).toBe(422);
    expect(badKey.body.detail).toMatch(/ssh_host_key/);

    server.clock.advance(HOUR + 1000);
    const expired = await server.api.post(`/api/release/${rental.rental_id}`, {}, alice);
    expect(expired.status).toBe(401);
    expect(expired.body.code).toBe('TOKEN_EXPIRED');
  });

  it('resets: every rental ends and is cleaned up, worker registrations are removed', async () => {
    await start();
    const nodes = await addWorkers(2);
    const alice = await userToken('alice');
    await rent(alice, { duration_hours: 1, count: 2 });
    const reset = await server.api.post('/api/reset', { confirm: 'reset' }, server.adminToken);
    expect(reset.body).toEqual({ message: 'DB reset OK', rentals_ended: 2, workers_removed: 2 });
    expect((await server.api.get('/api/nodes', server.adminToken)).body).toEqual([]);
    expect((await server.api.get('/api/rentals', alice)).body.map((entry: { end_reason: string }) => entry.end_reason)).toEqual(['reset', 'reset']);
    await runLoop(TASKS_LOOP);
    expect(nodes.map((node) => node.worker.accounts.size)).toEqual([0, 0]);
  });
});
