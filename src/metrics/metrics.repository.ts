import { sql } from 'kysely';
import type { Db } from '../db/database.js';

export interface GroupCount {
  key: string;
  count: number;
}

// Each is one GROUP BY over a covering index (allocations_by_asset, nodes_by_status,
// assets_by_source) except assets by state, which /status already runs the same way.

export async function countAssetsByState(db: Db): Promise<GroupCount[]> {
  const rows = await db
    .selectFrom('assets')
    .select(['state as key', sql<number>`count(*)`.as('count')])
    .groupBy('state')
    .execute();
  return rows.map((row) => ({ key: row.key, count: Number(row.count) }));
}

export async function countAllocationsByState(db: Db): Promise<GroupCount[]> {
  const rows = await db
    .selectFrom('allocations')
    .select(['state as key', sql<number>`count(*)`.as('count')])
    .groupBy('state')
    .execute();
  return rows.map((row) => ({ key: row.key, count: Number(row.count) }));
}

export async function countNodesByStatus(db: Db): Promise<GroupCount[]> {
  const rows = await db
    .selectFrom('nodes')
    .select(['status as key', sql<number>`count(*)`.as('count')])
    .groupBy('status')
    .execute();
  return rows.map((row) => ({ key: row.key, count: Number(row.count) }));
}

/** Assets per import source (a portal URL or a file); assets added through the API have none. */
export async function countAssetsBySource(db: Db): Promise<GroupCount[]> {
  const rows = await db
    .selectFrom('assets')
    .select(['source as key', sql<number>`count(*)`.as('count')])
    .groupBy('source')
    .execute();
  return rows.map((row) => ({ key: row.key ?? '', count: Number(row.count) }));
}
