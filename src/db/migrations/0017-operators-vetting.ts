import { sql, type Kysely } from 'kysely';
import type { Dialect } from '../dialect.js';

/**
 * Frozen: operators and vetting. Operators are the people behind nodes. A node belongs to the user its enrollment token was
 * made for (or by), or that an admin attached it to; an allocation records its node's operator when
 * granted, so that copies on nodes of one operator count once and one operator never holds two
 * copies of an asset. Nodes registered before this have no operator and count as their own.
 * `nodes.vetted_at`: when a new node passed its vetting audits (null while it is new); nodes
 * registered before this count as vetted.
 */
export async function up(db: Kysely<unknown>, _dialect: Dialect): Promise<void> {
  await db.schema
    .alterTable('enrollment_tokens')
    .addColumn('operator_id', 'bigint', (c) => c.references('users.id'))
    .execute();
  await db.schema
    .alterTable('nodes')
    .addColumn('operator_id', 'bigint', (c) => c.references('users.id'))
    .execute();
  await db.schema.alterTable('allocations').addColumn('operator_id', 'bigint').execute();
  // What the claim's "not held by this operator" test probes, as allocations_one_per_node does for nodes.
  await db.schema
    .createIndex('allocations_one_per_operator')
    .on('allocations')
    .columns(['operator_id', 'asset_id'])
    .where(sql<boolean>`operator_id is not null and state in ('active', 'completed')`)
    .execute();
  await db.schema.createIndex('nodes_by_operator').on('nodes').columns(['operator_id']).execute();
  await db.schema.alterTable('nodes').addColumn('vetted_at', 'bigint').execute();
  await sql`update nodes set vetted_at = created_at`.execute(db);
}
