import { afterEach, describe, expect, it } from 'vitest';
import { createTestDatabase, dialects, type TestDatabase } from '../../test/databases.js';
import { importAssets } from '../assets/assets.service.js';
import { buildConfig } from '../config.js';
import type { Db } from '../db/database.js';
import { insertNode } from '../nodes/nodes.repository.js';
import { allocateAssets, allocateBatch, allocationPolicyFrom, type AllocationOutcome, type AllocationRequest } from './allocate.service.js';
import { completeAllocation, releaseAllocation } from './allocations.service.js';
import { failurePolicyFrom } from './failure-policy.js';

const GIB = 1024 ** 3;
const NOW = 1_000_000;
const policy = { ...allocationPolicyFrom(buildConfig()), unknownSizeEstimateBytes: 2 * GIB, unknownSizeMaxPerRequest: 1, spreadTag: 'region', sourceHostMaxActive: 0 };

/**
 * A catalogue where the shared candidate list has work to do: replicas above 1, copies and claims
 * already held by some of the requesting nodes, a node in the same region as a holder, a source
 * one node found gone, assets of unknown size, sizes that do not fit every budget, a node with a
 * strike and a draining one.
 */
async function seed(db: Db): Promise<number[]> {
  const assets = Array.from({ length: 40 }, (_, index) => ({
    id: `a${String(index).padStart(2, '0')}`,
    url: `http://portal.example/a${index}`,
    name: `asset ${index}`,
    priority: 10 - (index % 5),
    size_mb: index % 7 === 3 ? null : 100 + ((index * 373) % 5000),
  }));
  await importAssets(db, assets, { replicasFor: (priority) => (priority >= 9 ? 3 : 2), actor: 'test', source: 'test' }, NOW - 10_000);
  const regions = ['eu', 'eu', 'us', 'us', 'ap', 'eu', 'us', 'ap'];
  const ids: number[] = [];
  for (const [index, region] of regions.entries()) {
    const node = await insertNode(db, { name: `n${index}`, hostname: `n${index}`, ip: null, sshPort: null, tags: { region }, tokenHash: null, now: NOW - 10_000 });
    ids.push(node!.id);
  }
  const [n0, n1, n2, , , , n6, n7] = ids as [number, number, number, number, number, number, number, number];
  // Earlier work: n0 keeps a00 and a05, n2 claims a01, n1 found a02's source gone.
  const earlier = NOW - 5_000;
  await allocateAssets(db, dialectOf(db), { nodeId: n0, freeBytes: 100 * GIB, maxAssets: 2, minPriority: 10, actor: 'test' }, policy, earlier);
  await completeAllocation(db, { assetId: 'a00', nodeId: n0, sha256: 'a'.repeat(64), bytes: 100 * 1024 * 1024, uri: null, actor: 'test' }, failurePolicyFrom(buildConfig()), earlier);
  await allocateAssets(db, dialectOf(db), { nodeId: n2, freeBytes: 100 * GIB, maxAssets: 1, minPriority: 9, maxPriority: 9, actor: 'test' }, policy, earlier);
  await allocateAssets(db, dialectOf(db), { nodeId: n1, freeBytes: 100 * GIB, maxAssets: 1, minPriority: 8, maxPriority: 8, actor: 'test' }, policy, earlier);
  const [held] = await db.selectFrom('allocations').select('asset_id').where('node_id', '=', n1).where('state', '=', 'active').execute();
  await releaseAllocation(db, { assetId: held!.asset_id, nodeId: n1, reason: 'gone', sourceStatus: 404, actor: 'test' }, { goneConfirmations: 2, ...failurePolicyFrom(buildConfig()) }, earlier);
  await db.updateTable('nodes').set({ strikes: 1 }).where('id', '=', n6).execute();
  await db.updateTable('nodes').set({ draining: 1 }).where('id', '=', n7).execute();
  return ids;
}

let currentDialect: TestDatabase['handle']['dialect'];
const dialectOf = (_db: Db) => currentDialect;

function requestsFor(ids: number[]): AllocationRequest[] {
  const [n0, n1, n2, n3, n4, n5, n6, n7] = ids as [number, number, number, number, number, number, number, number];
  return [
    { nodeId: n3, freeBytes: 100 * GIB, maxAssets: 4, minPriority: 1, actor: 'test' },
    // n0 holds two of the eight priority-10 assets; n1 found a priority-8 source gone.
    { nodeId: n0, freeBytes: 100 * GIB, maxAssets: 8, minPriority: 10, actor: 'test' },
    { nodeId: n1, freeBytes: 3 * GIB, maxAssets: 5, minPriority: 8, maxPriority: 8, actor: 'test' },
    { nodeId: n2, freeBytes: 100 * GIB, maxAssets: 2, minPriority: 8, maxPriority: 9, actor: 'test' },
    { nodeId: n4, freeBytes: 100 * GIB, maxAssets: 30, minPriority: 1, actor: 'test' },
    { nodeId: n5, freeBytes: 1 * GIB, maxAssets: 3, minPriority: 1, actor: 'test' },
    { nodeId: n6, freeBytes: 100 * GIB, maxAssets: 4, minPriority: 1, actor: 'test' },
    { nodeId: n7, freeBytes: 100 * GIB, maxAssets: 4, minPriority: 1, actor: 'test' },
    // The same node twice: its second request must see the first one's reservations.
    { nodeId: n5, freeBytes: 1 * GIB, maxAssets: 3, minPriority: 1, actor: 'test' },
  ];
}

