import { sql, type Kysely } from 'kysely';
import type { Dialect } from '../dialect.js';

/**
 * Frozen: allocations indexed for the per-asset and per-copy queries of completions and proofs.
 * - `allocations_by_asset` (asset_id, state): recounting an asset's copies, settling its quorum and
 *   checking its copies ask for one asset's allocations in one state. The only index led by
 *   `asset_id` was partial (`state in ('active', 'completed')`), which SQLite's planner uses only
 *   for a query that repeats that condition word for word.
 * - `allocations_by_expiry` (state, expires_at) becomes `allocations_active_by_expiry` (expires_at)
 *   of active allocations only: the expiry pass is all it served, and an index led by `state` is
 *   what SQLite's planner took for every query of completed copies (the audit passes, written for
 *   the partial indexes of 0016), scanning every completed allocation instead.
 * - `nodes.audit_score_at`: when the node's score was last recounted from its verdicts. A verdict
 *   adds itself to the counts; the proof pass recounts each node at least hourly, so that verdicts
 *   older than the score window drop out without a recount per verdict.
 * - `audits_by_node` gains `state`, so that the recount reads the index alone.
 */
export async function up(db: Kysely<unknown>, _dialect: Dialect): Promise<void> {
  await db.schema.createIndex('allocations_by_asset').on('allocations').columns(['asset_id', 'state']).execute();
  await db.schema.dropIndex('allocations_by_expiry').execute();
  await db.schema
    .createIndex('allocations_active_by_expiry')
    .on('allocations')
    .columns(['expires_at'])
    .where(sql<boolean>`state = 'active'`)
    .execute();
  await db.schema.alterTable('nodes').addColumn('audit_score_at', 'bigint').execute();
  await db.schema.dropIndex('audits_by_node').execute();
  await db.schema.createIndex('audits_by_node').on('audits').columns(['node_id', 'ended_at', 'state']).execute();
}
