import { afterEach, describe, expect, it } from 'vitest';
import { createTestDatabase, dialects, type TestDatabase } from '../../test/databases.js';
import { importAssets } from '../assets/assets.service.js';
import type { AssetInput } from '../assets/assets.schemas.js';
import { openDatabase, type DatabaseHandle } from '../db/database.js';
import { insertNode } from '../nodes/nodes.repository.js';
import { insertUser } from '../users/users.repository.js';
import { buildConfig } from '../config.js';
import { allocateAssets, allocateBatch, allocationPolicyFrom } from './grants.service.js';
import { expireDueAllocations, releaseAllocation } from './allocations.service.js';
import { completeAllocation } from './completion.service.js';
import { failurePolicyFrom } from './failure-policy.js';

const GIB = 1024 ** 3;
// Nodes here are trusted at once; the single claim's snapshot shows a new node's vetting count too.
const policy = { ...allocationPolicyFrom(buildConfig()), unknownSizeEstimateBytes: 1024, unknownSizeMaxPerRequest: 1, vettingAudits: 0 };
const releasing = { goneConfirmations: 2, ...failurePolicyFrom(buildConfig()) };

/**
 * Runs `work` on a second handle of the database that records every statement, `section` marking
 * where each part begins; the SQL text as checked in (the schema's random name left out).
 */
async function recordSql(
  database: TestDatabase,
  work: (handle: DatabaseHandle, section: (title: string) => void) => Promise<void>,
  onStatement?: (text: string) => void,
): Promise<string> {
  const statements: string[] = [];
  const handle = openDatabase({
    ...database.options,
    onQuery: (text) => {
      statements.push(text);
      onStatement?.(text);
    },
  });
  try {
    await work(handle, (title) => statements.push(`-- ${title}`));
  } finally {
    await handle.close();
  }
  return `${statements.join(';\n\n')};\n`.replace(/search_path=t_[0-9a-f_]+/g, 'search_path=<schema>');
}

async function addNode(database: TestDatabase, name: string, tags: Record<string, string>, now: number, operatorId: number | null = null): Promise<number> {
  return (await insertNode(database.handle.db, { name, hostname: name, ip: null, sshPort: null, tags, tokenHash: null, now, operatorId }))!.id;
}

/** A user to be a node's operator (DISTINCT_OPERATORS): its claims test what the operator holds. */
async function addOperator(database: TestDatabase, username: string, now: number): Promise<number> {
  return (await insertUser(database.handle.db, { username, passwordHash: 'x', role: 'user', now }))!.id;
}

const asset = (id: string, priority: number, sizeMb: number | null, replicas: number, host = 'portal.example'): AssetInput => ({
  id,
  url: `http://${host}/${id}`,
  name: id,
  priority,
  size_mb: sizeMb,
  replicas_target: replicas,
});

async function addAssets(database: TestDatabase, assets: AssetInput[], now: number): Promise<void> {
  await importAssets(database.handle.db, assets, { replicasFor: () => 1, actor: 'test', source: 'test' }, now);
}

/**
 * The concurrency-critical statements, compiled for each database and checked in beside this
 * file, so a change to them shows up in review as SQL rather than as query-builder code.
 */
