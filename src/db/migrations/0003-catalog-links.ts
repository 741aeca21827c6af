import type { Kysely } from 'kysely';

/** Frozen: what catalog import needs (links from portal resources to assets, lookups by URL and source). */
export async function up(db: Kysely<unknown>): Promise<void> {
  // One row per portal resource: the same URL published twice is one asset with two links.
  await db.schema
    .createTable('asset_links')
    .addColumn('source', 'text', (c) => c.notNull())
    .addColumn('resource_id', 'text', (c) => c.notNull())
    .addColumn('asset_id', 'text', (c) => c.notNull().references('assets.id'))
    .addColumn('dataset', 'text')
    .addColumn('seen_at', 'bigint', (c) => c.notNull())
    .addPrimaryKeyConstraint('asset_links_pk', ['source', 'resource_id'])
    .execute();
  await db.schema.createIndex('asset_links_by_asset').on('asset_links').columns(['asset_id']).execute();
  // Import de-duplicates by URL and sweeps a source's unseen assets after a complete run.
  await db.schema.createIndex('assets_by_url').on('assets').columns(['url']).execute();
  await db.schema.createIndex('assets_by_source').on('assets').columns(['source', 'last_seen_at']).execute();
}
