import { sql } from 'kysely';
import type { Db } from '../db/database.js';
import { distinctBytesRescued } from '../status/status.service.js';

/** Groups listed by name in the overview's progress tables; the rest are summed as "(other)". */
export const PROGRESS_TOP_GROUPS = 20;
/** The group of assets without an organization (or dataset). */
export const UNNAMED_GROUP = '(none)';
export const OTHER_GROUPS = '(other)';

export interface Progress {
  name: string;
  assets: number;
  /** Assets with at least replicas_target verified copies. */
  atTarget: number;
  /** Assets with fewer copies than wanted: what the overview's "At risk" figures count, per group. */
  atRisk: number;
  /** Of those, assets with no copy at all (gone ones left out: none can be made). */
  withoutCopy: number;
  bytesRescuedDistinct: number;
}

/** The progress figures, as aggregates over any set of assets; the overall row and each group use the same. */
export const progressColumns = [
  sql<number>`count(*)`.as('assets'),
  sql<number>`coalesce(sum(case when copies >= replicas_target then 1 else 0 end), 0)`.as('at_target'),
  sql<number>`coalesce(sum(case when copies < replicas_target then 1 else 0 end), 0)`.as('at_risk'),
  sql<number>`coalesce(sum(case when copies = 0 and state <> 'gone' then 1 else 0 end), 0)`.as('without_copy'),
  distinctBytesRescued.as('bytes_distinct'),
] as const;

export interface ProgressRow {
  name: string | null;
  assets: number | string;
  at_target: number | string;
  at_risk: number | string;
  without_copy: number | string;
  bytes_distinct: number | string;
}

export function toProgress(row: Omit<ProgressRow, 'name'>, name: string): Progress {
  return {
    name,
    assets: Number(row.assets),
    atTarget: Number(row.at_target),
    atRisk: Number(row.at_risk),
    withoutCopy: Number(row.without_copy),
    bytesRescuedDistinct: Number(row.bytes_distinct),
  };
}

/** `total` minus the listed groups: what "(other)" sums. */
function remainder(total: Progress, listed: Progress[]): Progress {
  const minus = (key: Exclude<keyof Progress, 'name'>) => total[key] - listed.reduce((sum, group) => sum + group[key], 0);
  return {
    name: OTHER_GROUPS,
    assets: minus('assets'),
    atTarget: minus('atTarget'),
    atRisk: minus('atRisk'),
    withoutCopy: minus('withoutCopy'),
    bytesRescuedDistinct: minus('bytesRescuedDistinct'),
  };
}

/**
 * Progress per organization or dataset: the `PROGRESS_TOP_GROUPS` largest by assets, then one
 * "(other)" row when more exist, so the answer stays small however many groups a catalog has.
 */
export async function readProgressBy(db: Db, column: 'organization' | 'dataset', total: Progress): Promise<Progress[]> {
  const rows = await db
    .selectFrom('assets')
    .select([sql.ref<string | null>(column).as('name'), ...progressColumns])
    .groupBy(column)
    .orderBy(sql`count(*)`, 'desc')
    .orderBy(column)
    .limit(PROGRESS_TOP_GROUPS + 1)
    .execute();
  const listed = rows.slice(0, PROGRESS_TOP_GROUPS).map((row) => toProgress(row, row.name ?? UNNAMED_GROUP));
  return rows.length > PROGRESS_TOP_GROUPS ? [...listed, remainder(total, listed)] : listed;
}
