import { sql } from 'kysely';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { dialects } from '../../test/databases.js';
import { reservationsMismatch } from '../../test/allocation-load.js';
import { makeAssets, registerNode, startTestServer, useTestServer, type TestServer } from '../../test/server.js';
import { buildConfig } from '../config.js';
import { expireDueAllocations } from './allocations.service.js';
import { failurePolicyFrom } from './failure-policy.js';

describe.each(dialects)('concurrent allocation on %s', (dialect) => {
  // 50 nodes register from one address here; the per-address limit is not what is tested.
  const overrides = { loginRateLimitPerMinute: 1000 };
  const suite = useTestServer(dialect, overrides);
  let servers: TestServer[] = [];

  beforeEach(async () => {
    const first = await suite.start();
    servers = [first];
    // PostgreSQL is where several instances share one database; SQLite serves one process.
    if (dialect === 'postgres') servers.push(await startTestServer(suite.database, overrides, first.clock));
  });
  afterEach(async () => {
    // The first server is the suite's: it stops after this.
    for (const server of servers.splice(1)) await server.stop();
  });

  /** Allocation counts straight from the database, for invariant checks. */
  async function countAllocations() {
    const db = suite.database.handle.db;
    const perAsset = await db
      .selectFrom('assets')
      .leftJoin('allocations', (join) => join.onRef('allocations.asset_id', '=', 'assets.id').on('allocations.state', 'in', ['active', 'completed']))
      .select(['assets.id', 'assets.replicas_target', 'assets.holders', sql<number>`count(allocations.id)`.as('live')])
      .groupBy(['assets.id', 'assets.replicas_target', 'assets.holders'])
      .execute();
    const pairs = await db
      .selectFrom('allocations')
      .select(['asset_id', 'node_id', sql<number>`count(*)`.as('count')])
      .where('state', 'in', ['active', 'completed'])
      .groupBy(['asset_id', 'node_id'])
      .having(sql`count(*)`, '>', 1)
      .execute();
    return { perAsset, duplicatePairs: pairs.length };
  }

  it('50 nodes at once never push an asset past replicas_target nor give a node an asset twice', async () => {
    const nodes = await Promise.all(Array.from({ length: 50 }, (_, index) => registerNode(servers[0]!, `racer-${index}`)));
    for (let round = 0; round < 3; round += 1) {
      await servers[0]!.api.post('/assets', makeAssets(10, { replicas_target: 3 }, `round${round}`), servers[0]!.adminToken);
      const responses = await Promise.all(
        nodes.map((node, index) =>
          servers[index % servers.length]!.api.post('/allocate', { free_space_gb: 100, node_id: node.name, max_assets: 2 }, node.token),
        ),
      );
      expect(responses.every((response) => response.status === 200 || response.status === 404)).toBe(true);
      const granted = responses.flatMap((response) => (response.status === 200 ? response.body : []));
      // 10 assets × 3 replicas: every slot is taken, none twice.
      expect(granted).toHaveLength(30);
    }
    const { perAsset, duplicatePairs } = await countAllocations();
    expect(duplicatePairs).toBe(0);
    for (const asset of perAsset) {
      expect(Number(asset.live)).toBe(asset.replicas_target);
      expect(asset.holders).toBe(Number(asset.live));
    }
  });

  it('concurrent requests of one node never spend more than it reported free', async () => {
    const node = await registerNode(servers[0]!, 'greedy');
    await servers[0]!.api.post('/assets', makeAssets(100, { size_mb: 100 }), servers[0]!.adminToken);
    const responses = await Promise.all(
      Array.from({ length: 20 }, (_, index) =>
        servers[index % servers.length]!.api.post('/allocate', { free_space_gb: 1, node_id: 'greedy', max_assets: 3 }, node.token),
      ),
    );
    const granted = responses.flatMap((response) => (response.status === 200 ? response.body : []));
    // 1 GiB holds ten 100 MiB assets, however the requests interleave.
    expect(granted).toHaveLength(10);
    expect(new Set(granted.map((asset: { id: string }) => asset.id)).size).toBe(10);
  });

  it('concurrent completions and releases keep holders and copies exact', async () => {
    const nodes = await Promise.all(Array.from({ length: 10 }, (_, index) => registerNode(servers[0]!, `worker-${index}`)));
    await servers[0]!.api.post('/assets', makeAssets(5, { replicas_target: 4, size_mb: 1 }), servers[0]!.adminToken);
    await Promise.all(nodes.map((node) => servers[0]!.api.post('/allocate', { free_space_gb: 100, node_id: node.name }, node.token)));
    const active = await suite.database.handle.db
      .selectFrom('allocations')
      .innerJoin('nodes', 'nodes.id', 'allocations.node_id')
      .select(['asset_id', 'nodes.name'])
      .where('state', '=', 'active')
      .execute();
    expect(active).toHaveLength(20);
    await Promise.all(
      active.map((allocation, index) => {
        const node = nodes.find((candidate) => candidate.name === allocation.name)!;
        const server = servers[index % servers.length]!;
        return index % 2 === 0
          ? server.api.post('/complete', { asset_id: allocation.asset_id, node_id: node.name, sha256: 'f'.repeat(64), bytes: 1024 * 1024 }, node.token)
          : server.api.post('/release', { asset_id: allocation.asset_id, node_id: node.name }, node.token);
      }),
    );
    const assets = await suite.database.handle.db.selectFrom('assets').select(['id', 'copies', 'holders']).execute();
    const completed = await suite.database.handle.db.selectFrom('allocations').select(['asset_id']).where('state', '=', 'completed').execute();
    for (const asset of assets) {
      const copies = completed.filter((row) => row.asset_id === asset.id).length;
      expect(asset.copies).toBe(copies);
      expect(asset.holders).toBe(copies);
    }
    // Every allocation ended: no node keeps a reservation (nodes.reserved_bytes, kept by triggers).
    const reserved = await suite.database.handle.db.selectFrom('nodes').select('reserved_bytes').where('name', 'like', 'worker-%').execute();
    expect(reserved.map((node) => Number(node.reserved_bytes))).toEqual(Array(10).fill(0));
  });

  it('expiry running while the same nodes claim keeps reservations and holders exact', async () => {
    const db = suite.database.handle.db;
    const nodes = await Promise.all(Array.from({ length: 20 }, (_, index) => registerNode(servers[0]!, `lapsing-${index}`)));
    await servers[0]!.api.post('/assets', makeAssets(200, { replicas_target: 2, size_mb: 1 }), servers[0]!.adminToken);
    const allocate = (node: (typeof nodes)[number], index: number) =>
      servers[index % servers.length]!.api.post('/allocate', { free_space_gb: 100, node_id: node.name, max_assets: 5 }, node.token);
    expect((await Promise.all(nodes.map(allocate))).map((response) => response.status)).toEqual(Array(20).fill(200));
    // Half of the leases ran out: expiry locks those nodes' rows (reservations) while they claim again.
    await db
      .updateTable('allocations')
      .set({ expires_at: 0 })
      .where('id', 'in', (eb) => eb.selectFrom('allocations').select('id').orderBy('id').limit(50))
      .execute();
    const now = servers[0]!.clock.now();
    const [answers, ...expired] = await Promise.all([
      Promise.all(nodes.map(allocate)),
      ...[1, 2, 3].map(() => expireDueAllocations(db, failurePolicyFrom(buildConfig()), now)),
    ]);
    expect(answers.map((response) => response.status)).toEqual(Array(20).fill(200));
    expect(expired.reduce((sum, count) => sum + count, 0)).toBe(50);
    expect(await reservationsMismatch(db)).toBe(0);
    const { perAsset, duplicatePairs } = await countAllocations();
    expect(duplicatePairs).toBe(0);
    for (const asset of perAsset) expect(asset.holders).toBe(Number(asset.live));
    // The 50 leases that did not run out, plus what the second round granted (fewer for a node
    // whose strike, from expiry, came before its claim).
    const regranted = answers.reduce((sum, response) => sum + (response.body as unknown[]).length, 0);
    const active = await db
      .selectFrom('allocations')
      .select(sql<number>`count(*)`.as('count'))
      .where('state', '=', 'active')
      .executeTakeFirstOrThrow();
    expect(Number(active.count)).toBe(50 + regranted);
  });
});
