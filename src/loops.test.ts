import { describe, expect, it } from 'vitest';
import { dialects } from '../test/databases.js';
import { makeAssets, registerNode, startTestServer, useTestServer, type TestServer } from '../test/server.js';
import type { Config } from './config.js';
import type { Loop } from './lib/loop.js';
import { EXPIRY_LOOP, PRIORITY_LOOP } from './loops.js';

const HOUR = 3_600_000;

describe.each(dialects)('reconciler loops on %s', (dialect) => {
  // Admin tokens must outlive the days this suite moves the clock through.
  const suite = useTestServer(dialect, { allocationExpiryMs: 24 * HOUR, autoUpdateIntervalMs: 2 * 60_000, tokenTtlMs: 365 * 24 * HOUR });
  let server: TestServer;

  const start = async (overrides: Partial<Config> = {}) => {
    server = await suite.start(overrides);
  };
  const loop = (name: string, target: TestServer = server): Loop => target.loops.find((candidate) => candidate.name === name)!;
  const priorities = async () =>
    Object.fromEntries((await suite.database.handle.db.selectFrom('assets').select(['id', 'priority']).execute()).map((row) => [row.id, row.priority]));

  it('expires allocations after ALLOCATION_EXPIRY_HOURS and returns them to the pool', async () => {
    await start();
    await server.api.post('/assets', makeAssets(2), server.adminToken);
    const node = await registerNode(server, 'sleepy');
    await server.api.post('/allocate', { free_space_gb: 10, node_id: 'sleepy', max_assets: 1 }, node.token);
    server.clock.advance(12 * HOUR);
    await server.api.post('/allocate', { free_space_gb: 10, node_id: 'sleepy', max_assets: 1 }, node.token);

    server.clock.advance(12 * HOUR); // the first lease is now exactly 24 h old, the second 12 h
    expect(await loop(EXPIRY_LOOP).runOnce()).toBe(true);
    const states = await server.api.get('/allocations?node=sleepy', server.adminToken);
    expect(states.body.items.map((allocation: { asset_id: string; state: string }) => `${allocation.asset_id}:${allocation.state}`).sort()).toEqual([
      'asset-1:expired',
      'asset-2:active',
    ]);
    const asset = await server.api.get('/assets/asset-1', server.adminToken);
    expect(asset.body).toMatchObject({ active_allocations: 0, copies: 0, state: 'pending' });
    const expired = await server.api.get('/events?kind=allocation.expired', server.adminToken);
    expect(expired.body.items).toHaveLength(1);
    expect(expired.body.items[0]).toMatchObject({ actor: 'system', data: { asset_id: 'asset-1' } });

    // The lease ended once: another pass finds nothing more to expire.
    server.clock.advance(60_000);
    await loop(EXPIRY_LOOP).runOnce();
    expect((await server.api.get('/events?kind=allocation.expired', server.adminToken)).body.items).toHaveLength(1);
    const other = await registerNode(server, 'awake');
    expect((await server.api.post('/allocate', { free_space_gb: 10, node_id: 'awake' }, other.token)).body[0].id).toBe('asset-1');
  });

  it('runs each pass once per interval, even with two instances', async () => {
    await start();
    const second = await startTestServer(suite.database, {}, server.clock);
    try {
      const results = await Promise.all([loop(PRIORITY_LOOP).runOnce(), loop(PRIORITY_LOOP, second).runOnce()]);
      expect(results.filter(Boolean)).toHaveLength(1);
      server.clock.advance(60_000);
      expect(await loop(PRIORITY_LOOP, second).runOnce()).toBe(false);
      server.clock.advance(60_000);
      expect(await loop(PRIORITY_LOOP, second).runOnce()).toBe(true);
    } finally {
      await second.stop();
    }
  });

  it('reports the real next priority update in /status', async () => {
    await start();
    await loop(PRIORITY_LOOP).runOnce();
    const status = await server.api.get('/status');
    expect(status.body.next_auto_update).toBe(new Date(server.clock.now() + 2 * 60_000).toISOString());
  });

  it('ages priorities: untaken pending assets rise, rescued ones sink, within 1–10', async () => {
    await start({ priorityPolicy: 'aging', priorityAgingMs: 24 * HOUR });
    await server.api.post(
      '/assets',
      [
        ...makeAssets(1, { priority: 5 }, 'untaken'),
        ...makeAssets(1, { priority: 10 }, 'top'),
        ...makeAssets(1, { priority: 5, size_bytes: 10, size_mb: undefined }, 'taken'),
        ...makeAssets(1, { priority: 1, size_bytes: 10, size_mb: undefined }, 'saved'),
      ],
      server.adminToken,
    );
    const node = await registerNode(server, 'keeper');
    await server.api.post('/allocate', { free_space_gb: 1, node_id: 'keeper', min_priority: 1, max_assets: 10 }, node.token);
    // keeper took everything; release the untaken and top ones, complete "saved"
    await server.api.post('/release', { asset_id: 'untaken-1', node_id: 'keeper' }, node.token);
    await server.api.post('/release', { asset_id: 'top-1', node_id: 'keeper' }, node.token);
    await server.api.post('/complete', { asset_id: 'saved-1', node_id: 'keeper', sha256: 'a'.repeat(64), bytes: 10 }, node.token);
    await server.api.post('/update-ckan', { updates: [{ asset_id: 'saved-1', new_priority: 3 }] }, server.adminToken);

    server.clock.advance(23 * HOUR);
    await loop(PRIORITY_LOOP).runOnce();
    expect(await priorities()).toEqual({ 'untaken-1': 5, 'top-1': 10, 'taken-1': 5, 'saved-1': 3 });
    server.clock.advance(HOUR);
    await loop(PRIORITY_LOOP).runOnce();
    expect(await priorities()).toEqual({ 'untaken-1': 6, 'top-1': 10, 'taken-1': 5, 'saved-1': 2 });
    for (let day = 0; day < 10; day += 1) {
      server.clock.advance(24 * HOUR);
      await loop(PRIORITY_LOOP).runOnce();
    }
    expect(await priorities()).toEqual({ 'untaken-1': 10, 'top-1': 10, 'taken-1': 5, 'saved-1': 1 });
    const events = await server.api.get('/events?kind=asset.priorities_adjusted', server.adminToken);
    expect(events.body.items.length).toBeGreaterThan(0);
  });

  it('jitters priorities by at most one, within 1–10, like the seeds', async () => {
    await start({ priorityPolicy: 'jitter' });
    await server.api.post(
      '/assets',
      [...makeAssets(30, { priority: 1 }, 'low'), ...makeAssets(30, { priority: 10 }, 'high'), ...makeAssets(30, { priority: 5 }, 'mid')],
      server.adminToken,
    );
    await loop(PRIORITY_LOOP).runOnce();
    const after = await priorities();
    const moved = new Set<number>();
    for (const [id, priority] of Object.entries(after)) {
      const before = id.startsWith('low') ? 1 : id.startsWith('high') ? 10 : 5;
      expect(Math.abs(priority - before)).toBeLessThanOrEqual(1);
      expect(priority).toBeGreaterThanOrEqual(1);
      expect(priority).toBeLessThanOrEqual(10);
      if (id.startsWith('mid')) moved.add(priority - before);
    }
    // 30 independent draws: all three steps show up (a 1 in 10^5 chance that one is missing).
    expect([...moved].sort()).toEqual([-1, 0, 1]);
  });

  it('changes nothing with PRIORITY_POLICY=none', async () => {
    await start({ priorityPolicy: 'none' });
    await server.api.post('/assets', makeAssets(5, { priority: 4 }), server.adminToken);
    server.clock.advance(100 * 24 * HOUR);
    await loop(PRIORITY_LOOP).runOnce();
    expect(Object.values(await priorities())).toEqual([4, 4, 4, 4, 4]);
  });

  it('records a failing pass and shows the system as degraded', async () => {
    await start();
    await suite.database.handle.db.updateTable('loops').set({ last_error: null }).execute();
    const failing = server.loops.find((candidate) => candidate.name === EXPIRY_LOOP)!;
    // Break the pass for real: the allocations table is gone.
    await suite.database.handle.db.schema.alterTable('allocations').renameTo('allocations_away').execute();
    expect(await failing.runOnce()).toBe(true);
    await suite.database.handle.db.schema.alterTable('allocations_away').renameTo('allocations').execute();
    const status = await server.api.get('/status');
    expect(status.body.system_health).toBe('degraded');
  });
});