const summary = (outcome: AllocationOutcome) => ({ refusal: outcome.refusal, assets: outcome.granted.map((asset) => [asset.id, asset.reservedBytes, asset.expiresAt]) });

/** Runs the requests one after another in node id order on one database and as one batch on the other. */
async function compare(one: TestDatabase, batched: TestDatabase, requests: AllocationRequest[]) {
  const order = requests.map((_, index) => index).sort((a, b) => requests[a]!.nodeId - requests[b]!.nodeId || a - b);
  const alone: AllocationOutcome[] = new Array(requests.length);
  for (const index of order) alone[index] = await allocateAssets(one.handle.db, one.handle.dialect, requests[index]!, policy, NOW);
  const together = await allocateBatch(batched.handle.db, batched.handle.dialect, requests, policy, NOW);
  expect(together.map(summary)).toEqual(alone.map(summary));
  const state = async (db: Db) => ({
    assets: await db.selectFrom('assets').select(['id', 'holders']).orderBy('id').execute(),
    allocations: await db.selectFrom('allocations').select(['asset_id', 'node_id', 'state', 'reserved_bytes', 'expires_at']).orderBy('asset_id').orderBy('node_id').execute(),
    events: (await db.selectFrom('events').select(['kind']).select((eb) => eb.fn.countAll<number>().as('count')).groupBy('kind').orderBy('kind').execute()).map((row) => [row.kind, Number(row.count)]),
  });
  expect(await state(batched.handle.db)).toEqual(await state(one.handle.db));
  for (const { handle } of [one, batched]) expect(await grantedEvents(handle.db)).toEqual(await grantsOf(handle.db));
  return alone;
}

/** Each allocation as its allocation.granted event describes it. */
async function grantedEvents(db: Db) {
  const events = await db.selectFrom('events').select(['subject_id', 'at', 'actor', 'data']).where('kind', '=', 'allocation.granted').execute();
  return events.map((event) => ({ id: Number(event.subject_id), at: Number(event.at), actor: event.actor, ...JSON.parse(event.data ?? 'null') })).sort((a, b) => a.id - b.id);
}

/** Each allocation's row, in the granted event's terms. */
async function grantsOf(db: Db) {
  const rows = await db.selectFrom('allocations').select(['id', 'created_at', 'asset_id', 'node_id', 'reserved_bytes', 'expires_at']).orderBy('id').execute();
  return rows.map((row) => ({ id: row.id, at: row.created_at, actor: 'test', asset_id: row.asset_id, node_id: row.node_id, reserved_bytes: row.reserved_bytes, expires_at: row.expires_at }));
}

describe.each(dialects)('group commit on %s', (dialect) => {
  const databases: TestDatabase[] = [];
  afterEach(async () => {
    for (const database of databases.splice(0)) await database.drop();
  });

  it('grants a batch exactly what the same requests one after another, in node id order, would get', async () => {
    const one = await createTestDatabase(dialect);
    const batched = await createTestDatabase(dialect);
    databases.push(one, batched);
    currentDialect = one.handle.dialect;
    const ids = await seed(one.handle.db);
    expect(await seed(batched.handle.db)).toEqual(ids);
    const requests = requestsFor(ids);

    const alone = await compare(one, batched, requests);
    // The scenario reaches every rule: a refusal, grants, shared assets, a node left short.
    expect(alone.map((outcome) => outcome.refusal).filter(Boolean)).toEqual(['draining']);
    expect(alone.filter((outcome) => outcome.granted.length > 0).length).toBeGreaterThanOrEqual(6);
    expect(new Set(alone.flatMap((outcome) => outcome.granted.map((asset) => asset.id))).size).toBeLessThan(alone.flatMap((outcome) => outcome.granted).length);
  });

  it('gives a node its own claim when the shared list, cut at its limit, holds only what it already has', async () => {
    const one = await createTestDatabase(dialect);
    const batched = await createTestDatabase(dialect);
    databases.push(one, batched);
    currentDialect = one.handle.dialect;
    const ids: number[][] = [];
    for (const { handle } of [one, batched]) {
      const assets = Array.from({ length: 40 }, (_, index) => ({ id: `b${String(index).padStart(2, '0')}`, url: `http://portal.example/b${index}`, name: `b${index}`, priority: index < 30 ? 10 : 5, size_mb: 10 }));
      await importAssets(handle.db, assets, { replicasFor: () => 2, actor: 'test', source: 'test' }, NOW - 10_000);
      const nodes = [];
      for (const name of ['keeper', 'newcomer']) nodes.push((await insertNode(handle.db, { name, hostname: name, ip: null, sshPort: null, tags: {}, tokenHash: null, now: NOW - 10_000 }))!.id);
      await allocateAssets(handle.db, handle.dialect, { nodeId: nodes[0]!, freeBytes: 100 * GIB, maxAssets: 30, minPriority: 10, actor: 'test' }, policy, NOW - 5_000);
      ids.push(nodes);
    }
    const [keeper, newcomer] = ids[0] as [number, number];
    const alone = await compare(one, batched, [
      { nodeId: keeper, freeBytes: 100 * GIB, maxAssets: 3, minPriority: 1, actor: 'test' },
      { nodeId: newcomer, freeBytes: 100 * GIB, maxAssets: 3, minPriority: 1, actor: 'test' },
    ]);
    expect(alone.map((outcome) => outcome.granted.map((asset) => asset.id))).toEqual([['b30', 'b31', 'b32'], ['b00', 'b01', 'b02']]);
  });
});
