import { sql, type Kysely } from 'kysely';
import type { Dialect } from '../dialect.js';

/** Frozen: worker leasing (rentals over SSH-provisioned workers) and the outbox its side effects run from. */
export async function up(db: Kysely<unknown>, dialect: Dialect): Promise<void> {
  // A worker is a node that reported an SSH host key: pinned on first registration, checked on
  // every connection. The provisioning account is the one the worker's agent authorized our key for.
  await db.schema.alterTable('nodes').addColumn('ssh_host_key', 'text').execute();
  await db.schema.alterTable('nodes').addColumn('ssh_user', 'text').execute();
  // The active SSH probe: 'unknown' until the first probe, then 'alive' or 'dead' (after
  // WORKER_PROBE_FAILURES failures in a row; `probe_failures` counts them).
  await db.schema
    .alterTable('nodes')
    .addColumn('probe_status', 'text', (c) => c.notNull().defaultTo('unknown'))
    .execute();
  await db.schema.alterTable('nodes').addColumn('probed_at', 'bigint').execute();
  // Set when the worker's cleanup kept failing or its host key changed: out of the pool until an admin clears it.
  await db.schema.alterTable('nodes').addColumn('quarantined_at', 'bigint').execute();
  await db.schema.alterTable('nodes').addColumn('quarantine_reason', 'text').execute();

  await dialect
    .addIdColumn(db.schema.createTable('rentals'))
    .addColumn('user_id', 'bigint', (c) => c.notNull().references('users.id'))
    .addColumn('node_id', 'bigint', (c) => c.notNull())
    // provisioning → active → ended; migrating while it moves off a dead worker; failed.
    .addColumn('state', 'text', (c) => c.notNull())
    // The rentals of one /api/rent call: provisioned all together or not at all.
    .addColumn('batch', 'text', (c) => c.notNull())
    .addColumn('account', 'text', (c) => c.notNull())
    // SHA-512 crypt(3): what the worker's /etc/shadow needs, so a migration can set the same
    // password on another worker without Dispatcher ever keeping the password itself.
    .addColumn('password_hash', 'text', (c) => c.notNull())
    .addColumn('leased_from', 'bigint', (c) => c.notNull())
    .addColumn('leased_until', 'bigint', (c) => c.notNull())
    .addColumn('created_at', 'bigint', (c) => c.notNull())
    .addColumn('ended_at', 'bigint')
    .addColumn('end_reason', 'text')
    // JSON array of {from_node, to_node, at}: where the rental moved and when.
    .addColumn('migrations', 'text', (c) => c.notNull().defaultTo('[]'))
    .execute();
  // Invariant: a worker holds at most one live rental, whatever runs concurrently.
  await db.schema
    .createIndex('rentals_one_live_per_node')
    .on('rentals')
    .column('node_id')
    .unique()
    .where(sql.ref('state'), 'in', sql`('provisioning', 'active', 'migrating')`)
    .execute();
  await db.schema.createIndex('rentals_by_user').on('rentals').columns(['user_id', 'id']).execute();
  await db.schema.createIndex('rentals_by_state').on('rentals').columns(['state', 'leased_until']).execute();
  await db.schema.createIndex('rentals_by_batch').on('rentals').column('batch').execute();

  // The outbox: side effects that must not run inside a transaction, retried with backoff up to a cap.
  await dialect
    .addIdColumn(db.schema.createTable('tasks'))
    .addColumn('kind', 'text', (c) => c.notNull())
    // pending → running → done, or failed once the attempts are used up.
    .addColumn('state', 'text', (c) => c.notNull())
    .addColumn('rental_id', 'bigint')
    .addColumn('node_id', 'bigint')
    .addColumn('payload', 'text', (c) => c.notNull())
    .addColumn('attempts', 'integer', (c) => c.notNull().defaultTo(0))
    .addColumn('max_attempts', 'integer', (c) => c.notNull())
    .addColumn('run_after', 'bigint', (c) => c.notNull())
    // While running: when the run is presumed dead (its instance stopped) and may be taken again.
    .addColumn('locked_until', 'bigint')
    .addColumn('last_error', 'text')
    .addColumn('created_at', 'bigint', (c) => c.notNull())
    .addColumn('finished_at', 'bigint')
    .execute();
  await db.schema.createIndex('tasks_due').on('tasks').columns(['state', 'run_after']).execute();
  // A worker with cleanup still to do stays out of the pool: looked up by node.
  await db.schema.createIndex('tasks_by_node').on('tasks').columns(['node_id', 'state']).execute();
}
