import { sql, type Kysely } from 'kysely';

/**
 * Frozen: a worker is who it claims to be before it is rented.
 * - `nodes.host_key_verified_at`: when the control plane's own SSH key exchange with the worker's
 *   address last presented the pinned host key; null until then, and again after the address or
 *   the key changes. Existing workers are proven again by the next worker check.
 * - `nodes.approved_at`: when the node may be rented (WORKER_APPROVAL=admin: an admin's approval);
 *   every existing node counts as approved when it was created.
 * - A host key, and an address (ip, ssh_port), may be proven by one worker only: one machine
 *   holds several host keys.
 */
export async function up(db: Kysely<unknown>): Promise<void> {
  await db.schema.alterTable('nodes').addColumn('host_key_verified_at', 'bigint').execute();
  await db.schema.alterTable('nodes').addColumn('approved_at', 'bigint').execute();
  await sql`update nodes set approved_at = created_at`.execute(db);
  await db.schema
    .createIndex('nodes_proven_host_key')
    .on('nodes')
    .column('ssh_host_key')
    .unique()
    .where(sql.ref('host_key_verified_at'), 'is not', null)
    .execute();
  await db.schema
    .createIndex('nodes_proven_address')
    .on('nodes')
    .columns(['ip', 'ssh_port'])
    .unique()
    .where(sql.ref('host_key_verified_at'), 'is not', null)
    .execute();
}
