import type { Kysely } from 'kysely';

/**
 * Frozen: one index of each node's allocations where there were two. `allocations_by_node`
 * (node_id, state, reserved_bytes) served the claim's sum of a node's reservations, which moved onto
 * the node row (0008); `allocations_held_by_node` (node_id, asset_id, active and completed only)
 * served the "not already held by this node" test. (node_id, state, asset_id) serves both that test
 * and every query by node. Each grant writes one leaf page per node of such an index, as the nodes'
 * ranges lie apart, so one index instead of two halves that work.
 */
export async function up(db: Kysely<unknown>): Promise<void> {
  await db.schema.createIndex('allocations_of_node').on('allocations').columns(['node_id', 'state', 'asset_id']).execute();
  await db.schema.dropIndex('allocations_by_node').execute();
  await db.schema.dropIndex('allocations_held_by_node').execute();
}
