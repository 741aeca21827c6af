import { sql, type Kysely } from 'kysely';
import type { Dialect } from '../dialect.js';

/**
 * Frozen: transfers, the lease of a node on sending a byte range of one of its copies to the
 * control plane (a restore, later repairs and audits), and `allocations.proved_at`, when the holder
 * last showed that a copy is still there and intact. Assets `unreachable` (source gone, copies
 * left) become repairable from their copies.
 */
export async function up(db: Kysely<unknown>, dialect: Dialect): Promise<void> {
  await dialect
    .addIdColumn(db.schema.createTable('transfers'))
    .addColumn('asset_id', 'text', (c) => c.notNull().references('assets.id'))
    .addColumn('node_id', 'bigint', (c) => c.notNull().references('nodes.id'))
    .addColumn('allocation_id', 'bigint', (c) => c.notNull().references('allocations.id'))
    .addColumn('purpose', 'text', (c) => c.notNull().check(sql`purpose in ('restore', 'repair', 'audit')`))
    .addColumn('state', 'text', (c) => c.notNull().check(sql`state in ('sending', 'done', 'failed', 'expired', 'cancelled')`))
    .addColumn('range_start', 'bigint', (c) => c.notNull())
    .addColumn('range_end', 'bigint', (c) => c.notNull())
    .addColumn('bytes_sent', 'bigint', (c) => c.notNull().defaultTo(0))
    .addColumn('size_bytes', 'bigint', (c) => c.notNull())
    .addColumn('sha256', 'text', (c) => c.notNull())
    .addColumn('relay_url', 'text', (c) => c.notNull())
    .addColumn('relay_token', 'text', (c) => c.notNull())
    .addColumn('attempts', 'integer', (c) => c.notNull().defaultTo(0))
    .addColumn('created_at', 'bigint', (c) => c.notNull())
    .addColumn('lease_until', 'bigint')
    .addColumn('ended_at', 'bigint')
    .addColumn('end_reason', 'text')
    .execute();
  // A node's open transfers: what its heartbeat and long-poll read.
  await db.schema
    .createIndex('transfers_open_by_node')
    .on('transfers')
    .columns(['node_id', 'id'])
    .where(sql<boolean>`state = 'sending'`)
    .execute();
  await db.schema.alterTable('allocations').addColumn('proved_at', 'bigint').execute();
  // Assets whose source vanished with copies left were `unreachable`; they are now repaired from
  // those copies, marked by their source host '(peers)'.
  await sql`update assets set source_host = '(peers)', state = case when copies >= replicas_target then 'rescued' else 'pending' end where state = 'unreachable'`.execute(
    db,
  );
}
