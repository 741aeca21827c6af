import { sql, type Kysely } from 'kysely';
import type { Dialect } from '../dialect.js';

/** Frozen: the schema as of the first release. Later changes go in new migrations. */
export async function up(db: Kysely<unknown>, dialect: Dialect): Promise<void> {
  await db.schema
    .createTable('settings')
    .addColumn('key', 'text', (c) => c.primaryKey())
    .addColumn('value', 'text', (c) => c.notNull())
    .execute();

  await dialect
    .addIdColumn(db.schema.createTable('users'))
    .addColumn('username', 'text', (c) => c.notNull().unique())
    .addColumn('password_hash', 'text', (c) => c.notNull())
    .addColumn('role', 'text', (c) => c.notNull().check(sql`role in ('admin', 'user')`))
    .addColumn('created_at', 'bigint', (c) => c.notNull())
    .execute();

  await dialect
    .addIdColumn(db.schema.createTable('nodes'))
    .addColumn('name', 'text', (c) => c.notNull().unique())
    .addColumn('hostname', 'text', (c) => c.notNull())
    .addColumn('ip', 'text')
    .addColumn('ssh_port', 'integer')
    .addColumn('status', 'text', (c) => c.notNull().defaultTo('unknown'))
    .addColumn('free_bytes', 'bigint')
    .addColumn('free_reported_at', 'bigint')
    .addColumn('last_heartbeat_at', 'bigint')
    .addColumn('probe_failures', 'integer', (c) => c.notNull().defaultTo(0))
    .addColumn('bandwidth_bps', 'double precision')
    .addColumn('tags', 'text', (c) => c.notNull().defaultTo('{}'))
    .addColumn('token_hash', 'text', (c) => c.unique())
    .addColumn('created_at', 'bigint', (c) => c.notNull())
    .execute();

  await dialect
    .addIdColumn(db.schema.createTable('enrollment_tokens'))
    .addColumn('token_hash', 'text', (c) => c.notNull().unique())
    .addColumn('note', 'text')
    .addColumn('created_by', 'bigint')
    .addColumn('created_at', 'bigint', (c) => c.notNull())
    .addColumn('expires_at', 'bigint')
    .addColumn('uses', 'integer', (c) => c.notNull().defaultTo(0))
    .execute();

  await db.schema
    .createTable('assets')
    .addColumn('id', 'text', (c) => c.primaryKey())
    .addColumn('name', 'text', (c) => c.notNull())
    .addColumn('url', 'text', (c) => c.notNull())
    .addColumn('size_bytes', 'bigint')
    .addColumn('priority', 'integer', (c) => c.notNull().check(sql`priority between 1 and 10`))
    .addColumn('replicas_target', 'integer', (c) => c.notNull().check(sql`replicas_target >= 1`))
    .addColumn('state', 'text', (c) => c.notNull().defaultTo('pending'))
    .addColumn('copies', 'integer', (c) => c.notNull().defaultTo(0))
    .addColumn('holders', 'integer', (c) => c.notNull().defaultTo(0))
    .addColumn('source', 'text')
    .addColumn('dataset', 'text')
    .addColumn('organization', 'text')
    .addColumn('format', 'text')
    .addColumn('sha256', 'text')
    .addColumn('first_seen_at', 'bigint', (c) => c.notNull())
    .addColumn('last_seen_at', 'bigint', (c) => c.notNull())
    .addColumn('removed_from_source_at', 'bigint')
    .addColumn('priority_changed_at', 'bigint', (c) => c.notNull())
    .addCheckConstraint('assets_holders_within_target', sql`holders >= 0 and holders <= replicas_target`)
    .execute();
  // The allocation order of invariant 3, over claimable assets only: an asset leaves these indexes
  // when it is full, so a claim never walks past the assets already taken, however many are.
  await db.schema
    .createIndex('assets_claimable')
    .on('assets')
    .columns(['priority desc', 'holders', 'first_seen_at', 'id'])
    .where(sql<boolean>`state = 'pending' and holders < replicas_target and size_bytes is not null`)
    .execute();
  // Assets of unknown size are looked up on their own (they get an estimate and a per-request cap).
  await db.schema
    .createIndex('assets_claimable_unknown_size')
    .on('assets')
    .columns(['priority desc', 'holders', 'first_seen_at', 'id'])
    .where(sql<boolean>`state = 'pending' and holders < replicas_target and size_bytes is null`)
    .execute();

  await dialect
    .addIdColumn(db.schema.createTable('allocations'))
    .addColumn('asset_id', 'text', (c) => c.notNull().references('assets.id'))
    .addColumn('node_id', 'bigint', (c) => c.notNull().references('nodes.id'))
    .addColumn('state', 'text', (c) => c.notNull())
    .addColumn('reserved_bytes', 'bigint', (c) => c.notNull())
    .addColumn('created_at', 'bigint', (c) => c.notNull())
    .addColumn('expires_at', 'bigint', (c) => c.notNull())
    .addColumn('ended_at', 'bigint')
    .addColumn('end_reason', 'text')
    .addColumn('bytes', 'bigint')
    .addColumn('sha256', 'text')
    .addColumn('uri', 'text')
    .addColumn('verified', 'integer', (c) => c.notNull().defaultTo(0))
    .execute();
  // Invariant 1's second half, enforced by the database: one live claim or copy per asset and node.
  await db.schema
    .createIndex('allocations_one_per_node')
    .on('allocations')
    .columns(['asset_id', 'node_id'])
    .unique()
    .where(sql.ref('state'), 'in', sql`('active', 'completed')`)
    .execute();
  // Covers the sum of a node's active reservations that every /allocate reads.
  await db.schema.createIndex('allocations_by_node').on('allocations').columns(['node_id', 'state', 'reserved_bytes']).execute();
  await db.schema.createIndex('allocations_by_expiry').on('allocations').columns(['state', 'expires_at']).execute();

  await dialect
    .addIdColumn(db.schema.createTable('events'))
    .addColumn('at', 'bigint', (c) => c.notNull())
    .addColumn('actor', 'text', (c) => c.notNull())
    .addColumn('kind', 'text', (c) => c.notNull())
    .addColumn('subject_type', 'text', (c) => c.notNull())
    .addColumn('subject_id', 'text', (c) => c.notNull())
    .addColumn('data', 'text')
    .execute();
  await db.schema.createIndex('events_by_subject').on('events').columns(['subject_type', 'subject_id', 'id']).execute();

  await db.schema
    .createTable('loops')
    .addColumn('name', 'text', (c) => c.primaryKey())
    .addColumn('next_run_at', 'bigint', (c) => c.notNull())
    .addColumn('last_started_at', 'bigint')
    .addColumn('last_finished_at', 'bigint')
    .addColumn('last_error', 'text')
    .execute();
}
