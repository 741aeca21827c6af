import { sql } from 'kysely';

/**
 * Who an allocation counts for: its node's operator as recorded at the grant (DISTINCT_OPERATORS),
 * or the node itself when none was. Copies, quorums and source confirmations count distinct keys.
 */
export const operatorKeySql = sql<number>`coalesce(allocations.operator_id, -allocations.node_id)`;

/** The same key of a row read in JS. */
export function operatorKeyOf(row: { operator_id: number | null; node_id: number }): number {
  return row.operator_id === null ? -Number(row.node_id) : Number(row.operator_id);
}
