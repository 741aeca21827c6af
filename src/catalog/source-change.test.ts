import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { dialects } from '../../test/databases.js';
import { generatePackages } from '../../test/fake-portal.js';
import { catalogConfig, createTestIo, importServerConfig, useCatalogTestbed } from '../../test/import-io.js';
import { registerNode, startTestServer, type TestServer } from '../../test/server.js';
import { importCkan } from './ckan.import.js';

const HOUR = 3_600_000;
const NEW_SHA = 'f'.repeat(64);

interface Resource {
  id: string;
  url: string;
  name: string;
  size: number;
  hash: string;
}

describe.each(dialects)('a re-sync with a new URL or checksum on %s', (dialect) => {
  const testbed = useCatalogTestbed(dialect);
  let server: TestServer;

  beforeEach(async () => {
    server = await startTestServer(testbed.database, importServerConfig({ defaultReplicasTarget: 2 }));
  });
  afterEach(async () => {
    await server.stop();
  });

  const db = () => testbed.database.handle.db;
  const sync = () => importCkan(db(), catalogConfig({ defaultReplicasTarget: 2 }), createTestIo(server.clock.now()), `${testbed.portal.url}/changing`, {});
  const asset = (id: string) =>
    db().selectFrom('assets').select(['url', 'sha256', 'state', 'copies', 'holders', 'replicas_target']).where('id', '=', id).executeTakeFirstOrThrow();
  const allocationsOf = (id: string) =>
    db().selectFrom('allocations').select(['node_id', 'state', 'verified', 'end_reason', 'sha256']).where('asset_id', '=', id).orderBy('node_id').execute();
  const complete = (node: { name: string; token: string }, resource: Resource, sha256 = resource.hash) =>
    server.api.post('/complete', { asset_id: resource.id, node_id: node.name, sha256, bytes: resource.size }, node.token);

  it('supersedes the earlier copies and claims, recounts, makes the asset pending again and records why', async () => {
    const packages = generatePackages(1, 4) as { resources: Resource[] }[];
    const [moved, rehashed, unhashed, renamed] = packages[0]!.resources as [Resource, Resource, Resource, Resource];
    testbed.portal.setPackages('changing', packages);
    expect(await sync()).toMatchObject({ new: 4 });

    // Two nodes copy everything, except that the second has not finished `moved` yet.
    const nodes = [await registerNode(server, 'n1'), await registerNode(server, 'n2')];
    for (const node of nodes) {
      const granted = await server.api.post('/allocate', { free_space_gb: 1, node_id: node.name, max_assets: 10 }, node.token);
      expect(granted.body).toHaveLength(4);
      for (const resource of [moved, rehashed, unhashed, renamed]) {
        if (node.name === 'n2' && resource === moved) continue;
        expect((await complete(node, resource)).status).toBe(200);
      }
    }
    expect(await asset(moved.id)).toMatchObject({ state: 'pending', copies: 1, holders: 2 });
    expect(await asset(rehashed.id)).toMatchObject({ state: 'rescued', copies: 2, holders: 2 });

    // The portal moves one file, publishes another checksum for the second, drops the third's
    // checksum (which proves nothing) and renames the fourth.
    const [oldUrl, oldSha, keptSha] = [moved.url, rehashed.hash, unhashed.hash];
    moved.url = 'https://mirror.example.org/moved/file-0.nc';
    rehashed.hash = NEW_SHA;
    unhashed.hash = '';
    renamed.name = 'renamed.nc';
    server.clock.advance(HOUR);
    const summary = await sync();
    expect(summary).toMatchObject({ updated: 3, unchanged: 1, superseded: 2 });

    expect(await asset(moved.id)).toMatchObject({ url: moved.url, state: 'pending', copies: 0, holders: 0 });
    expect(await asset(rehashed.id)).toMatchObject({ sha256: NEW_SHA, state: 'pending', copies: 0, holders: 0 });
    expect(await asset(unhashed.id)).toMatchObject({ sha256: keptSha, state: 'rescued', copies: 2 });
    expect(await asset(renamed.id)).toMatchObject({ state: 'rescued', copies: 2, holders: 2 });
    // Nothing is deleted: the stale rows stay, with what the nodes reported.
    expect(await allocationsOf(moved.id)).toEqual([
      { node_id: nodes[0]!.id, state: 'superseded', verified: 0, end_reason: 'source_changed', sha256: moved.hash.toLowerCase() },
      { node_id: nodes[1]!.id, state: 'superseded', verified: 0, end_reason: 'source_changed', sha256: null },
    ]);
    expect((await allocationsOf(rehashed.id)).map((row) => row.state)).toEqual(['superseded', 'superseded']);
    expect((await allocationsOf(renamed.id)).map((row) => [row.state, row.verified])).toEqual([
      ['completed', 1],
      ['completed', 1],
    ]);

    const events = await server.api.get('/events?kind=asset.source_changed', server.adminToken);
    const byAsset = Object.fromEntries(events.body.items.map((event: { subject_id: string; data: unknown }) => [event.subject_id, event.data]));
    expect(Object.keys(byAsset).sort()).toEqual([moved.id, rehashed.id]);
    expect(byAsset[moved.id]).toMatchObject({
      reason: 'source_changed',
      url: { from: oldUrl, to: moved.url },
      sha256: null,
      superseded_copies: [{ node_id: nodes[0]!.id }],
      ended_claims: [{ node_id: nodes[1]!.id }],
      copies: 0,
      state: 'pending',
    });
    expect(byAsset[rehashed.id]).toMatchObject({ url: null, sha256: { from: oldSha, to: NEW_SHA }, superseded_copies: [{}, {}], ended_claims: [] });

    // The same nodes may copy the new version: the old checksum is refused, the new one counts.
    const again = await server.api.post('/allocate', { free_space_gb: 1, node_id: 'n1', max_assets: 10 }, nodes[0]!.token);
    expect(again.body.map((granted: { id: string; url: string }) => [granted.id, granted.url]).sort()).toEqual([
      [moved.id, moved.url],
      [rehashed.id, rehashed.url],
    ]);
    expect((await complete(nodes[0]!, rehashed, oldSha)).body).toMatchObject({ code: 'CHECKSUM_MISMATCH' });
    // The mismatch puts the pair on RETRY_COOLDOWN_SECONDS before n1 is given the asset again.
    server.clock.advance(server.ctx.config.retryCooldownMs);
    await server.api.post('/allocate', { free_space_gb: 1, node_id: 'n1', max_assets: 10 }, nodes[0]!.token);
    expect((await complete(nodes[0]!, rehashed, NEW_SHA)).body).toMatchObject({ copies: 1, verified: true });
    const all = await db().selectFrom('assets').select(['holders', 'replicas_target']).execute();
    expect(all.every((row) => row.holders <= row.replicas_target)).toBe(true);

    // An unchanged re-sync supersedes nothing more.
    server.clock.advance(HOUR);
    expect(await sync()).toMatchObject({ updated: 0, unchanged: 4, superseded: 0 });
    expect((await server.api.get('/events?kind=asset.source_changed', server.adminToken)).body.items).toHaveLength(2);
  });
});
