import { beforeEach, describe, expect, it } from 'vitest';
import { dialects } from '../../test/databases.js';
import { makeAssets, registerNode, useTestServer, type TestServer } from '../../test/server.js';

describe.each(dialects)('assets, priorities and status on %s', (dialect) => {
  const suite = useTestServer(dialect);
  let server: TestServer;

  beforeEach(async () => {
    server = await suite.start();
  });

  it('upserts by id and keeps the copies already made', async () => {
    await server.api.post('/assets', makeAssets(2, { size_bytes: 10, size_mb: undefined }), server.adminToken);
    const node = await registerNode(server, 'keeper');
    await server.api.post('/allocate', { free_space_gb: 1, node_id: 'keeper' }, node.token);
    await server.api.post('/complete', { asset_id: 'asset-1', node_id: 'keeper', sha256: 'a'.repeat(64), bytes: 10 }, node.token);
    const again = await server.api.post(
      '/assets',
      [{ id: 'asset-1', url: 'https://mirror.example.org/1.csv', name: 'renamed', priority: 9, size_bytes: 10, replicas_target: 2, organization: 'noaa-gov' }],
      server.adminToken,
    );
    expect(again.body).toEqual({ status: 'success', imported: 1 });
    const asset = await server.api.get('/assets/asset-1', server.adminToken);
    expect(asset.body).toMatchObject({
      name: 'renamed',
      url: 'https://mirror.example.org/1.csv',
      priority: 9,
      copies: 1,
      replicas_target: 2,
      state: 'pending',
      organization: 'noaa-gov',
    });
    // replicas_target is never lowered below what is already held (invariant 1).
    await server.api.post(
      '/assets',
      [{ id: 'asset-2', url: 'https://x.org/2', name: 'two', priority: 5, size_bytes: 10, replicas_target: 1 }],
      server.adminToken,
    );
    const second = await server.api.get('/assets/asset-2', server.adminToken);
    expect(second.body).toMatchObject({ replicas_target: 1, active_allocations: 1 });
  });

  it('lists assets with filters and a cursor', async () => {
    await server.api.post(
      '/assets',
      [
        ...makeAssets(3, { priority: 2, organization: 'nasa' }, 'low'),
        ...makeAssets(3, { priority: 9, organization: 'noaa' }, 'high'),
        { id: 'special', url: 'https://x.org/sea-ice.nc', name: 'Sea ice extent 100%', priority: 5 },
      ],
      server.adminToken,
    );
    const all = await server.api.get('/assets?limit=4', server.adminToken);
    expect(all.body.items.map((asset: { id: string }) => asset.id)).toEqual(['high-1', 'high-2', 'high-3', 'low-1']);
    const next = await server.api.get(`/assets?limit=4&cursor=${all.body.next_cursor}`, server.adminToken);
    expect(next.body.items.map((asset: { id: string }) => asset.id)).toEqual(['low-2', 'low-3', 'special']);
    expect(next.body.next_cursor).toBeNull();
    expect((await server.api.get('/assets?min_priority=8', server.adminToken)).body.items).toHaveLength(3);
    expect((await server.api.get('/assets?max_priority=2&organization=nasa', server.adminToken)).body.items).toHaveLength(3);
    expect((await server.api.get('/assets?q=SEA%20ICE', server.adminToken)).body.items.map((asset: { id: string }) => asset.id)).toEqual(['special']);
    expect((await server.api.get('/assets?q=100%25', server.adminToken)).body.items.map((asset: { id: string }) => asset.id)).toEqual(['special']);
    expect((await server.api.get('/assets?q=_', server.adminToken)).body.items).toHaveLength(0);
    expect((await server.api.get('/assets?state=rescued', server.adminToken)).body.items).toHaveLength(0);
  });

  it('shows one asset with its allocations and history, and 404 for an unknown id', async () => {
    await server.api.post('/assets', makeAssets(1), server.adminToken);
    await server.api.post('/update-ckan', { updates: [{ asset_id: 'asset-1', new_priority: 7 }] }, server.adminToken);
    const node = await registerNode(server, 'viewer');
    await server.api.post('/allocate', { free_space_gb: 1, node_id: 'viewer' }, node.token);
    const asset = await server.api.get('/assets/asset-1', node.token);
    expect(asset.body.allocations).toHaveLength(1);
    expect(asset.body.allocations[0]).toMatchObject({ node_name: 'viewer', state: 'active' });
    // The asset's trail, newest first: its allocation's grant, then its own priority change.
    expect(asset.body.history.map((event: { kind: string }) => event.kind)).toEqual(['allocation.granted', 'asset.priority_changed']);
    expect(asset.body.history[1]).toMatchObject({ kind: 'asset.priority_changed', actor: 'user:admin', data: { from: 5, to: 7 } });
    const missing = await server.api.get('/assets/nope', node.token);
    expect(missing.status).toBe(404);
    expect(missing.body.code).toBe('ASSET_NOT_FOUND');
  });

  it('updates priorities with the seed shape and counts only real changes', async () => {
    await server.api.post('/assets', makeAssets(3, { priority: 5 }), server.adminToken);
    const response = await server.api.post(
      '/update-ckan',
      {
        updates: [
          { asset_id: 'asset-1', new_priority: 9 },
          { asset_id: 'asset-2', new_priority: 5 },
          { asset_id: 'asset-3', new_priority: 1 },
        ],
      },
      server.adminToken,
    );
    expect(response.status).toBe(200);
    expect(response.body).toEqual({ status: 'success', updated_items: 2 });
  });

  it('applies nothing of a batch with an unknown id or an out-of-range priority', async () => {
    await server.api.post('/assets', makeAssets(2, { priority: 5 }), server.adminToken);
    const unknown = await server.api.post(
      '/update-ckan',
      {
        updates: [
          { asset_id: 'asset-1', new_priority: 9 },
          { asset_id: 'ghost', new_priority: 2 },
        ],
      },
      server.adminToken,
    );
    expect(unknown.status).toBe(404);
    expect(unknown.body).toMatchObject({ code: 'ASSET_NOT_FOUND', unknown_ids: ['ghost'] });
    expect(unknown.body.detail).toContain('"ghost"');
    for (const priority of [0, 11, 5.5, '7']) {
      const response = await server.api.post(
        '/update-ckan',
        {
          updates: [
            { asset_id: 'asset-1', new_priority: 9 },
            { asset_id: 'asset-2', new_priority: priority },
          ],
        },
        server.adminToken,
      );
      expect(response.status, String(priority)).toBe(422);
      expect(response.body.detail).toContain('new_priority');
    }
    const rows = await suite.database.handle.db.selectFrom('assets').select('priority').execute();
    expect(rows.map((row) => row.priority)).toEqual([5, 5]);
  });

  it('answers /status with the seed fields and real figures', async () => {
    await server.api.post('/assets', makeAssets(3, { priority: 4 }), server.adminToken);
    const node = await registerNode(server, 'counter');
    await server.api.post('/allocate', { free_space_gb: 1, node_id: 'counter', max_assets: 2 }, node.token);
    const status = await server.api.get('/status');
    expect(status.status).toBe(200);
    expect(status.body).toMatchObject({
      ckan_datasets: 3,
      active_allocations: 2,
      total_priority_score: 12,
      system_health: 'healthy',
      assets_by_state: { pending: 3 },
      nodes_by_status: { unknown: 1 },
      nodes_alive: 0,
      bytes_rescued: 0,
    });
    // Never null, also before the priority loop's first pass (loops do not run in tests).
    expect(status.body.next_auto_update).toBe(new Date(server.clock.now()).toISOString());
  });

  it('greets, reports health, and answers 503 when the database is gone', async () => {
    const greeting = await server.api.get('/');
    // Seed 002: the JSON string, as its clients parse it.
    expect(greeting.headers.get('content-type')).toMatch(/^application\/json/);
    expect(greeting.body).toBe('Hello rescuer 👋');
    expect(await server.api.get('/health')).toMatchObject({ status: 200, body: { status: 'healthy' } });
    expect(await server.api.get('/api/health')).toMatchObject({ status: 200, body: { status: 'healthy' } });
    await server.ctx.db.destroy();
    expect((await server.api.get('/health')).status).toBe(503);
    expect((await server.api.get('/api/health')).body).toEqual({ status: 'unhealthy' });
  });

  it('serves the OpenAPI document and the docs UI', async () => {
    const document = await server.api.get('/openapi.json');
    expect(document.status).toBe(200);
    for (const path of [
      '/allocate',
      '/release',
      '/complete',
      '/update-ckan',
      '/status',
      '/health',
      '/api/health',
      '/auth/signup',
      '/auth/login',
      '/api/workers/register',
      '/api/enrollment-tokens',
      '/assets',
      '/assets/{id}',
      '/allocations',
      '/events',
    ]) {
      expect(document.body.paths, path).toHaveProperty([path]);
    }
    expect(document.body.paths['/allocate'].post.requestBody.content['application/json'].schema.required).toEqual(['node_id']);
    const ui = await server.api.get('/docs/');
    expect(ui.status).toBe(200);
    expect(String(ui.body)).toContain('swagger');
  });

  it('takes replicas_target from REPLICAS_BY_PRIORITY when an asset does not say', async () => {
    await server.stop();
    server = await suite.start({
      replicasByPriority: [
        [8, 3],
        [1, 2],
      ],
    });
    await server.api.post(
      '/assets',
      [
        ...makeAssets(1, { priority: 9 }, 'high'),
        ...makeAssets(1, { priority: 8 }, 'edge'),
        ...makeAssets(1, { priority: 7 }, 'low'),
        ...makeAssets(1, { priority: 2, replicas_target: 5 }, 'own'),
      ],
      server.adminToken,
    );
    const targets = Object.fromEntries(
      (await server.api.get('/assets', server.adminToken)).body.items.map((asset: { id: string; replicas_target: number }) => [
        asset.id,
        asset.replicas_target,
      ]),
    );
    expect(targets).toEqual({ 'high-1': 3, 'edge-1': 3, 'low-1': 2, 'own-1': 5 });
  });
});
