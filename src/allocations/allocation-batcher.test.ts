import { sql } from 'kysely';
import { afterEach, describe, expect, it } from 'vitest';
import { createTestDatabase, dialects, type TestDatabase } from '../../test/databases.js';
import { importAssets } from '../assets/assets.service.js';
import { createFakeClock } from '../clock.js';
import { buildConfig } from '../config.js';
import { openDatabase, type DatabaseHandle } from '../db/database.js';
import { insertNode } from '../nodes/nodes.repository.js';
import { allocationPolicyFrom } from './grants.service.js';
import { createAllocationBatcher } from './allocation-batcher.js';

const GIB = 1024 ** 3;
// Long enough that a test relying on it would time out: these tests pass only if the wait ends early.
const FOREVER_MS = 600_000;

// A wait that does not end early shows up as a timeout: keep it short.
describe.each(dialects)('allocation batcher on %s', { timeout: 15_000 }, (dialect) => {
  let database: TestDatabase;
  let handle: DatabaseHandle;
  let transactions: number;

  afterEach(async () => {
    await handle.close();
    await database.drop();
  });

  /** A batcher over a fresh catalogue, counting the transactions it runs. */
  async function setUp(waitMs: number, onBatchFailed?: (requests: number, error: unknown) => void) {
    database = await createTestDatabase(dialect);
    transactions = 0;
    handle = openDatabase({ ...database.options, onQuery: (text) => (transactions += /^begin/i.test(text) ? 1 : 0) });
    const clock = createFakeClock();
    const assets = Array.from({ length: 20 }, (_, index) => ({ id: `a${index}`, url: `http://x/a${index}`, name: `a${index}`, priority: 5, size_mb: 1 }));
    await importAssets(database.handle.db, assets, { replicasFor: () => 1, actor: 'test', source: 'test' }, clock.now());
    const nodes: number[] = [];
    for (const name of ['n1', 'n2', 'n3'])
      nodes.push((await insertNode(database.handle.db, { name, hostname: name, ip: null, sshPort: null, tags: {}, tokenHash: null, now: clock.now() }))!.id);
    const batcher = createAllocationBatcher({
      db: handle.db,
      dialect: handle.dialect,
      clock,
      policy: allocationPolicyFrom(buildConfig()),
      waitMs,
      onBatchFailed,
    });
    const allocate = (nodeId: number, freeBytes = 100 * GIB) => batcher.allocate({ nodeId, freeBytes, maxAssets: 1, minPriority: 1, actor: 'test' });
    return { nodes, allocate };
  }

  it('serves a lone request to an idle instance at once, and the next one as soon as it arrives', async () => {
    const { nodes, allocate } = await setUp(FOREVER_MS);
    expect((await allocate(nodes[0]!)).granted).toHaveLength(1);
    // The batcher now waits for one more request, the size of the batch it served: this one.
    expect((await allocate(nodes[0]!)).granted).toHaveLength(1);
    expect(transactions).toBe(2);
  });

  it('starts again after it has gone idle: each request after the last batch ended is served', async () => {
    const { nodes, allocate } = await setUp(0);
    for (const node of nodes) {
      expect((await allocate(node)).granted).toHaveLength(1);
      // An event-loop turn with nothing queued: the batch loop ends before the next request.
      await new Promise((resolve) => setImmediate(resolve));
    }
    expect(transactions).toBe(3);
  });

  it('stops waiting after a batch once its nodes have asked again, and serves them in one transaction', async () => {
    const { nodes, allocate } = await setUp(FOREVER_MS);
    const [n1, n2, n3] = nodes as [number, number, number];
    expect((await Promise.all([allocate(n1), allocate(n2)])).map((outcome) => outcome.granted.length)).toEqual([1, 1]);
    expect(transactions).toBe(1);
    // Two requests were served: the wait ends when two are queued, not at the first, even a few
    // event-loop turns later.
    const first = allocate(n1);
    for (let turn = 0; turn < 3; turn += 1) await new Promise((resolve) => setImmediate(resolve));
    const second = allocate(n2);
    const third = allocate(n3);
    expect((await Promise.all([first, second, third])).map((outcome) => outcome.granted.length)).toEqual([1, 1, 1]);
    expect(transactions).toBe(2);
  });

  /** A fault injected in the database itself: recording this free-space report fails. */
  async function failReportsOf(freeBytes: number) {
    const db = database.handle.db;
    if (dialect === 'sqlite') {
      await sql
        .raw(
          `create trigger fail_report before update of free_bytes on nodes when new.free_bytes = ${freeBytes}
        begin select raise(abort, 'injected failure'); end`,
        )
        .execute(db);
    } else {
      await sql
        .raw(
          `create function fail_report() returns trigger language plpgsql as $$
        begin if new.free_bytes = ${freeBytes} then raise exception 'injected failure'; end if; return new; end $$`,
        )
        .execute(db);
      await sql.raw('create trigger fail_report before update on nodes for each row execute function fail_report()').execute(db);
    }
  }

  it('answers the requests a batch committed before a later part of it failed, and runs only the others again', async () => {
    const failures: [number, string][] = [];
    const { nodes, allocate } = await setUp(0, (requests, error) => failures.push([requests, (error as Error).message]));
    const [n1, n2] = nodes as [number, number];
    await failReportsOf(12_345);
    // n1's second request goes to a second transaction, after the first one has committed, and fails there.
    const [first, second, repeat] = await Promise.allSettled([allocate(n1), allocate(n2), allocate(n1, 12_345)]);
    expect(repeat).toMatchObject({ status: 'rejected', reason: { message: expect.stringContaining('injected failure') } });
    // The shared transaction's failure is reported once, for the three requests it held.
    expect(failures).toEqual([[3, expect.stringContaining('injected failure')]]);
    const answered = [first, second].map((result) => (result.status === 'fulfilled' ? result.value.granted.map((asset) => asset.id) : result.reason));
    // Nothing granted but not answered: every active allocation is one its node was told about.
    const active = await database.handle.db
      .selectFrom('allocations')
      .select(['asset_id', 'node_id'])
      .where('state', '=', 'active')
      .orderBy('node_id')
      .execute();
    expect(active.map((row) => [row.node_id, row.asset_id])).toEqual([
      [n1, ...(answered[0] as string[])],
      [n2, ...(answered[1] as string[])],
    ]);
  });

  it('starts the next batch when the wait runs out, with what has arrived', async () => {
    const { nodes, allocate } = await setUp(20);
    const [n1, n2] = nodes as [number, number];
    await Promise.all([allocate(n1), allocate(n2)]);
    // Only one of the two nodes asks again: it is served once the 20 ms are over.
    expect((await allocate(n1)).granted).toHaveLength(1);
    expect(transactions).toBe(2);
  });
});
