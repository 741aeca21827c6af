import { beforeEach, describe, expect, it } from 'vitest';
import { dialects } from '../../test/databases.js';
import { makeAssets, registerNode, useTestServer, type TestServer } from '../../test/server.js';

const MIB = 1024 * 1024;
const AGREED = 'b'.repeat(64);

describe.each(dialects)('GET /assets/{id}: the whole trail and the agreed checksum on %s', (dialect) => {
  const suite = useTestServer(dialect);
  let server: TestServer;

  beforeEach(async () => {
    server = await suite.start();
  });

  const asset = async (id: string) => (await server.api.get(`/assets/${id}`, server.adminToken)).body;

  it('shows the checksum a quorum of verified copies agreed on, only once two agree', async () => {
    await server.api.post(
      '/assets',
      [...makeAssets(1, { priority: 9, size_mb: 1, replicas_target: 3 }, 'unsummed'), ...makeAssets(1, { size_mb: 1, sha256: 'c'.repeat(64) }, 'catalogued')],
      server.adminToken,
    );
    const nodes = [await registerNode(server, 'node-a'), await registerNode(server, 'node-b'), await registerNode(server, 'node-c')];
    for (const node of nodes) await server.api.post('/allocate', { free_space_gb: 1, node_id: node.name, max_assets: 1 }, node.token);
    const complete = (index: number) =>
      server.api.post('/complete', { asset_id: 'unsummed-1', node_id: nodes[index]!.name, sha256: AGREED, bytes: MIB }, nodes[index]!.token);

    expect((await complete(0)).status).toBe(200);
    // One copy counts, but one node's word is no quorum: the asset still has no checksum.
    expect(await asset('unsummed-1')).toMatchObject({ copies: 1, sha256: null, sha256_agreed: false });
    expect((await complete(1)).status).toBe(200);
    expect(await asset('unsummed-1')).toMatchObject({ copies: 2, sha256: AGREED, sha256_agreed: true });
    expect((await complete(2)).status).toBe(200);
    expect(await asset('unsummed-1')).toMatchObject({ state: 'rescued', copies: 3, sha256: AGREED, sha256_agreed: true });
    // An asset's own checksum (from the catalog) is never marked as agreed.
    expect(await asset('catalogued-1')).toMatchObject({ sha256: 'c'.repeat(64), sha256_agreed: false });
  });

  it("lists the events of the asset and of its allocations, newest first, and no other asset's", async () => {
    await server.api.post(
      '/assets',
      [...makeAssets(1, { priority: 9, size_mb: 1, replicas_target: 2 }, 'traced'), ...makeAssets(1, { size_mb: 1 }, 'other')],
      server.adminToken,
    );
    const [a, b] = [await registerNode(server, 'node-a'), await registerNode(server, 'node-b')];
    const allocate = (node: { name: string; token: string }) =>
      server.api.post('/allocate', { free_space_gb: 1, node_id: node.name, max_assets: 2 }, node.token);
    expect((await allocate(a)).body.map((granted: { id: string }) => granted.id)).toEqual(['traced-1', 'other-1']);
    expect((await server.api.post('/release', { asset_id: 'traced-1', node_id: 'node-a' }, a.token)).status).toBe(200);
    server.clock.advance(1000);
    expect((await allocate(b)).body.map((granted: { id: string }) => granted.id)).toEqual(['traced-1']);
    expect((await server.api.post('/complete', { asset_id: 'traced-1', node_id: 'node-b', sha256: AGREED, bytes: MIB }, b.token)).status).toBe(200);
    await server.api.post('/update-ckan', { updates: [{ asset_id: 'traced-1', new_priority: 3 }] }, server.adminToken);

    const { history, allocations } = await asset('traced-1');
    expect(history.map((event: { kind: string }) => event.kind)).toEqual([
      'asset.priority_changed',
      'allocation.completed',
      'allocation.granted',
      'allocation.released',
      'allocation.granted',
    ]);
    const ids = history.map((event: { id: number }) => event.id);
    expect(ids).toEqual([...ids].sort((x: number, y: number) => y - x));
    // Allocation events name their allocation, every one of this asset.
    const ofAllocations = history.filter((event: { subject_type: string }) => event.subject_type === 'allocation');
    expect(new Set(ofAllocations.map((event: { subject_id: string }) => Number(event.subject_id)))).toEqual(
      new Set(allocations.map((allocation: { id: number }) => allocation.id)),
    );
    expect(ofAllocations.every((event: { data: { asset_id: string } }) => event.data.asset_id === 'traced-1')).toBe(true);
  });
});
