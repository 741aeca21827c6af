import { sql } from 'kysely';
import type { Db } from '../db/database.js';

export interface StatusFigures {
  assets: number;
  activeAllocations: number;
  totalPriority: number;
  assetsByState: Record<string, number>;
  nodesByStatus: Record<string, number>;
  bytesRescued: number;
  bytesRescuedDistinct: number;
}

/**
 * Bytes of the assets that have at least one counted copy, each asset once (its size): what is
 * safe, however many copies of it exist. An aggregate over `assets`, for use in any select of it.
 */
export const distinctBytesRescued = sql<number>`coalesce(sum(case when copies > 0 then coalesce(size_bytes, 0) else 0 end), 0)`;

export interface RescuedBytes {
  /** Bytes of every counted copy: an asset with three copies counts three times. */
  copies: number;
  /** Each asset with a counted copy once. */
  distinct: number;
}

/** Bytes of every counted copy (completed and verified allocations). */
export async function readCopyBytes(db: Db): Promise<number> {
  const row = await db
    .selectFrom('allocations')
    .select(sql<number>`coalesce(sum(bytes), 0)`.as('bytes'))
    .where('state', '=', 'completed')
    .where('verified', '=', 1)
    .executeTakeFirstOrThrow();
  return Number(row.bytes);
}

/** Bytes of the assets with a counted copy, each once. */
export async function readDistinctBytes(db: Db): Promise<number> {
  const row = await db.selectFrom('assets').select(distinctBytesRescued.as('bytes')).executeTakeFirstOrThrow();
  return Number(row.bytes);
}

/** Both measures of what was rescued, for `/status` (`/api/summary` and `/metrics` read the same two). */
export async function readRescuedBytes(db: Db): Promise<RescuedBytes> {
  const [copies, distinct] = await Promise.all([readCopyBytes(db), readDistinctBytes(db)]);
  return { copies, distinct };
}

/** Allocations under way, counted over the partial index allocations_active_by_expiry (which a literal state lets SQLite use). */
export async function countActiveAllocations(db: Db): Promise<number> {
  const row = await db
    .selectFrom('allocations')
    .select(sql<number>`count(*)`.as('count'))
    .where('state', '=', sql.lit('active'))
    .executeTakeFirstOrThrow();
  return Number(row.count);
}

/** The figures behind `GET /status`, read in a few aggregate queries. */
export async function readStatusFigures(db: Db): Promise<StatusFigures> {
  const [byState, active, nodes, rescued] = await Promise.all([
    db
      .selectFrom('assets')
      .select(['state', sql<number>`count(*)`.as('count'), sql<number>`coalesce(sum(priority), 0)`.as('priority')])
      .groupBy('state')
      .execute(),
    countActiveAllocations(db),
    db
      .selectFrom('nodes')
      .select(['status', sql<number>`count(*)`.as('count')])
      .groupBy('status')
      .execute(),
    readRescuedBytes(db),
  ]);
  return {
    assets: byState.reduce((sum, row) => sum + Number(row.count), 0),
    activeAllocations: active,
    totalPriority: byState.reduce((sum, row) => sum + Number(row.priority), 0),
    assetsByState: Object.fromEntries(byState.map((row) => [row.state, Number(row.count)])),
    nodesByStatus: Object.fromEntries(nodes.map((row) => [row.status, Number(row.count)])),
    bytesRescued: rescued.copies,
    bytesRescuedDistinct: rescued.distinct,
  };
}
