import { sql } from 'kysely';
import type { Db } from '../db/database.js';

export interface StatusFigures {
  assets: number;
  activeAllocations: number;
  totalPriority: number;
  assetsByState: Record<string, number>;
  nodesByStatus: Record<string, number>;
  bytesRescued: number;
}

/** The figures behind `GET /status`, read in a few aggregate queries. */
export async function readStatusFigures(db: Db): Promise<StatusFigures> {
  const [byState, active, nodes, rescued] = await Promise.all([
    db
      .selectFrom('assets')
      .select(['state', sql<number>`count(*)`.as('count'), sql<number>`coalesce(sum(priority), 0)`.as('priority')])
      .groupBy('state')
      .execute(),
    db.selectFrom('allocations').select(sql<number>`count(*)`.as('count')).where('state', '=', 'active').executeTakeFirstOrThrow(),
    db.selectFrom('nodes').select(['status', sql<number>`count(*)`.as('count')]).groupBy('status').execute(),
    db
      .selectFrom('allocations')
      .select(sql<number>`coalesce(sum(bytes), 0)`.as('bytes'))
      .where('state', '=', 'completed')
      .where('verified', '=', 1)
      .executeTakeFirstOrThrow(),
  ]);
  return {
    assets: byState.reduce((sum, row) => sum + Number(row.count), 0),
    activeAllocations: Number(active.count),
    totalPriority: byState.reduce((sum, row) => sum + Number(row.priority), 0),
    assetsByState: Object.fromEntries(byState.map((row) => [row.state, Number(row.count)])),
    nodesByStatus: Object.fromEntries(nodes.map((row) => [row.status, Number(row.count)])),
    bytesRescued: Number(rescued.bytes),
  };
}
