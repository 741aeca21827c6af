import { sql, type Kysely } from 'kysely';

/** Frozen: what the node agent and liveness need (heartbeats, progress, strikes, source errors). */
export async function up(db: Kysely<unknown>): Promise<void> {
  await db.schema
    .alterTable('nodes')
    .addColumn('strikes', 'integer', (c) => c.notNull().defaultTo(0))
    .execute();
  await db.schema
    .alterTable('nodes')
    .addColumn('draining', 'integer', (c) => c.notNull().defaultTo(0))
    .execute();
  await db.schema.alterTable('nodes').addColumn('bytes_in_flight', 'bigint').execute();
  await db.schema.alterTable('allocations').addColumn('bytes_done', 'bigint').execute();
  await db.schema.alterTable('allocations').addColumn('progress_at', 'bigint').execute();
  // How many distinct nodes found the source answering 404/410, and the last such answer.
  await db.schema
    .alterTable('assets')
    .addColumn('source_errors', 'integer', (c) => c.notNull().defaultTo(0))
    .execute();
  await db.schema.alterTable('assets').addColumn('source_error', 'text').execute();
  await db.schema.alterTable('assets').addColumn('source_error_at', 'bigint').execute();
  await db.schema.createIndex('nodes_by_status').on('nodes').columns(['status', 'last_heartbeat_at']).execute();
  // The releases that reported a vanished source: a claim checks them for the few assets with
  // source errors (without this index, that check scanned every allocation).
  await db.schema
    .createIndex('allocations_source_gone')
    .on('allocations')
    .columns(['asset_id', 'node_id'])
    .where(sql<boolean>`end_reason like 'source_gone:%'`)
    .execute();
}
