import { describe, expect, it } from 'vitest';
import { dialects } from '../../test/databases.js';
import { makeAssets, registerNode, useTestServer, type TestServer } from '../../test/server.js';
import type { Config } from '../config.js';
import { LIVENESS_LOOP, RECLAIM_LOOP } from '../loops.js';

const MIB = 1024 * 1024;
const GIB = 1024 * MIB;
const MINUTE = 60_000;

describe.each(dialects)('rescue nodes on %s', (dialect) => {
  const suite = useTestServer(dialect, {
    nodeTimeoutMs: 5 * MINUTE,
    nodeDeadGraceMs: 10 * MINUTE,
    tokenTtlMs: 30 * 24 * 60 * MINUTE,
    loginRateLimitPerMinute: 1000,
  });
  let server: TestServer;

  const start = async (overrides: Partial<Config> = {}) => {
    server = await suite.start(overrides);
  };
  const runLoop = (name: string) => server.loops.find((loop) => loop.name === name)!.runOnce();
  const heartbeat = (node: { id: number; token: string }, body: Record<string, unknown> = {}) =>
    server.api.post(`/api/nodes/${node.id}/heartbeat`, { free_bytes: 100 * GIB, ...body }, node.token);
  const nodeView = async (name: string) => (await server.api.get('/api/nodes', server.adminToken)).body.find((node: { name: string }) => node.name === name);
  const allocate = (node: { name: string; token: string }, body: Record<string, unknown> = {}) =>
    server.api.post('/allocate', { free_space_gb: 100, node_id: node.name, ...body }, node.token);
  const ids = (response: { body: { id: string }[] }) => response.body.map((asset) => asset.id);

  it('goes alive, suspect and dead with heartbeats and silence; nodes that never beat are left alone', async () => {
    await start();
    const beating = await registerNode(server, 'beating');
    await registerNode(server, 'seed-client');
    const first = await heartbeat(beating, { download_rate_bps: 5 * MIB, bytes_in_flight: 10 });
    expect(first.body).toMatchObject({ status: 'ok', node_status: 'alive', draining: false, next_heartbeat_seconds: 60 });
    expect(await nodeView('beating')).toMatchObject({ status: 'alive', free_bytes: 100 * GIB, download_rate_bps: 5 * MIB, bytes_in_flight: 10 });

    server.clock.advance(5 * MINUTE - 1);
    await runLoop(LIVENESS_LOOP);
    expect((await nodeView('beating')).status).toBe('alive');
    server.clock.advance(1);
    server.clock.advance(30_000);
    await runLoop(LIVENESS_LOOP);
    expect((await nodeView('beating')).status).toBe('suspect');
    server.clock.advance(10 * MINUTE);
    await runLoop(LIVENESS_LOOP);
    expect(await nodeView('beating')).toMatchObject({ status: 'dead', strikes: 1 });
    expect((await nodeView('seed-client')).status).toBe('unknown');

    await heartbeat(beating);
    expect((await nodeView('beating')).status).toBe('alive');
    const events = await server.api.get('/events?subject_type=node&limit=20', server.adminToken);
    expect(events.body.items.map((event: { kind: string }) => event.kind)).toEqual(expect.arrayContaining(['node.suspect', 'node.dead', 'node.alive']));
  });

  it("reclaims a dead node's work with a brake, most important first, and keeps its verified copies", async () => {
    await start({ reclaimMaxPerMinute: 2 });
    await server.api.post(
      '/assets',
      [1, 2, 3, 4, 5, 6].map((priority) => ({ ...makeAssets(1, { priority, size_bytes: 10, size_mb: undefined }, `p${priority}`)[0] })),
      server.adminToken,
    );
    const node = await registerNode(server, 'doomed');
    await heartbeat(node);
    expect(await allocate(node)).toMatchObject({ status: 200 });
    await server.api.post('/complete', { asset_id: 'p6-1', node_id: 'doomed', sha256: 'a'.repeat(64), bytes: 10 }, node.token);

    server.clock.advance(16 * MINUTE);
    await runLoop(LIVENESS_LOOP);
    await runLoop(RECLAIM_LOOP);
    const reclaimed = async () =>
      (await server.api.get('/allocations?state=reclaimed', server.adminToken)).body.items
        .map((allocation: { asset_id: string }) => allocation.asset_id)
        .sort();
    expect(await reclaimed()).toEqual(['p4-1', 'p5-1']);
    server.clock.advance(MINUTE);
    await runLoop(RECLAIM_LOOP);
    expect(await reclaimed()).toEqual(['p2-1', 'p3-1', 'p4-1', 'p5-1']);
    // The reclaimed work is back in the pool for others.
    const other = await registerNode(server, 'rescuer');
    expect(ids(await allocate(other))).toEqual(['p5-1', 'p4-1', 'p3-1', 'p2-1']);
    // The dead node comes back: its verified copy still counts.
    await heartbeat(node);
    const asset = await server.api.get('/assets/p6-1', server.adminToken);
    expect(asset.body).toMatchObject({ state: 'rescued', copies: 1 });
  });

  it("renews a lease on progress, sized from the node's rate, and lets a stalled one expire", async () => {
    await start({ allocationExpiryMs: 24 * 60 * MINUTE, leaseMinMs: 10 * MINUTE });
    await server.api.post('/assets', makeAssets(1, { size_bytes: 600 * MIB, size_mb: undefined }), server.adminToken);
    const node = await registerNode(server, 'steady');
    await heartbeat(node, { download_rate_bps: MIB });
    const granted = await allocate(node);
    // 600 MiB at 1 MiB/s, three times over: 30 minutes.
    expect(Date.parse(granted.body[0].expires_at) - server.clock.now()).toBe(30 * MINUTE);
    server.clock.advance(20 * MINUTE);
    const renewed = await heartbeat(node, { download_rate_bps: MIB, allocations: [{ asset_id: 'asset-1', bytes_done: 300 * MIB }] });
    expect(renewed.body.renewed).toEqual([{ asset_id: 'asset-1', expires_at: new Date(server.clock.now() + 15 * MINUTE).toISOString() }]);
    server.clock.advance(10 * MINUTE);
    const stalled = await heartbeat(node, { download_rate_bps: MIB, allocations: [{ asset_id: 'asset-1', bytes_done: 300 * MIB }] });
    expect(stalled.body.renewed).toEqual([]);
    server.clock.advance(6 * MINUTE);
    await server.loops.find((loop) => loop.name === 'expire-allocations')!.runOnce();
    expect((await server.api.get('/allocations?state=expired', server.adminToken)).body.items).toHaveLength(1);
  });

  it('does not trust an old free-space report', async () => {
    await start({ freeSpaceTtlMs: 10 * MINUTE });
    await server.api.post('/assets', makeAssets(3), server.adminToken);
    const node = await registerNode(server, 'quiet');
    const never = await server.api.post('/allocate', { node_id: 'quiet' }, node.token);
    expect(never.status).toBe(409);
    expect(never.body.code).toBe('FREE_SPACE_REQUIRED');
    await heartbeat(node, { free_bytes: 150 * MIB });
    expect(ids(await server.api.post('/allocate', { node_id: 'quiet' }, node.token))).toEqual(['asset-1']);
    server.clock.advance(10 * MINUTE + 1);
    expect((await server.api.post('/allocate', { node_id: 'quiet' }, node.token)).body.code).toBe('FREE_SPACE_REQUIRED');
  });

  it('throttles a node that keeps failing, until an admin clears it; drains on demand', async () => {
    await start({ maxStrikes: 3, allocationExpiryMs: 60 * MINUTE });
    await server.api.post('/assets', makeAssets(40, { size_mb: 1 }), server.adminToken);
    const node = await registerNode(server, 'flaky');
    const expireAll = async () => {
      server.clock.advance(61 * MINUTE);
      await server.loops.find((loop) => loop.name === 'expire-allocations')!.runOnce();
    };
    expect((await allocate(node, { max_assets: 8 })).body).toHaveLength(8);
    await expireAll();
    expect((await allocate(node, { max_assets: 8 })).body).toHaveLength(4);
    await expireAll();
    expect((await allocate(node, { max_assets: 8 })).body).toHaveLength(2);
    await expireAll();
    const refused = await allocate(node, { max_assets: 8 });
    expect(refused.status).toBe(403);
    expect(refused.body.code).toBe('NODE_THROTTLED');
    expect((await server.api.post(`/api/nodes/${node.id}/clear`, {}, node.token)).status).toBe(403);
    expect((await server.api.post(`/api/nodes/${node.id}/clear`, {}, server.adminToken)).body).toMatchObject({ status: 'success', name: 'flaky' });
    expect((await allocate(node, { max_assets: 8 })).body).toHaveLength(8);

    await server.api.post('/api/nodes/flaky/drain', {}, server.adminToken);
    const drained = await allocate(node);
    expect(drained.status).toBe(409);
    expect(drained.body.code).toBe('NODE_DRAINING');
    expect((await heartbeat(node)).body.draining).toBe(true);
    expect((await nodeView('flaky')).draining).toBe(true);
  });

  it('spreads the copies of an asset across regions where possible', async () => {
    await start();
    await server.api.post('/assets', makeAssets(2, { replicas_target: 2, size_mb: 1 }), server.adminToken);
    const paris = await registerNode(server, 'paris', { tags: { region: 'eu' } });
    const berlin = await registerNode(server, 'berlin', { tags: { region: 'eu' } });
    const boston = await registerNode(server, 'boston', { tags: { region: 'us' } });
    expect(ids(await allocate(paris, { max_assets: 1 }))).toEqual(['asset-1']);
    // asset-1 already has a copy in eu: berlin gets asset-2 first, boston asset-1.
    expect(ids(await allocate(berlin, { max_assets: 1 }))).toEqual(['asset-2']);
    expect(ids(await allocate(boston, { max_assets: 1 }))).toEqual(['asset-1']);
  });

  it('settles disagreeing checksums by quorum and marks the dissenting copy bad', async () => {
    await start();
    await server.api.post('/assets', makeAssets(1, { replicas_target: 2, size_mb: undefined, size_bytes: 10 }), server.adminToken);
    const [a, b, c] = [await registerNode(server, 'a-node'), await registerNode(server, 'b-node'), await registerNode(server, 'c-node')];
    const complete = (node: { name: string; token: string }, sha: string) =>
      server.api.post('/complete', { asset_id: 'asset-1', node_id: node.name, sha256: sha.repeat(64), bytes: 10 }, node.token);
    await allocate(a);
    await allocate(b);
    expect((await complete(a, 'a')).body).toMatchObject({ verified: true, copies: 1 });
    expect((await complete(b, 'b')).body).toMatchObject({ verified: false, copies: 0, asset_state: 'pending' });
    // Disputed copies do not count, so a third node is asked for a copy.
    expect(ids(await allocate(c))).toEqual(['asset-1']);
    expect((await complete(c, 'a')).body).toMatchObject({ verified: true, copies: 2, asset_state: 'rescued' });
    const asset = await server.api.get('/assets/asset-1', server.adminToken);
    expect(asset.body.sha256).toBe('a'.repeat(64));
    const bad = asset.body.allocations.find((allocation: { node_name: string }) => allocation.node_name === 'b-node');
    expect(bad).toMatchObject({ state: 'failed', end_reason: 'checksum_dissent', verified: false });
    expect(asset.body.history.map((event: { kind: string }) => event.kind)).toContain('asset.checksum_mismatch');
    expect((await nodeView('b-node')).strikes).toBe(1);
  });

  it('marks an asset gone once enough nodes find its source answering 404, and stops handing it out', async () => {
    await start({ sourceGoneConfirmations: 2 });
    await server.api.post('/assets', makeAssets(1), server.adminToken);
    const [a, b, c] = [await registerNode(server, 'a-node'), await registerNode(server, 'b-node'), await registerNode(server, 'c-node')];
    await allocate(a);
    await server.api.post('/release', { asset_id: 'asset-1', node_id: 'a-node', reason: 'Not Found', source_status: 404 }, a.token);
    expect((await server.api.get('/assets/asset-1', server.adminToken)).body).toMatchObject({ state: 'pending', source_errors: 1 });
    await allocate(b);
    await server.api.post('/release', { asset_id: 'asset-1', node_id: 'b-node', source_status: 410 }, b.token);
    expect((await server.api.get('/assets/asset-1', server.adminToken)).body).toMatchObject({
      state: 'gone',
      source_errors: 2,
      source_error: 'source_gone: 410',
    });
    expect((await allocate(c)).status).toBe(404);
  });

  it("dispatches in seed 002's shape: /mock_dispatch reserves nothing, /dispatch does", async () => {
    await start();
    await server.api.post(
      '/assets',
      [...makeAssets(2, { priority: 9, size_mb: 500 }, 'high'), ...makeAssets(2, { priority: 2, size_mb: 500 }, 'low')],
      server.adminToken,
    );
    const node = await registerNode(server, 'node-123');
    await heartbeat(node, { download_rate_bps: MIB });
    const body = { node_id: 'node-123', capacity_gb: 100, priority_level: 'high' };
    const mock = await server.api.post('/mock_dispatch', body, node.token);
    expect(mock.status).toBe(200);
    expect(mock.body).toEqual({
      status: 'success',
      message: 'Payload received and processed',
      received_data: body,
      mock_data: {
        assigned_tasks: [
          { task_id: 'high-1', dataset_url: 'https://data.example.org/high/1.csv', size_mb: 500, priority: 9 },
          { task_id: 'high-2', dataset_url: 'https://data.example.org/high/2.csv', size_mb: 500, priority: 9 },
        ],
        estimated_duration: '17 minutes',
        node_status: 'active',
      },
    });
    expect((await server.api.get('/allocations', server.adminToken)).body.items).toHaveLength(0);
    const real = await server.api.post('/dispatch', { ...body, priority_level: 'low' }, node.token);
    expect(real.body.mock_data.assigned_tasks.map((task: { task_id: string }) => task.task_id)).toEqual(['low-1', 'low-2']);
    expect((await server.api.get('/allocations', server.adminToken)).body.items).toHaveLength(2);
    expect((await server.api.post('/dispatch', { ...body, priority_level: 'urgent' }, node.token)).status).toBe(422);
  });
});
