import { afterEach, describe, expect, it } from 'vitest';
import { dialects } from '../../test/databases.js';
import { addWorkers as addTestWorkers, userToken as signUpAndLogIn } from '../../test/leasing.js';
import { useTestServer, type TestServer } from '../../test/server.js';
import type { AddressInfo } from 'node:net';
import ssh2 from 'ssh2';
import { startSshWorker, type SshWorker } from '../../test/ssh-worker.js';
import type { Config } from '../config.js';
import { WORKER_CHECK_LOOP } from '../loops.js';
import { runNodeApprove } from '../nodes/nodes.cli.js';

const { Server, utils } = ssh2;
const PROBE_EVERY = 30_000;

/**
 * Finding: a holder of the enrollment token registered a "worker" with another worker's address
 * and public host key, was rented the machine another user held, and aimed the control plane's
 * SSH probe at any host:port by re-registering. Host keys are public (ssh-keyscan): reporting one
 * proves nothing, so the control plane proves it itself before a worker is rented or probed.
 */
describe.each(dialects)('workers prove who they are, on %s', (dialect) => {
  const suite = useTestServer(dialect, { workerProbeIntervalMs: PROBE_EVERY, workerProbeFailures: 2, sshTimeoutMs: 5_000 });
  let server: TestServer;
  const machines: SshWorker[] = [];

  const start = async (overrides: Partial<Config> = {}) => {
    server = await suite.start(overrides);
  };
  const checkWorkers = async () => {
    server.clock.advance(PROBE_EVERY);
    expect(await server.loops.find((loop) => loop.name === WORKER_CHECK_LOOP)!.runOnce()).toBe(true);
  };
  const enrollment = async () => (await server.api.post('/api/enrollment-tokens', {}, server.adminToken)).body.token as string;
  const register = async (token: string, body: Record<string, unknown>) => server.api.post('/api/workers/register', body, token);
  const machine = async () => {
    const started = await startSshWorker(server.ctx.provisioningKey.publicKey);
    machines.push(started);
    return started;
  };
  const nodeView = async (id: number) => (await server.api.get('/api/nodes', server.adminToken)).body.find((node: { node_id: number }) => node.node_id === id);
  const events = (kind: string) => server.ctx.db.selectFrom('events').selectAll().where('kind', '=', kind).execute();
  const rent = (token: string) => server.api.post('/api/rent', { duration_hours: 1 }, token);

  afterEach(async () => {
    for (const started of machines.splice(0)) await started.stop();
  });

  it('refuses a second worker with a host key another node registered: 409 HOST_KEY_TAKEN, nothing created', async () => {
    await start();
    const [victim] = await addTestWorkers(server, machines, 1);
    const before = (await server.api.get('/api/nodes', server.adminToken)).body.length;

    const copied = await register(await enrollment(), { hostname: 'mallory', ssh_port: victim!.worker.port, ssh_host_key: victim!.worker.hostKey });
    expect(copied.status).toBe(409);
    expect(copied.body.code).toBe('HOST_KEY_TAKEN');
    expect(copied.body.detail).toMatch(/Another worker has proven this SSH host key/);
    // An admin is held to it too: one machine, one worker.
    expect((await register(server.adminToken, { hostname: 'mallory', ssh_port: victim!.worker.port, ssh_host_key: victim!.worker.hostKey })).body.code).toBe(
      'HOST_KEY_TAKEN',
    );
    expect((await server.api.get('/api/nodes', server.adminToken)).body).toHaveLength(before);
  });

  it('never rents a worker whose address answers with another host key than the one it reported', async () => {
    await start();
    // Mallory's own machine answers SSH, and she reports a host key she copied from elsewhere.
    const mallorys = await machine();
    const elsewhere = await startSshWorker(server.ctx.provisioningKey.publicKey);
    await elsewhere.stop();
    const registered = await register(await enrollment(), { hostname: 'mallory', ssh_port: mallorys.port, ssh_host_key: elsewhere.hostKey });
    expect(registered.status).toBe(200);

    await checkWorkers();
    const view = await nodeView(registered.body.node_id);
    expect(view).toMatchObject({ host_key_verified_at: null, approved: true, probe_status: 'unknown' });
    const unproven = await events('worker.host_key_unproven');
    expect(unproven).toHaveLength(1);
    expect(JSON.parse(unproven[0]!.data as string).detail).toMatch(/presented another host key/);
    expect((await rent(await signUpAndLogIn(server, 'alice'))).body.code).toBe('NOT_ENOUGH_WORKERS');
    expect(mallorys.commands).toEqual([]);
    // Failing again and again, it is dead, and it says so once.
    await checkWorkers();
    expect(await nodeView(registered.body.node_id)).toMatchObject({ probe_status: 'dead', host_key_verified_at: null });
    expect(await events('worker.host_key_unproven')).toHaveLength(1);
  });

  it('proves a reported host key at the registered address before the worker is rented', async () => {
    await start();
    const honest = await machine();
    const registered = await register(await enrollment(), { hostname: 'honest', ssh_port: honest.port, ssh_host_key: honest.hostKey });
    const alice = await signUpAndLogIn(server, 'alice');
    expect((await rent(alice)).body.code).toBe('NOT_ENOUGH_WORKERS');

    await checkWorkers();
    const view = await nodeView(registered.body.node_id);
    expect(view.host_key_verified_at).toBe(new Date(server.clock.now()).toISOString());
    expect(view.probe_status).toBe('alive');
    expect(await events('worker.host_key_proven')).toHaveLength(1);
    expect((await rent(alice)).status).toBe(200);
  });

  it('refuses a worker registered by its agent at an address other than the one it registers from, unless WORKER_ADDRESS=declared', async () => {
    await start();
    const honest = await machine();
    const body = { hostname: 'elsewhere', ip: '127.0.0.2', ssh_port: honest.port, ssh_host_key: honest.hostKey };
    const refused = await register(await enrollment(), body);
    expect(refused.status).toBe(403);
    expect(refused.body.code).toBe('WORKER_ADDRESS_NOT_OWN');
    expect(refused.body.detail).toMatch(/this request came from 127\.0\.0\.1, not 127\.0\.0\.2/);
    expect((await server.api.get('/api/nodes', server.adminToken)).body).toEqual([]);
    // Its own address, said out loud, is fine; so is a node without an SSH host key anywhere.
    expect((await register(await enrollment(), { ...body, ip: '127.0.0.1' })).status).toBe(200);
    expect((await register(await enrollment(), { hostname: 'plain-node', ip: '127.0.0.2' })).status).toBe(200);
    await server.stop();

    await start({ workerAddress: 'declared' });
    const other = await machine();
    expect((await register(await enrollment(), { hostname: 'behind-nat', ip: '127.0.0.2', ssh_port: other.port, ssh_host_key: other.hostKey })).status).toBe(
      200,
    );
  });

  it('takes the address a worker registers from behind a proxy only from the proxies TRUST_PROXY lists', async () => {
    // The proxy appends the address it saw (nginx's $proxy_add_x_forwarded_for) to what the client sent.
    const from = async (trustProxy: boolean | string) => {
      await start({ trustProxy });
      const response = await server.app.inject({
        method: 'POST',
        url: '/api/workers/register',
        remoteAddress: '127.0.0.1',
        headers: { authorization: `Bearer ${await enrollment()}`, 'x-forwarded-for': '203.0.113.66, 198.51.100.7' },
        payload: { hostname: 'behind-proxy', ip: '192.0.2.1', ssh_port: 22, ssh_host_key: (await machine()).hostKey },
      });
      await server.stop();
      return (response.json() as { detail: string }).detail;
    };
    expect(await from('127.0.0.1')).toMatch(/this request came from 198\.51\.100\.7, not 192\.0\.2\.1/);
    // Trusting every hop believes whatever the client put first.
    expect(await from(true)).toMatch(/this request came from 203\.0\.113\.66/);
    expect(await from('10.0.0.1')).toMatch(/this request came from 127\.0\.0\.1/);
  });

  it('lets an admin register a worker at any address', async () => {
    await start();
    const honest = await machine();
    const registered = await register(server.adminToken, { hostname: 'racked', ip: '127.0.0.2', ssh_port: honest.port, ssh_host_key: honest.hostKey });
    expect(registered.status).toBe(200);
    expect((await nodeView(registered.body.node_id)).ip).toBe('127.0.0.2');
  });

  it('does not aim the probe where a node re-registers: a new address or port is proven again before any banner probe goes there', async () => {
    await start();
    const [scanner] = await addTestWorkers(server, machines, 1);
    expect(await nodeView(scanner!.id)).toMatchObject({ probe_status: 'alive' });
    // Another SSH server, with another key: a banner probe would call it alive.
    const target = await machine();
    const body = { hostname: scanner!.name, node_id: scanner!.name, ssh_port: target.port, ssh_host_key: scanner!.worker.hostKey };
    expect((await register(scanner!.token, { ...body, ip: '127.0.0.2' })).body.code).toBe('WORKER_ADDRESS_NOT_OWN');
    expect((await register(scanner!.token, body)).status).toBe(200);
    expect(await nodeView(scanner!.id)).toMatchObject({ host_key_verified_at: null, ssh_port: target.port });

    await checkWorkers();
    await checkWorkers();
    expect(await nodeView(scanner!.id)).toMatchObject({ host_key_verified_at: null, probe_status: 'dead' });
    // Back at its own port, it proves its key again and is alive.
    expect((await register(scanner!.token, { ...body, ssh_port: scanner!.worker.port })).status).toBe(200);
    await checkWorkers();
    expect(await nodeView(scanner!.id)).toMatchObject({ probe_status: 'alive' });
    expect((await nodeView(scanner!.id)).host_key_verified_at).not.toBeNull();
  });

  it('refuses a node token moving its worker to another address even without a host key in the body', async () => {
    await start();
    const [worker] = await addTestWorkers(server, machines, 1);
    const moved = await register(worker!.token, { hostname: worker!.name, node_id: worker!.name, ip: '127.0.0.2', ssh_port: 2222 });
    expect(moved.status).toBe(403);
    expect(moved.body.code).toBe('WORKER_ADDRESS_NOT_OWN');
    expect(await nodeView(worker!.id)).toMatchObject({ ip: '127.0.0.1', ssh_port: worker!.worker.port });
  });

  it("refuses a second worker at a proven worker's address, whichever of that machine's host keys it reports", async () => {
    await start();
    // One machine, two host keys (as sshd has RSA, ECDSA and Ed25519 ones).
    const keys = [utils.generateKeyPairSync('ed25519'), utils.generateKeyPairSync('ecdsa', { bits: 256 })];
    const sshd = new Server({ hostKeys: keys.map((key) => key.private) }, (connection) => {
      connection.on('error', () => undefined);
      connection.on('authentication', (context) => context.reject());
    });
    await new Promise<void>((resolve) => sshd.listen(0, '127.0.0.1', resolve));
    const port = (sshd.address() as AddressInfo).port;
    try {
      const token = await enrollment();
      const victim = await register(token, { hostname: 'victim', ssh_port: port, ssh_host_key: keys[0]!.public });
      await checkWorkers();
      expect((await nodeView(victim.body.node_id)).host_key_verified_at).not.toBeNull();
      const other = await register(token, { hostname: 'mallory', ssh_port: port, ssh_host_key: keys[1]!.public });
      expect(other.status).toBe(409);
      expect(other.body.code).toBe('WORKER_ADDRESS_TAKEN');
      expect(other.body.detail).toMatch(new RegExp(`at 127\\.0\\.0\\.1:${port}: one machine is one worker`));
    } finally {
      await new Promise<void>((resolve) => sshd.close(() => resolve()));
    }
  });

  it('lets no one squat a host key: an unproven registration of it blocks the machine that holds it from nobody', async () => {
    await start();
    const victim = await machine();
    const squatter = await machine();
    const token = await enrollment();
    // Mallory reports the victim's public key at her own machine, before the victim registers.
    expect((await register(token, { hostname: 'mallory', ssh_port: squatter.port, ssh_host_key: victim.hostKey })).status).toBe(200);
    const real = await register(token, { hostname: 'victim', ssh_port: victim.port, ssh_host_key: victim.hostKey });
    expect(real.status).toBe(200);
    await checkWorkers();
    const proven = await server.ctx.db.selectFrom('nodes').select('name').where('host_key_verified_at', 'is not', null).execute();
    expect(proven).toEqual([{ name: 'victim' }]);
  });

  it('keeps the same machine proven when its agent registers again with the same address and key', async () => {
    await start();
    const [worker] = await addTestWorkers(server, machines, 1);
    const proven = (await nodeView(worker!.id)).host_key_verified_at;
    const body = { hostname: worker!.name, node_id: worker!.name, ip: '127.0.0.1', ssh_port: worker!.worker.port, ssh_host_key: worker!.worker.hostKey };
    expect((await register(worker!.token, body)).status).toBe(200);
    expect((await nodeView(worker!.id)).host_key_verified_at).toBe(proven);
  });

  it('lets one of many concurrent registrations of one host key be proven, never two', async () => {
    await start();
    const shared = await machine();
    const token = await enrollment();
    const answers = await Promise.all(
      Array.from({ length: 6 }, (_, index) => register(token, { hostname: `twin-${index}`, ssh_port: shared.port, ssh_host_key: shared.hostKey })),
    );
    expect(answers.every((answer) => answer.status === 200 || answer.body.code === 'HOST_KEY_TAKEN')).toBe(true);
    expect(answers.some((answer) => answer.status === 200)).toBe(true);
    await checkWorkers();
    const proven = await server.ctx.db.selectFrom('nodes').select('id').where('host_key_verified_at', 'is not', null).execute();
    expect(proven).toHaveLength(1);
  });

  it('WORKER_APPROVAL=admin: a proven worker waits for an admin before it is rented', async () => {
    await start({ workerApproval: 'admin' });
    const honest = await machine();
    const registered = await register(await enrollment(), { hostname: 'newcomer', ssh_port: honest.port, ssh_host_key: honest.hostKey });
    await checkWorkers();
    expect(await nodeView(registered.body.node_id)).toMatchObject({ approved: false, probe_status: 'alive' });
    const alice = await signUpAndLogIn(server, 'alice');
    expect((await rent(alice)).body.code).toBe('NOT_ENOUGH_WORKERS');

    expect((await server.api.post(`/api/nodes/${registered.body.node_id}/approve`, {}, alice)).status).toBe(403);
    const approved = await server.api.post('/api/nodes/newcomer/approve', {}, server.adminToken);
    expect(approved.status).toBe(200);
    expect(approved.body).toMatchObject({ status: 'success', name: 'newcomer' });
    expect(await events('node.approved')).toHaveLength(1);
    expect((await rent(alice)).status).toBe(200);
    // Approving again changes nothing; a worker an admin registers needs no approval.
    expect((await server.api.post('/api/nodes/newcomer/approve', {}, server.adminToken)).status).toBe(200);
    expect(await events('node.approved')).toHaveLength(1);
    const racked = await machine();
    const byAdmin = await register(server.adminToken, { hostname: 'racked', ssh_port: racked.port, ssh_host_key: racked.hostKey });
    expect(await nodeView(byAdmin.body.node_id)).toMatchObject({ approved: true });

    // `dispatcher node approve` does the same from the command line, by name or id.
    const later = await machine();
    const waiting = await register(await enrollment(), { hostname: 'later', ssh_port: later.port, ssh_host_key: later.hostKey });
    expect(await runNodeApprove(server.config, String(waiting.body.node_id))).toMatch(
      /^Approved: node later \(id \d+\); it is rented once the control plane has proven its SSH host key\.$/,
    );
    expect(await runNodeApprove(server.config, 'later')).toMatch(/^Already approved: node later/);
    await expect(runNodeApprove(server.config, 'nobody')).rejects.toMatchObject({ code: 'NODE_NOT_FOUND' });
    expect(await nodeView(waiting.body.node_id)).toMatchObject({ approved: true });
  });

  it('WORKER_APPROVAL=admin: approval is of one machine at one address, and a plain node does not become an approved worker', async () => {
    await start({ workerApproval: 'admin' });
    const token = await enrollment();
    // A node registered without a host key waits too: it may report one later.
    const plain = await register(token, { hostname: 'plain' });
    const later = await machine();
    expect((await register(plain.body.node_token, { hostname: 'plain', node_id: 'plain', ssh_port: later.port, ssh_host_key: later.hostKey })).status).toBe(
      200,
    );
    await checkWorkers();
    expect(await nodeView(plain.body.node_id)).toMatchObject({ approved: false });
    // An approved worker that moves to another port waits for an admin again.
    expect((await server.api.post('/api/nodes/plain/approve', {}, server.adminToken)).status).toBe(200);
    const moved = await register(plain.body.node_token, { hostname: 'plain', node_id: 'plain', ssh_port: later.port + 1, ssh_host_key: later.hostKey });
    expect(moved.status).toBe(200);
    expect(await nodeView(plain.body.node_id)).toMatchObject({ approved: false, host_key_verified_at: null });
  });
});
