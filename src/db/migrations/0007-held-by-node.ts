import { sql, type Kysely } from 'kysely';

/**
 * Frozen: an index of what each node holds, for the claim's "not already held by this node" test.
 * Without it, a prepared claim on PostgreSQL may run on a generic plan that reads every held
 * allocation through allocations_one_per_node by its second column.
 */
export async function up(db: Kysely<unknown>): Promise<void> {
  await db.schema
    .createIndex('allocations_held_by_node')
    .on('allocations')
    .columns(['node_id', 'asset_id'])
    .where(sql.ref('state'), 'in', sql`('active', 'completed')`)
    .execute();
}
