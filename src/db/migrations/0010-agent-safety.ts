import { sql, type Kysely } from 'kysely';
import { sourceHostOf } from '../../sources/source-host.js';

const BACKFILL_BATCH = 5000;

/**
 * Frozen: what keeps a fleet of agents from hammering a source or retrying one asset in a loop.
 * - `assets.source_host` and `allocations.source_host` (copied at grant), with an index of the
 *   active allocations by host: counting a host's active allocations reads at most its cap.
 * - `source_hosts`: a host's fleet-wide pause (a 429/503 with Retry-After).
 * - `retry_cooldowns`: a node-asset pair that failed is not granted again before `retry_at`.
 *   `assets.retry_failures` counts the failures recorded against an asset, so that the claim looks
 *   up cooldowns only for assets that have any.
 * - `assets.mismatches_since`: mismatches reported after this time count towards `suspect`.
 */
export async function up(db: Kysely<unknown>): Promise<void> {
  await db.schema.alterTable('assets').addColumn('source_host', 'text').execute();
  await db.schema
    .alterTable('assets')
    .addColumn('retry_failures', 'integer', (c) => c.notNull().defaultTo(0))
    .execute();
  await db.schema
    .alterTable('assets')
    .addColumn('mismatches_since', 'bigint', (c) => c.notNull().defaultTo(0))
    .execute();
  await db.schema.alterTable('allocations').addColumn('source_host', 'text').execute();
  await db.schema
    .createIndex('allocations_active_by_host')
    .on('allocations')
    .column('source_host')
    .where(sql<boolean>`state = 'active'`)
    .execute();
  await db.schema
    .createTable('source_hosts')
    .addColumn('host', 'text', (c) => c.primaryKey())
    .addColumn('paused_until', 'bigint', (c) => c.notNull().defaultTo(0))
    .addColumn('pause_reason', 'text')
    .addColumn('updated_at', 'bigint', (c) => c.notNull().defaultTo(0))
    .execute();
  await db.schema
    .createTable('retry_cooldowns')
    .addColumn('node_id', 'bigint', (c) => c.notNull().references('nodes.id'))
    .addColumn('asset_id', 'text', (c) => c.notNull().references('assets.id'))
    .addColumn('failures', 'integer', (c) => c.notNull())
    .addColumn('retry_at', 'bigint', (c) => c.notNull())
    .addColumn('reason', 'text')
    .addColumn('updated_at', 'bigint', (c) => c.notNull())
    .addPrimaryKeyConstraint('retry_cooldowns_pair', ['node_id', 'asset_id'])
    .execute();
  await db.schema.createIndex('retry_cooldowns_by_asset').on('retry_cooldowns').columns(['asset_id', 'node_id']).execute();
  await backfillSourceHosts(db);
  await sql`update allocations set source_host = (select source_host from assets where assets.id = allocations.asset_id) where state = 'active'`.execute(db);
}

/** Host parsing is the same code as at import, so it runs here in batches rather than in SQL. */
async function backfillSourceHosts(db: Kysely<unknown>): Promise<void> {
  let after = '';
  for (;;) {
    const { rows } = await sql<{ id: string; url: string }>`select id, url from assets where id > ${after} order by id limit ${BACKFILL_BATCH}`.execute(db);
    if (rows.length === 0) return;
    const byHost = new Map<string, string[]>();
    for (const row of rows) {
      const host = sourceHostOf(row.url);
      if (host !== null) byHost.set(host, [...(byHost.get(host) ?? []), row.id]);
    }
    for (const [host, ids] of byHost) {
      await sql`update assets set source_host = ${host} where id in (${sql.join(ids)})`.execute(db);
    }
    after = (rows[rows.length - 1] as { id: string }).id;
  }
}
