import { sql, type Kysely } from 'kysely';
import type { Dialect } from '../dialect.js';

/**
 * Frozen: proven copies. `audits`, the lease of a holder on answering a challenge about its copy;
 * on allocations, the copy's Merkle root, its proof state and the retention audits' bookkeeping;
 * on assets, the agreed Merkle root; on nodes, the audit score. Copies counted before proofs
 * existed keep counting as `proven` and are audited like any other.
 */
export async function up(db: Kysely<unknown>, dialect: Dialect): Promise<void> {
  await dialect
    .addIdColumn(db.schema.createTable('audits'))
    .addColumn('allocation_id', 'bigint', (c) => c.notNull().references('allocations.id'))
    .addColumn('asset_id', 'text', (c) => c.notNull().references('assets.id'))
    .addColumn('node_id', 'bigint', (c) => c.notNull().references('nodes.id'))
    .addColumn('kind', 'text', (c) => c.notNull().check(sql`kind in ('spot_check', 'retention')`))
    .addColumn('method', 'text', (c) => c.notNull().check(sql`method in ('ranges', 'block')`))
    .addColumn('state', 'text', (c) => c.notNull().check(sql`state in ('queued', 'preparing', 'open', 'passed', 'failed', 'missed', 'cancelled')`))
    .addColumn('nonce', 'text')
    .addColumn('ranges', 'text')
    .addColumn('expected', 'text')
    .addColumn('block', 'bigint')
    .addColumn('attempts', 'integer', (c) => c.notNull().defaultTo(0))
    .addColumn('created_at', 'bigint', (c) => c.notNull())
    .addColumn('due_at', 'bigint', (c) => c.notNull())
    .addColumn('lease_until', 'bigint')
    .addColumn('ended_at', 'bigint')
    .addColumn('detail', 'text')
    .execute();
  // What the preparing pass and the expiry pass read: unfinished audits by due time.
  await db.schema
    .createIndex('audits_unfinished')
    .on('audits')
    .columns(['state', 'due_at'])
    .where(sql<boolean>`state in ('queued', 'preparing', 'open')`)
    .execute();
  // A node's open audits (its heartbeat), and its recent verdicts (its score).
  await db.schema.createIndex('audits_by_node').on('audits').columns(['node_id', 'ended_at']).execute();
  await db.schema.createIndex('audits_by_allocation').on('audits').columns(['allocation_id']).execute();
  // At most one audit under way per copy, whichever instance starts it.
  await db.schema
    .createIndex('audits_one_unfinished_per_copy')
    .unique()
    .on('audits')
    .columns(['allocation_id'])
    .where(sql<boolean>`state in ('queued', 'preparing', 'open')`)
    .execute();
  // The verdicts of the last day (/status, /api/summary, /metrics).
  await db.schema.createIndex('audits_by_end').on('audits').columns(['ended_at']).execute();

  await db.schema.alterTable('allocations').addColumn('merkle_root', 'text').execute();
  // pending: waits for its spot check (and holds its place); unproven: no spot check was possible,
  // it counts once copies of other holders agree; proven: counts; suspect: missed or failed an audit;
  // vetting: proven, on a node not vetted yet, so not counted.
  await db.schema
    .alterTable('allocations')
    .addColumn('proof', 'text', (c) => c.check(sql`proof in ('pending', 'unproven', 'proven', 'suspect', 'vetting')`))
    .execute();
  await db.schema.alterTable('allocations').addColumn('proven_at', 'bigint').execute();
  await db.schema
    .alterTable('allocations')
    .addColumn('audit_failures', 'integer', (c) => c.notNull().defaultTo(0))
    .execute();
  await db.schema.alterTable('allocations').addColumn('next_audit_at', 'bigint').execute();
  await db.schema
    .createIndex('allocations_audit_due')
    .on('allocations')
    .columns(['next_audit_at'])
    .where(sql<boolean>`state = 'completed' and next_audit_at is not null`)
    .execute();
  // Copies the retention pass has not given an audit time yet.
  await db.schema
    .createIndex('allocations_audit_unscheduled')
    .on('allocations')
    .columns(['id'])
    .where(sql<boolean>`state = 'completed' and proof in ('proven', 'suspect', 'vetting') and next_audit_at is null`)
    .execute();
  await sql`update allocations set proof = 'proven', proven_at = ended_at where state = 'completed'`.execute(db);

  await db.schema.alterTable('assets').addColumn('merkle_root', 'text').execute();

  await db.schema
    .alterTable('nodes')
    .addColumn('audits_passed', 'integer', (c) => c.notNull().defaultTo(0))
    .execute();
  await db.schema
    .alterTable('nodes')
    .addColumn('audits_failed', 'integer', (c) => c.notNull().defaultTo(0))
    .execute();
}