describe.each(dialects)('claim SQL on %s', (dialect) => {
  let database: TestDatabase;
  afterEach(async () => {
    await database.drop();
  });

  it('matches the reviewed snapshot', async () => {
    database = await createTestDatabase(dialect);
    const now = 1_000;
    await importAssets(
      database.handle.db,
      [
        { id: 'a', url: 'http://x/a', name: 'a', priority: 5, size_mb: 1 },
        { id: 'b', url: 'http://x/b', name: 'b', priority: 5, size_mb: null },
      ],
      { replicasFor: () => 1, actor: 'test', source: 'test' },
      now,
    );
    const node = await addNode(database, 'n', {}, now, await addOperator(database, 'operator', now));
    const text = await recordSql(database, async (handle, section) => {
      section('allocate');
      await allocateAssets(
        handle.db,
        handle.dialect,
        { nodeId: node, freeBytes: 10 * GIB, maxAssets: 5, minPriority: 1, actor: 't' },
        { ...policy, vettingAudits: 5 },
        now,
      );
      section('release');
      await releaseAllocation(handle.db, { assetId: 'b', nodeId: node, reason: null, actor: 't' }, releasing, now);
      section('complete');
      await completeAllocation(
        handle.db,
        { assetId: 'a', nodeId: node, sha256: 'f'.repeat(64), bytes: 1024 * 1024, uri: null, actor: 't' },
        failurePolicyFrom(buildConfig()),
        now,
      );
      section('expire');
      await expireDueAllocations(handle.db, failurePolicyFrom(buildConfig()), now + 2000);
    });
    await expect(text).toMatchFileSnapshot(`./__snapshots__/claim.${dialect}.sql`);
  });

  /**
   * A batch of four: a, first in node order, takes c1 from the shared list; k holds every
   * priority-9 asset, so the shared list, cut at its limit, holds less than k's own claim would
   * read, and k and every request after it get their own claims in the same transaction, in
   * order; n may not get c1 (cooling down) or g1 (it found the source gone) and takes k00; d is
   * draining and reports no free space.
   */
  it('matches the reviewed snapshot of a batch', async () => {
    database = await createTestDatabase(dialect);
    const now = 10_000;
    const hosts = ['a.example', 'b.example', 'c.example'];
    await addAssets(database, [asset('c1', 9, 1, 2), asset('g1', 9, 1, 2)], now - 3_000);
    // k00–k11 on three capped hosts, k12–k29 on a host each: the list is cut before it reaches what k does not hold.
    const later = Array.from({ length: 30 }, (_, index) =>
      asset(`k${String(index).padStart(2, '0')}`, 9, 1, 2, index < 12 ? hosts[index % 3] : `k${index}.example`),
    );
    await addAssets(database, [...later, asset('u1', 9, null, 2), asset('p1', 5, 1, 1)], now - 2_000);
    const a = await addNode(database, 'a', { region: 'ap' }, now);
    const k = await addNode(database, 'k', { region: 'eu' }, now);
    const n = await addNode(database, 'n', { region: 'us' }, now);
    const d = await addNode(database, 'd', {}, now);
    const { db, dialect: setupDialect } = database.handle;
    await allocateAssets(db, setupDialect, { nodeId: n, freeBytes: 10 * GIB, maxAssets: 2, minPriority: 9, actor: 'test' }, policy, now - 1_000);
    await releaseAllocation(db, { assetId: 'c1', nodeId: n, reason: 'boom', cause: 'source_error', actor: 'test' }, releasing, now - 1_000);
    await releaseAllocation(db, { assetId: 'g1', nodeId: n, reason: null, sourceStatus: 404, actor: 'test' }, releasing, now - 1_000);
    await allocateAssets(db, setupDialect, { nodeId: k, freeBytes: 10 * GIB, maxAssets: 40, minPriority: 9, actor: 'test' }, policy, now - 1_000);
    await db.updateTable('nodes').set({ draining: 1 }).where('id', '=', d).execute();

    const requests = [a, k, n, d].map((nodeId) => ({ nodeId, freeBytes: nodeId === d ? null : 10 * GIB, maxAssets: 1, minPriority: 1, actor: 't' }));
    let outcomes: Awaited<ReturnType<typeof allocateBatch>> = [];
    const text = await recordSql(database, async (handle, section) => {
      section('allocate a batch');
      outcomes = await allocateBatch(handle.db, handle.dialect, requests, policy, now);
    });
    // The snapshot is of the path described above only if the batch went that way.
    expect(outcomes.map((outcome) => [outcome.refusal, outcome.granted.map((granted) => granted.id)])).toEqual([
      [undefined, ['c1']],
      [undefined, ['p1']],
      [undefined, ['k00']],
      ['draining', []],
    ]);
    await expect(text).toMatchFileSnapshot(`./__snapshots__/claim-batch.${dialect}.sql`);
  });

  /**
   * The wait pass (PostgreSQL; SQLite has no row locks to skip): another transaction holds w2's
   * row while a batch runs, so the batch skips it and b is left short; b's second pass, in its own
   * transaction, reads w2, waits for its lock and takes it.
   */
  // Registered on PostgreSQL only: on SQLite there is no such pass, so no test to skip.
  if (dialect === 'postgres')
    it('matches the reviewed snapshot of the wait pass after a batch', async () => {
      database = await createTestDatabase(dialect);
      const now = 10_000;
      await addAssets(database, [asset('w1', 5, 1, 1), asset('w2', 6, 1, 2), asset('w3', 5, 1, 1)], now - 2_000);
      const a = await addNode(database, 'a', { region: 'eu' }, now);
      const b = await addNode(database, 'b', { region: 'us' }, now);
      const c = await addNode(database, 'c', { region: 'eu' }, now);
      await allocateAssets(
        database.handle.db,
        database.handle.dialect,
        { nodeId: c, freeBytes: 10 * GIB, maxAssets: 1, minPriority: 6, actor: 'test' },
        policy,
        now - 1_000,
      );

      let release!: () => void;
      const released = new Promise<void>((resolve) => (release = resolve));
      let locked!: () => void;
      const isLocked = new Promise<void>((resolve) => (locked = resolve));
      const blocker = database.handle.db.transaction().execute(async (trx) => {
        await trx.selectFrom('assets').select('id').where('id', '=', 'w2').forUpdate().execute();
        locked();
        await released;
      });
      await isLocked;

      const requests = [
        { nodeId: a, freeBytes: 10 * GIB, maxAssets: 1, minPriority: 1, actor: 't' },
        { nodeId: b, freeBytes: 10 * GIB, maxAssets: 2, minPriority: 1, actor: 't' },
      ];
      let outcomes: Awaited<ReturnType<typeof allocateBatch>> = [];
      let text: string;
      try {
        text = await recordSql(
          database,
          async (handle, section) => {
            section('allocate a batch, w2 locked by another transaction');
            outcomes = await allocateBatch(handle.db, handle.dialect, requests, policy, now);
          },
          // The lock goes once the batch has committed: the wait pass's SQL is the same whether it then waits or not.
          (text) => {
            if (text === 'commit') release();
          },
        );
      } finally {
        release();
        await blocker;
      }
      expect(outcomes.map((outcome) => outcome.granted.map((granted) => granted.id))).toEqual([['w1'], ['w3', 'w2']]);
      await expect(text).toMatchFileSnapshot('./__snapshots__/claim-wait.postgres.sql');
    });
});
