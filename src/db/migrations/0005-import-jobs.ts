import { sql, type Kysely } from 'kysely';
import type { Dialect } from '../dialect.js';

/** Frozen: catalog imports as background jobs that any instance can report on, resume or take over. */
export async function up(db: Kysely<unknown>, dialect: Dialect): Promise<void> {
  await dialect
    .addIdColumn(db.schema.createTable('imports'))
    .addColumn('kind', 'text', (c) => c.notNull().check(sql`kind in ('ckan', 'datagov', 'dcat')`))
    .addColumn('source', 'text', (c) => c.notNull())
    .addColumn('params', 'text', (c) => c.notNull())
    .addColumn('state', 'text', (c) => c.notNull().check(sql`state in ('queued', 'running', 'succeeded', 'failed', 'cancelled')`))
    .addColumn('created_by', 'text', (c) => c.notNull())
    .addColumn('created_at', 'bigint', (c) => c.notNull())
    .addColumn('started_at', 'bigint')
    .addColumn('finished_at', 'bigint')
    .addColumn('progress_at', 'bigint')
    .addColumn('lease_owner', 'text')
    .addColumn('lease_expires_at', 'bigint')
    .addColumn('attempts', 'integer', (c) => c.notNull().defaultTo(0))
    .addColumn('cursor', 'text')
    .addColumn('pages_done', 'integer', (c) => c.notNull().defaultTo(0))
    .addColumn('datasets_seen', 'integer', (c) => c.notNull().defaultTo(0))
    .addColumn('datasets_total', 'integer')
    .addColumn('resources_seen', 'integer', (c) => c.notNull().defaultTo(0))
    .addColumn('assets_created', 'integer', (c) => c.notNull().defaultTo(0))
    .addColumn('assets_updated', 'integer', (c) => c.notNull().defaultTo(0))
    .addColumn('assets_unchanged', 'integer', (c) => c.notNull().defaultTo(0))
    .addColumn('duplicates', 'integer', (c) => c.notNull().defaultTo(0))
    .addColumn('removed', 'integer')
    .addColumn('pages_finished_at', 'bigint')
    .addColumn('sizes', 'text')
    .addColumn('errors', 'integer', (c) => c.notNull().defaultTo(0))
    .addColumn('last_error', 'text')
    .execute();
  // At most one queued or running import per source: two runs of one portal would sweep each
  // other's assets as removed. The database enforces it, so instances need not coordinate.
  await db.schema
    .createIndex('imports_one_active_per_source')
    .on('imports')
    .column('source')
    .unique()
    .where(sql<boolean>`state in ('queued', 'running')`)
    .execute();
  // The reconciler looks for queued jobs and running ones whose lease lapsed.
  await db.schema.createIndex('imports_by_state').on('imports').columns(['state', 'lease_expires_at']).execute();
}
