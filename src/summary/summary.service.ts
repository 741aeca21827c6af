import { sql } from 'kysely';
import type { Db } from '../db/database.js';
import { WORKER_HOLDING_RENTAL_STATES } from '../rentals/rentals.table.js';
import { ASSET_STATES } from '../assets/assets.table.js';
import { NODE_STATUSES } from '../nodes/nodes.table.js';
import { readProofFigures, type ProofFigures } from '../status/proof-figures.service.js';
import { countActiveAllocations, readCopyBytes } from '../status/status.service.js';
import { progressColumns, readProgressBy, toProgress, type Progress } from './progress.service.js';

const DAY = 86_400_000;
/** Days of completed copies in `rescued_by_day`, today included. */
export const RESCUE_HISTORY_DAYS = 30;

export interface Summary {
  assetsTotal: number;
  assetsByState: Record<string, number>;
  assetsByPriority: Record<string, number>;
  bytesRescued: number;
  bytesRescuedDistinct: number;
  copiesVerified: number;
  copiesWanted: number;
  withoutCopy: number;
  underReplicated: number;
  removedFromSource: number;
  nodesByStatus: Record<string, number>;
  activeAllocations: number;
  activeRentals: number;
  rescuedByDay: { day: string; bytes: number; copies: number }[];
  /** Claimed against proven bytes, copies by proof state, the last day's verdicts. */
  proofs: ProofFigures;
  overall: Progress;
  byOrganization: Progress[];
  byDataset: Progress[];
}

/** Every key present, zeros included, so a dashboard draws empty bars instead of missing ones. */
function countsOf(keys: readonly string[], rows: { key: string | number; count: number | string }[]): Record<string, number> {
  const counts: Record<string, number> = Object.fromEntries(keys.map((key) => [key, 0]));
  for (const row of rows) counts[String(row.key)] = Number(row.count);
  return counts;
}

/** The dashboard's overview in a handful of aggregate queries (no row leaves the database). */
export async function readSummary(db: Db, now: number): Promise<Summary> {
  const firstDay = Math.floor(now / DAY) - (RESCUE_HISTORY_DAYS - 1);
  const [byState, byPriority, copies, nodes, active, rentals, copyBytes, byDay, proofs] = await Promise.all([
    db
      .selectFrom('assets')
      .select(['state as key', sql<number>`count(*)`.as('count')])
      .groupBy('state')
      .execute(),
    db
      .selectFrom('assets')
      .select(['priority as key', sql<number>`count(*)`.as('count')])
      .groupBy('priority')
      .execute(),
    db
      .selectFrom('assets')
      .select([
        sql<number>`coalesce(sum(copies), 0)`.as('verified'),
        // No copy of a gone asset can be made: it wants none.
        sql<number>`coalesce(sum(case when state <> 'gone' then replicas_target else 0 end), 0)`.as('wanted'),
        sql<number>`coalesce(sum(case when copies > 0 and copies < replicas_target then 1 else 0 end), 0)`.as('under_replicated'),
        sql<number>`coalesce(sum(case when removed_from_source_at is not null and copies < replicas_target then 1 else 0 end), 0)`.as('removed'),
        // assets, at target, at risk, without copy (gone ones left out), distinct bytes: as per group.
        ...progressColumns,
      ])
      .executeTakeFirstOrThrow(),
    db
      .selectFrom('nodes')
      .select(['status as key', sql<number>`count(*)`.as('count')])
      .groupBy('status')
      .execute(),
    countActiveAllocations(db),
    db
      .selectFrom('rentals')
      .select(sql<number>`count(*)`.as('count'))
      .where('state', 'in', WORKER_HOLDING_RENTAL_STATES)
      .executeTakeFirstOrThrow(),
    readCopyBytes(db),
    // Integer division of two integers is whole days on both SQLite and PostgreSQL (bigint). A literal,
    // not a parameter: PostgreSQL matches the GROUP BY expression to the selected one textually.
    db
      .selectFrom('allocations')
      .select([sql<number>`ended_at / ${sql.lit(DAY)}`.as('day'), sql<number>`coalesce(sum(bytes), 0)`.as('bytes'), sql<number>`count(*)`.as('copies')])
      .where('state', '=', 'completed')
      .where('verified', '=', 1)
      .where('ended_at', '>=', firstDay * DAY)
      .groupBy(sql`ended_at / ${sql.lit(DAY)}`)
      .execute(),
    readProofFigures(db, now),
  ]);
  const overall = toProgress(copies, 'all');
  const [byOrganization, byDataset] = await Promise.all([readProgressBy(db, 'organization', overall), readProgressBy(db, 'dataset', overall)]);
  const days = new Map(byDay.map((row) => [Number(row.day), row]));
  return {
    assetsTotal: byState.reduce((sum, row) => sum + Number(row.count), 0),
    assetsByState: countsOf(ASSET_STATES, byState),
    assetsByPriority: countsOf(['1', '2', '3', '4', '5', '6', '7', '8', '9', '10'], byPriority),
    bytesRescued: copyBytes,
    bytesRescuedDistinct: overall.bytesRescuedDistinct,
    copiesVerified: Number(copies.verified),
    copiesWanted: Number(copies.wanted),
    withoutCopy: overall.withoutCopy,
    underReplicated: Number(copies.under_replicated),
    removedFromSource: Number(copies.removed),
    nodesByStatus: countsOf(NODE_STATUSES, nodes),
    activeAllocations: active,
    activeRentals: Number(rentals.count),
    rescuedByDay: Array.from({ length: RESCUE_HISTORY_DAYS }, (_, index) => {
      const day = firstDay + index;
      const row = days.get(day);
      return { day: new Date(day * DAY).toISOString().slice(0, 10), bytes: Number(row?.bytes ?? 0), copies: Number(row?.copies ?? 0) };
    }),
    proofs,
    overall,
    byOrganization,
    byDataset,
  };
}
