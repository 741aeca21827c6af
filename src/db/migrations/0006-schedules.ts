import { sql, type Kysely } from 'kysely';
import type { Dialect } from '../dialect.js';

/** Frozen: schedules (time windows that reserve workers or open a node for rescue work). */
export async function up(db: Kysely<unknown>, dialect: Dialect): Promise<void> {
  await dialect
    .addIdColumn(db.schema.createTable('schedules'))
    .addColumn('owner_id', 'bigint', (c) => c.notNull().references('users.id'))
    .addColumn('name', 'text', (c) => c.notNull())
    .addColumn('start_time', 'bigint', (c) => c.notNull())
    .addColumn('end_time', 'bigint', (c) => c.notNull())
    // scheduled → running → completed (recurring: back to scheduled between windows); cancelled.
    .addColumn('status', 'text', (c) => c.notNull().check(sql`status in ('scheduled', 'running', 'completed', 'cancelled')`))
    .addColumn('active', 'integer', (c) => c.notNull().defaultTo(1))
    .addColumn('cron_start', 'text')
    .addColumn('cron_stop', 'text')
    .addColumn('timezone', 'text')
    // JSON: {"kind":"reserve","count":N} or {"kind":"node-window","node":"<name>"}; null for a plain entry.
    .addColumn('action', 'text')
    .addColumn('node_id', 'bigint')
    .addColumn('reserve_count', 'integer')
    .addColumn('password_hash', 'text')
    // The current window (while running) or the next one; null when none is left.
    .addColumn('window_start', 'bigint')
    .addColumn('window_end', 'bigint')
    .addColumn('last_fired_at', 'bigint')
    .addColumn('created_at', 'bigint', (c) => c.notNull())
    .addColumn('updated_at', 'bigint', (c) => c.notNull())
    .execute();
  await db.schema.createIndex('schedules_due').on('schedules').columns(['status', 'window_start']).execute();
  await db.schema.createIndex('schedules_by_owner').on('schedules').columns(['owner_id', 'id']).execute();
  await db.schema.createIndex('schedules_by_node').on('schedules').columns(['node_id']).execute();
  // A node lent only in windows: the current or next one (both null: the node has no windows).
  await db.schema.alterTable('nodes').addColumn('window_from', 'bigint').execute();
  await db.schema.alterTable('nodes').addColumn('window_until', 'bigint').execute();
  await db.schema.alterTable('rentals').addColumn('schedule_id', 'bigint').execute();
}
