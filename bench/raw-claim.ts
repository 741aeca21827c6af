import { setImmediate as nextTurn } from 'node:timers/promises';
import SqliteDatabase from 'better-sqlite3';
import pg from 'pg';
import { batchWaitMs, createAllocationBatcher } from '../src/allocations/allocation-batcher.js';
import { allocationPolicyFrom } from '../src/allocations/grants.service.js';
import { systemClock } from '../src/clock.js';
import { buildConfig } from '../src/config.js';
import type { Db } from '../src/db/database.js';
import { GIB } from '../src/http/schemas.js';
import { findNodeByName, insertNode } from '../src/nodes/nodes.repository.js';
import type { BenchDatabase } from './databases.js';
import { runLoops, type Loop, type Outcome, type WindowOptions } from './loops.js';
import { RepeatCounter, type MeasuredRow } from './rows.js';
import { checkThenReset, verifyAllocations, verifyRawClaims } from './verify.js';

/**
 * The smallest claim that still means something: one asset, the next in allocation order, its
 * holders counter bumped, in a transaction of its own. The WHERE clause is the partial index
 * `assets_claimable`'s predicate (as in the real claim, src/allocations/__snapshots__/), so both
 * databases walk that index instead of sorting a million rows. No allocation row, no event, no
 * node: the database's limit for "hand out one item, never twice".
 */
const CLAIMABLE = `state = 'pending' and holders < replicas_target and size_bytes is not null
  order by priority desc, holders, first_seen_at, id limit 1`;
export const RAW_CLAIM_POSTGRES = `update assets set holders = holders + 1
  where id = (select id from assets where ${CLAIMABLE} for update skip locked) returning id`;
export const RAW_CLAIM_SQLITE = `update assets set holders = holders + 1
  where id = (select id from assets where ${CLAIMABLE}) returning id`;

const claimed = (id: string | undefined, repeats: RepeatCounter): Outcome => {
  if (id === undefined) return { ok: false, status: 'empty', items: 0, errorBody: 'nothing left to claim' };
  repeats.add(id);
  return { ok: true, status: 'ok', items: 1 };
};

/** `connections` PostgreSQL connections, each a loop of begin; claim; commit (as pgbench sends them). */
async function driveRawPostgres(database: BenchDatabase, connections: number, window: WindowOptions, repeats: RepeatCounter) {
  const clients = Array.from({ length: connections }, () => new pg.Client({ connectionString: database.connectionString }));
  await Promise.all(clients.map((client) => client.connect()));
  try {
    const loops: Loop[] = clients.map((client) => async () => {
      await client.query('begin');
      try {
        const { rows } = await client.query<{ id: string }>(RAW_CLAIM_POSTGRES);
        await client.query('commit');
        return claimed(rows[0]?.id, repeats);
      } catch (error) {
        await client.query('rollback');
        throw error;
      }
    });
    return await runLoops(loops, window);
  } finally {
    await Promise.all(clients.map((client) => client.end()));
  }
}

/**
 * One better-sqlite3 connection (SQLite has one writer anyway), synchronous like the server's, with
 * the server's pragmas. After each claim the loop yields one event-loop turn so the window's timers run.
 */
async function driveRawSqlite(database: BenchDatabase, window: WindowOptions, repeats: RepeatCounter) {
  const connection = new SqliteDatabase(database.sqliteFile as string);
  connection.pragma('journal_mode = WAL');
  connection.pragma('synchronous = NORMAL');
  connection.pragma('busy_timeout = 5000');
  const claim = connection.prepare<[], { id: string }>(RAW_CLAIM_SQLITE);
  const transaction = connection.transaction(() => claim.get()?.id);
  try {
    return await runLoops(
      [
        async () => {
          const outcome = claimed(transaction.immediate(), repeats);
          await nextTurn();
          return outcome;
        },
      ],
      window,
    );
  } finally {
    connection.close();
  }
}

/** The raw one-item claim: PostgreSQL with `connections` connections, SQLite with its one. */
export async function benchRawClaim(database: BenchDatabase, connections: number, window: WindowOptions): Promise<MeasuredRow> {
  const repeats = new RepeatCounter();
  const result =
    database.kind === 'postgres' ? await driveRawPostgres(database, connections, window, repeats) : await driveRawSqlite(database, window, repeats);
  const verification = await checkThenReset(database, verifyRawClaims);
  return {
    suite: 'raw-claim',
    subject: 'one-item claim SQL',
    database: database.kind,
    connections: String(database.kind === 'postgres' ? connections : 1),
    result,
    check: { duplicates: repeats.repeats + verification.overTarget, handedOut: result.itemsTotal, stored: verification.claims },
  };
}

/** `count` nodes for the in-process claim loops, created once and reused by later runs. */
async function claimNodes(db: Db, count: number): Promise<{ id: number; name: string }[]> {
  const nodes: { id: number; name: string }[] = [];
  for (let n = 1; n <= count; n += 1) {
    const name = `claim-node-${n}`;
    const row =
      (await insertNode(db, { name, hostname: name, ip: null, sshPort: null, tags: {}, tokenHash: null, now: Date.now() })) ?? (await findNodeByName(db, name));
    if (!row) throw new Error(`could not create node ${name}`);
    nodes.push({ id: row.id, name });
  }
  return nodes;
}

/**
 * Dispatcher's own claim without HTTP: `loops` simulated nodes call the allocation batcher the
 * /allocate route uses (allocateBatch underneath, batched as the route batches), from this process.
 * PostgreSQL gets a pool of `loops` connections; SQLite has its one, shared by the loops.
 */
export async function benchDispatcherClaim(database: BenchDatabase, loops: number, maxAssets: number, window: WindowOptions): Promise<MeasuredRow> {
  const poolSize = database.kind === 'postgres' ? loops : 1;
  const handle = database.open(poolSize);
  let result;
  try {
    const nodes = await claimNodes(handle.db, loops);
    // No per-host cap: see SOURCE_HOST_MAX_ACTIVE in server.ts.
    const config = buildConfig({ sourceHostMaxActive: 0 });
    const batcher = createAllocationBatcher({
      db: handle.db,
      dialect: handle.dialect,
      clock: systemClock,
      policy: allocationPolicyFrom(config),
      waitMs: batchWaitMs(config, handle.dialect),
    });
    result = await runLoops(
      nodes.map((node) => async (): Promise<Outcome> => {
        const { granted, refusal } = await batcher.allocate({
          nodeId: node.id,
          freeBytes: 1_000_000 * GIB,
          maxAssets,
          minPriority: 1,
          actor: `node:${node.name}`,
        });
        if (refusal) return { ok: false, status: refusal, items: 0, errorBody: refusal };
        return granted.length > 0 ? { ok: true, status: 'ok', items: granted.length } : { ok: false, status: 'empty', items: 0, errorBody: 'no asset granted' };
      }),
      window,
    );
  } finally {
    await handle.close();
  }
  const verification = await checkThenReset(database, verifyAllocations);
  return {
    suite: 'raw-claim',
    subject: 'allocateBatch, no HTTP',
    database: database.kind,
    connections: database.kind === 'postgres' ? String(poolSize) : '1 shared',
    result,
    check: {
      duplicates: verification.duplicates,
      holdersMismatch: verification.holdersMismatch,
      handedOut: result.itemsTotal,
      stored: verification.activeAllocations,
    },
  };
}
