import { sql } from 'kysely';
import type { Db } from '../src/db/database.js';
import { withHandle, type BenchDatabase } from './databases.js';
import type { DatabaseKind } from './options.js';

export interface Verification {
  /** Assets with more active + completed allocations than replicas_target. */
  overTarget: number;
  /** (asset, node) pairs with more than one active allocation. */
  duplicatePairs: number;
  /** overTarget + duplicatePairs: the "duplicates" column. */
  duplicates: number;
  /** Assets whose holders counter disagrees with copies + their active allocations. */
  holdersMismatch: number;
  activeAllocations: number;
}

async function count(db: Db, query: ReturnType<typeof sql<{ n: number }>>): Promise<number> {
  const { rows } = await query.execute(db);
  return Number(rows[0]?.n ?? 0);
}

/** Checks invariant 1 in the database itself, after the load, whatever the API answered. */
export async function verifyAllocations(db: Db): Promise<Verification> {
  const overTarget = await count(
    db,
    sql<{ n: number }>`
      select count(*) as n from (
        select l.asset_id from allocations l join assets a on a.id = l.asset_id
        where l.state in ('active', 'completed')
        group by l.asset_id, a.replicas_target
        having count(*) > a.replicas_target
      ) t`,
  );
  const duplicatePairs = await count(
    db,
    sql<{ n: number }>`
      select count(*) as n from (
        select asset_id, node_id from allocations where state = 'active'
        group by asset_id, node_id having count(*) > 1
      ) t`,
  );
  const holdersMismatch = await count(
    db,
    sql<{ n: number }>`
      select count(*) as n from assets a
      left join (select asset_id, count(*) as active from allocations where state = 'active' group by asset_id) l on l.asset_id = a.id
      where a.holders <> a.copies + coalesce(l.active, 0)`,
  );
  const activeAllocations = await count(db, sql<{ n: number }>`select count(*) as n from allocations where state = 'active'`);
  return { overTarget, duplicatePairs, duplicates: overTarget + duplicatePairs, holdersMismatch, activeAllocations };
}

/**
 * Puts the catalogue back as imported, so each --clients run starts from the same state
 * (otherwise later runs would allocate deeper in the priority order, with fuller nodes).
 */
export async function resetAllocations(db: Db): Promise<void> {
  await db.transaction().execute(async (trx) => {
    await trx.deleteFrom('allocations').execute();
    await trx
      .updateTable('assets')
      .set((eb) => ({ holders: eb.ref('copies') }))
      .whereRef('holders', '<>', 'copies')
      .execute();
  });
}

/**
 * Reset, then on PostgreSQL VACUUM ANALYZE: the claimed rows' dead versions and index entries
 * would otherwise slow the next run's scans, so every run starts from the same state.
 */
export async function resetForNextRun(db: Db, kind: DatabaseKind): Promise<void> {
  await resetAllocations(db);
  if (kind === 'postgres') await sql`vacuum analyze allocations, assets`.execute(db);
}

/** A run's database check, then the reset for the next run, on a connection of its own. */
export function checkThenReset<T>(database: BenchDatabase, check: (db: Db) => Promise<T>): Promise<T> {
  return withHandle(database, async (handle) => {
    const found = await check(handle.db);
    await resetForNextRun(handle.db, database.kind);
    return found;
  });
}

/** The raw-claim check: it counts claims in `holders` only, with no allocation rows. */
export interface RawClaimVerification {
  /** Assets claimed more often than replicas_target. */
  overTarget: number;
  /** Claims recorded in the database: the sum of holders − copies. */
  claims: number;
}

export async function verifyRawClaims(db: Db): Promise<RawClaimVerification> {
  const { rows } = await sql<{ over_target: number | null; claims: number | null }>`
    select sum(case when holders > replicas_target then 1 else 0 end) as over_target, sum(holders - copies) as claims
    from assets where holders <> copies`.execute(db);
  return { overTarget: Number(rows[0]?.over_target ?? 0), claims: Number(rows[0]?.claims ?? 0) };
}
