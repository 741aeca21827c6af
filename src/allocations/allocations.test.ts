import { beforeEach, describe, expect, it } from 'vitest';
import { dialects } from '../../test/databases.js';
import { reservationsMismatch } from '../../test/allocation-load.js';
import { makeAssets, registerNode, useTestServer, type TestServer } from '../../test/server.js';

const MIB = 1024 * 1024;

describe.each(dialects)('rescue allocation API on %s', (dialect) => {
  const suite = useTestServer(dialect, { unknownSizeEstimateBytes: 1024 * MIB, unknownSizeMaxPerRequest: 1 });
  let server: TestServer;

  beforeEach(async () => {
    server = await suite.start();
  });

  const importAssets = async (assets: Record<string, unknown>[]) => {
    const response = await server.api.post('/assets', assets, server.adminToken);
    expect(response.status).toBe(200);
    return response.body;
  };

  it('imports assets in the seed format and answers /allocate with the seed shape', async () => {
    expect(await importAssets([{ id: 'asset-1', url: 'http://example.com/file1.zip', size_mb: 500, priority: 6, name: 'file1.zip' }])).toEqual({
      status: 'success',
      imported: 1,
    });
    const node = await registerNode(server, 'node-123');
    const response = await server.api.post('/allocate', { free_space_gb: 10, node_id: 'node-123' }, node.token);
    expect(response.status).toBe(200);
    expect(response.body).toHaveLength(1);
    expect(response.body[0]).toMatchObject({ id: 'asset-1', url: 'http://example.com/file1.zip', size_mb: 500, priority: 6, name: 'file1.zip' });
    expect(response.body[0].size_bytes).toBe(500 * MIB);
  });

  it('answers 404 with the seed detail when nothing fits', async () => {
    await importAssets(makeAssets(1, { size_mb: 5000 }));
    const node = await registerNode(server, 'small');
    const response = await server.api.post('/allocate', { free_space_gb: 1, node_id: 'small' }, node.token);
    expect(response.status).toBe(404);
    expect(response.body).toEqual({ detail: 'No available assets matching the criteria', code: 'NO_ASSETS_AVAILABLE' });
  });

  it('orders by priority, then fewest holders, then oldest, then id (invariant 3)', async () => {
    await importAssets([
      { id: 'b-low', url: 'http://x/1', name: 'low', priority: 2, size_mb: 1 },
      { id: 'c-high', url: 'http://x/2', name: 'high', priority: 9, size_mb: 1 },
      { id: 'a-high', url: 'http://x/3', name: 'high too', priority: 9, size_mb: 1 },
      { id: 'd-mid', url: 'http://x/4', name: 'mid', priority: 5, size_mb: 1, replicas_target: 2 },
    ]);
    server.clock.advance(1000);
    await importAssets([{ id: '0-mid-newer', url: 'http://x/5', name: 'mid newer', priority: 5, size_mb: 1, replicas_target: 2 }]);
    const first = await registerNode(server, 'first');
    // Same priority and holders: the older d-mid goes before 0-mid-newer, although its id sorts after.
    const taken = await server.api.post('/allocate', { free_space_gb: 1, node_id: 'first', max_assets: 3 }, first.token);
    expect(taken.body.map((asset: { id: string }) => asset.id)).toEqual(['a-high', 'c-high', 'd-mid']);
    // Now d-mid has a holder, so the asset with none goes first; then the lowest priority.
    const second = await registerNode(server, 'second');
    const response = await server.api.post('/allocate', { free_space_gb: 1, node_id: 'second' }, second.token);
    expect(response.body.map((asset: { id: string }) => asset.id)).toEqual(['0-mid-newer', 'd-mid', 'b-low']);
  });

  it('never exceeds replicas_target nor gives one node an asset twice (invariant 1)', async () => {
    await importAssets(makeAssets(3, { replicas_target: 2 }));
    const nodes = await Promise.all(['n1', 'n2', 'n3'].map((name) => registerNode(server, name)));
    const got: Record<string, string[]> = {};
    for (const node of nodes) {
      const response = await server.api.post('/allocate', { free_space_gb: 100, node_id: node.name }, node.token);
      got[node.name] = response.status === 200 ? response.body.map((asset: { id: string }) => asset.id) : [];
    }
    expect(got.n1).toEqual(['asset-1', 'asset-2', 'asset-3']);
    expect(got.n2).toEqual(['asset-1', 'asset-2', 'asset-3']);
    expect(got.n3).toEqual([]);
    const again = await server.api.post('/allocate', { free_space_gb: 100, node_id: 'n1' }, nodes[0]!.token);
    expect(again.status).toBe(404);
  });

  it('never promises a node more than it reported free minus its active allocations (invariant 2)', async () => {
    await importAssets(makeAssets(10, { size_mb: 400 }));
    const node = await registerNode(server, 'budget');
    const first = await server.api.post('/allocate', { free_space_gb: 1, node_id: 'budget' }, node.token);
    expect(first.body).toHaveLength(2); // 2 × 400 MiB within 1024 MiB
    // Still reporting 1 GiB free: the 800 MiB already promised leave room for nothing more.
    const second = await server.api.post('/allocate', { free_space_gb: 1, node_id: 'budget' }, node.token);
    expect(second.status).toBe(404);
    const third = await server.api.post('/allocate', { free_space_gb: 1.5, node_id: 'budget' }, node.token);
    expect(third.body).toHaveLength(1);
  });

  it("keeps each node's reservations equal to its active allocations through grants, completions, releases and deletes", async () => {
    await importAssets(makeAssets(6, { size_mb: 100 }));
    const node = await registerNode(server, 'keeper');
    const other = await registerNode(server, 'other');
    const db = suite.database.handle.db;
    const reservedOf = async (name: string) =>
      Number((await db.selectFrom('nodes').select('reserved_bytes').where('name', '=', name).executeTakeFirstOrThrow()).reserved_bytes);
    const granted = (await server.api.post('/allocate', { free_space_gb: 10, node_id: 'keeper', max_assets: 3 }, node.token)).body as { id: string }[];
    await server.api.post('/allocate', { free_space_gb: 10, node_id: 'other', max_assets: 2 }, other.token);
    expect([await reservedOf('keeper'), await reservedOf('other')]).toEqual([300 * MIB, 200 * MIB]);
    const [done, released, kept] = granted.map((asset) => asset.id);
    expect((await server.api.post('/complete', { asset_id: done, node_id: 'keeper', sha256: 'a'.repeat(64), bytes: 100 * MIB }, node.token)).status).toBe(200);
    expect((await server.api.post('/release', { asset_id: released, node_id: 'keeper' }, node.token)).status).toBe(200);
    expect([await reservedOf('keeper'), await reservedOf('other')]).toEqual([100 * MIB, 200 * MIB]);
    // Whatever writes allocations, the triggers follow: an update back to active, then a delete.
    await db
      .updateTable('allocations')
      .set({ state: 'active' })
      .where('asset_id', '=', released as string)
      .execute();
    expect(await reservedOf('keeper')).toBe(200 * MIB);
    await db
      .deleteFrom('allocations')
      .where('asset_id', '=', kept as string)
      .execute();
    expect(await reservedOf('keeper')).toBe(100 * MIB);
    expect(await reservationsMismatch(db)).toBe(0);
  });

  it('grants assets whose ids need quoting, and records them exactly in allocations and events', async () => {
    const ids = ['a "quoted", {braced} \\ id', 'NULL', 'ünïcode ✓'];
    await importAssets(ids.map((id, index) => ({ id, url: `http://example.com/${index}`, name: `odd ${index}`, size_mb: 1, priority: 9 - index })));
    const node = await registerNode(server, 'quoting');
    const response = await server.api.post('/allocate', { free_space_gb: 10, node_id: 'quoting', max_assets: 3 }, node.token);
    expect(response.body.map((asset: { id: string }) => asset.id)).toEqual(ids);
    const allocations = await server.api.get('/allocations?node=quoting', server.adminToken);
    expect(allocations.body.items.map((allocation: { asset_id: string }) => allocation.asset_id).sort()).toEqual([...ids].sort());
    const events = await suite.database.handle.db.selectFrom('events').select('data').where('kind', '=', 'allocation.granted').execute();
    expect(events.map((event) => JSON.parse(event.data as string).asset_id).sort()).toEqual([...ids].sort());
  });

  it('hands out assets of unknown size with the estimate and at most the cap per request', async () => {
    await importAssets(makeAssets(3, { size_mb: null, priority: 9 }, 'unknown'));
    await importAssets(makeAssets(2, { size_mb: 10, priority: 1 }, 'known'));
    const node = await registerNode(server, 'estimates');
    const response = await server.api.post('/allocate', { free_space_gb: 100, node_id: 'estimates' }, node.token);
    expect(response.body.map((asset: { id: string }) => asset.id)).toEqual(['unknown-1', 'known-1', 'known-2']);
    expect(response.body[0]).toMatchObject({ size_mb: null, size_bytes: null });
    const allocations = await server.api.get('/allocations?node=estimates&state=active', server.adminToken);
    const unknown = allocations.body.items.find((allocation: { asset_id: string }) => allocation.asset_id === 'unknown-1');
    expect(unknown.reserved_bytes).toBe(1024 * MIB);
    // With under 1 GiB of budget left, no unknown-size asset is handed out at all.
    const other = await registerNode(server, 'tiny');
    expect((await server.api.post('/allocate', { free_space_gb: 0.5, node_id: 'tiny' }, other.token)).status).toBe(404);
  });

  it('respects max_assets and min_priority', async () => {
    await importAssets([...makeAssets(5, { priority: 3 }, 'low'), ...makeAssets(5, { priority: 8 }, 'high')]);
    const node = await registerNode(server, 'picky');
    const few = await server.api.post('/allocate', { free_space_gb: 100, node_id: 'picky', max_assets: 2 }, node.token);
    expect(few.body.map((asset: { id: string }) => asset.id)).toEqual(['high-1', 'high-2']);
    const rest = await server.api.post('/allocate', { free_space_gb: 100, node_id: 'picky', min_priority: 8 }, node.token);
    expect(rest.body.map((asset: { id: string }) => asset.id)).toEqual(['high-3', 'high-4', 'high-5']);
  });

  it('creates a node never seen before when an admin allocates for it', async () => {
    await importAssets(makeAssets(1));
    const response = await server.api.post('/allocate', { free_space_gb: 10, node_id: 'node-new' }, server.adminToken);
    expect(response.status).toBe(200);
    const allocations = await server.api.get('/allocations?node=node-new', server.adminToken);
    expect(allocations.body.items).toHaveLength(1);
    expect(allocations.body.items[0]).toMatchObject({ node_name: 'node-new', state: 'active', asset_id: 'asset-1' });
  });

  it('releases with the seed response and 404 when nothing is held', async () => {
    await importAssets(makeAssets(1));
    const node = await registerNode(server, 'releaser');
    await server.api.post('/allocate', { free_space_gb: 10, node_id: 'releaser' }, node.token);
    const released = await server.api.post('/release', { asset_id: 'asset-1', node_id: 'releaser', reason: 'disk full' }, node.token);
    expect(released.status).toBe(200);
    expect(released.body).toEqual({ status: 'success', message: 'Asset released successfully' });
    const again = await server.api.post('/release', { asset_id: 'asset-1', node_id: 'releaser' }, node.token);
    expect(again.status).toBe(404);
    expect(again.body.code).toBe('NOT_ALLOCATED');
    // Released work goes back to the pool, to anyone.
    const other = await registerNode(server, 'other');
    expect((await server.api.post('/allocate', { free_space_gb: 10, node_id: 'other' }, other.token)).body[0].id).toBe('asset-1');
    const events = await server.api.get('/events?kind=allocation.released', server.adminToken);
    expect(events.body.items[0]).toMatchObject({ actor: 'node:releaser', data: { asset_id: 'asset-1', reason: 'disk full' } });
  });

  it('records a completed copy; the asset is rescued when enough copies exist', async () => {
    const sha = 'a'.repeat(64);
    await importAssets(makeAssets(1, { replicas_target: 2, size_bytes: 1234, size_mb: undefined }));
    const [a, b] = [await registerNode(server, 'copy-a'), await registerNode(server, 'copy-b')];
    for (const node of [a, b]) await server.api.post('/allocate', { free_space_gb: 1, node_id: node.name }, node.token);
    const first = await server.api.post('/complete', { asset_id: 'asset-1', node_id: 'copy-a', sha256: sha, bytes: 1234 }, a.token);
    expect(first.status).toBe(200);
    expect(first.body).toMatchObject({ status: 'success', asset_state: 'pending', copies: 1, replicas_target: 2 });
    const second = await server.api.post(
      '/complete',
      { asset_id: 'asset-1', node_id: 'copy-b', sha256: sha, bytes: 1234, uri: 'magnet:?xt=urn:btih:abc' },
      b.token,
    );
    expect(second.body).toMatchObject({ asset_state: 'rescued', copies: 2 });
    const twice = await server.api.post('/complete', { asset_id: 'asset-1', node_id: 'copy-b', sha256: sha, bytes: 1234 }, b.token);
    expect(twice.status).toBe(409);
    expect(twice.body.code).toBe('ALREADY_COMPLETED');
    const asset = await server.api.get('/assets/asset-1', a.token);
    expect(asset.body).toMatchObject({ state: 'rescued', copies: 2, active_allocations: 0 });
    expect(asset.body.copies_detail.map((copy: { node_name: string }) => copy.node_name).sort()).toEqual(['copy-a', 'copy-b']);
    const status = await server.api.get('/status');
    expect(status.body.bytes_rescued).toBe(2468);
  });

  it('does not count a copy whose checksum or size differs from what is expected', async () => {
    await importAssets([
      { ...makeAssets(1)[0], id: 'with-sha', sha256: 'b'.repeat(64) },
      { ...makeAssets(1)[0], id: 'with-size', size_bytes: 100, size_mb: undefined },
    ]);
    const node = await registerNode(server, 'liar');
    await server.api.post('/allocate', { free_space_gb: 10, node_id: 'liar' }, node.token);
    const wrongSha = await server.api.post('/complete', { asset_id: 'with-sha', node_id: 'liar', sha256: 'c'.repeat(64), bytes: 100 * MIB }, node.token);
    expect(wrongSha.status).toBe(409);
    expect(wrongSha.body.code).toBe('CHECKSUM_MISMATCH');
    const wrongSize = await server.api.post('/complete', { asset_id: 'with-size', node_id: 'liar', sha256: 'c'.repeat(64), bytes: 99 }, node.token);
    expect(wrongSize.body.code).toBe('SIZE_MISMATCH');
    const assets = await server.api.get('/assets', node.token);
    for (const asset of assets.body.items) expect(asset).toMatchObject({ copies: 0, active_allocations: 0, state: 'pending' });
    const failed = await server.api.get('/allocations?state=failed', server.adminToken);
    expect(failed.body.items.map((allocation: { end_reason: string }) => allocation.end_reason).sort()).toEqual(['checksum_mismatch', 'size_mismatch']);
  });

  it('answers 404 when completing something the node does not hold', async () => {
    await importAssets(makeAssets(1));
    const node = await registerNode(server, 'idle');
    const response = await server.api.post('/complete', { asset_id: 'asset-1', node_id: 'idle', sha256: 'a'.repeat(64), bytes: 1 }, node.token);
    expect(response.status).toBe(404);
    expect(response.body.code).toBe('NOT_ALLOCATED');
    const unknown = await server.api.post('/complete', { asset_id: 'nope', node_id: 'idle', sha256: 'a'.repeat(64), bytes: 1 }, node.token);
    expect(unknown.status).toBe(404);
    expect(unknown.body.code).toBe('ASSET_NOT_FOUND');
  });

  it('lists allocations by node, asset and state, a page at a time', async () => {
    await importAssets(makeAssets(5));
    const node = await registerNode(server, 'pager');
    await server.api.post('/allocate', { free_space_gb: 100, node_id: 'pager' }, node.token);
    const page1 = await server.api.get('/allocations?node=pager&limit=2', server.adminToken);
    expect(page1.body.items).toHaveLength(2);
    const page2 = await server.api.get(`/allocations?node=pager&limit=2&cursor=${page1.body.next_cursor}`, server.adminToken);
    const page3 = await server.api.get(`/allocations?node=pager&limit=2&cursor=${page2.body.next_cursor}`, server.adminToken);
    const ids = [...page1.body.items, ...page2.body.items, ...page3.body.items].map((allocation: { asset_id: string }) => allocation.asset_id);
    expect(ids.sort()).toEqual(['asset-1', 'asset-2', 'asset-3', 'asset-4', 'asset-5']);
    expect(page3.body.next_cursor).toBeNull();
    const byAsset = await server.api.get('/allocations?asset=asset-3', node.token);
    expect(byAsset.body.items).toHaveLength(1);
  });
});
