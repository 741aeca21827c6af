import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { createTestDatabase, dialects, type TestDatabase } from './databases.js';
import { makeAssets, startTestServer, type TestServer } from './server.js';

const HOST_KEY = 'ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIJdD7sKpMNtWhPbeW4dzj5hcWpGgYgWO1FXw/2xmZ6Gs';

/** What the earlier systems' own clients do, and get back, unchanged (seeds 002 and 003). */
describe.each(dialects)("the seeds' clients on %s", (dialect) => {
  let database: TestDatabase;
  let server: TestServer;

  beforeEach(async () => {
    database = await createTestDatabase(dialect);
    server = await startTestServer(database, { loginRateLimitPerMinute: 1000 });
  });
  afterEach(async () => {
    await server.stop();
    await database.drop();
  });

  it('serves the original Orion paths /api/signup and /api/login', async () => {
    expect((await server.api.post('/api/signup', { username: 'orion-user', password: 'a-long-password-1' })).body).toEqual({ message: 'Compte créé' });
    const login = await server.api.post('/api/login', { username: 'orion-user', password: 'a-long-password-1' });
    expect(login.status).toBe(200);
    expect((await server.api.get('/schedules', login.body.token)).status).toBe(200);
    expect((await server.api.post('/api/login', { username: 'orion-user', password: 'wrong-password' })).status).toBe(401);
  });

  it('answers seed 003\'s agent, which registers again with the same body at every boot, "Worker déjà enregistré", changing nothing', async () => {
    const enrollment = (await server.api.post('/api/enrollment-tokens', {}, server.adminToken)).body.token;
    const body = { hostname: 'worker1', ip: '10.0.0.5', ssh_port: 22221 };
    const first = await server.api.post('/api/workers/register', body, enrollment);
    expect(first.body).toMatchObject({ message: 'Worker enregistré avec succès', node_id: expect.any(Number), node_token: expect.any(String) });
    const again = await server.api.post('/api/workers/register', body, enrollment);
    expect(again.status).toBe(200);
    expect(again.body).toEqual({ message: 'Worker déjà enregistré', node_id: first.body.node_id, name: 'worker1' });
    // The first token still works; nothing was issued or changed.
    expect((await server.api.post(`/api/nodes/${first.body.node_id}/heartbeat`, { free_bytes: 1 }, first.body.node_token)).status).toBe(200);
    expect(await database.handle.db.selectFrom('nodes').select(['hostname', 'ip', 'ssh_port']).execute()).toEqual([
      { hostname: 'worker1', ip: '10.0.0.5', ssh_port: 22221 },
    ]);
    // Another address under the same name is still refused: nobody takes a node over this way.
    const elsewhere = await server.api.post('/api/workers/register', { ...body, ip: '10.0.0.6' }, enrollment);
    expect(elsewhere.status).toBe(409);
    expect(elsewhere.body.code).toBe('NODE_NAME_TAKEN');
  });

  it('shows a worker that sends no heartbeats as its SSH probe finds it', async () => {
    const enrollment = (await server.api.post('/api/enrollment-tokens', {}, server.adminToken)).body.token;
    const worker = await server.api.post(
      '/api/workers/register',
      { hostname: 'quiet-worker', ip: '127.0.0.1', ssh_port: 2222, ssh_host_key: HOST_KEY },
      enrollment,
    );
    expect(worker.status).toBe(200);
    const statusOf = async () =>
      (await server.api.get('/api/nodes', server.adminToken)).body.find((node: { name: string }) => node.name === 'quiet-worker').status;
    expect(await statusOf()).toBe('unknown');
    await database.handle.db.updateTable('nodes').set({ probe_status: 'alive' }).where('name', '=', 'quiet-worker').execute();
    expect(await statusOf()).toBe('alive');
    await database.handle.db.updateTable('nodes').set({ probe_status: 'dead' }).where('name', '=', 'quiet-worker').execute();
    expect(await statusOf()).toBe('dead');
  });

  it('previews /mock_dispatch for a node id never seen, without creating it', async () => {
    await server.api.post('/assets', makeAssets(2, { priority: 9, size_mb: 500 }, 'high'), server.adminToken);
    const body = { node_id: 'node-never-seen', capacity_gb: 100, priority_level: 'high' };
    const mock = await server.api.post('/mock_dispatch', body, server.adminToken);
    expect(mock.status).toBe(200);
    expect(mock.body.mock_data.assigned_tasks.map((task: { task_id: string }) => task.task_id)).toEqual(['high-1', 'high-2']);
    expect(mock.body.mock_data.node_status).toBe('active');
    expect(await database.handle.db.selectFrom('nodes').select('id').execute()).toEqual([]);
    expect(await database.handle.db.selectFrom('allocations').select('id').execute()).toEqual([]);
  });
});
