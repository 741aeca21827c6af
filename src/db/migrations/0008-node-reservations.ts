import { sql, type Kysely } from 'kysely';
import type { Dialect } from '../dialect.js';

/**
 * Frozen: each node's active reservations kept on its row, in `nodes.reserved_bytes`, by triggers on
 * allocations, so every path that grants, completes, releases, expires or deletes an allocation keeps
 * it right. The claim read it as a sum over the node's active allocations, whose cost grew with
 * them on every claim.
 */
export async function up(db: Kysely<unknown>, dialect: Dialect): Promise<void> {
  await db.schema
    .alterTable('nodes')
    .addColumn('reserved_bytes', 'bigint', (c) => c.notNull().defaultTo(0))
    .execute();
  await sql`update nodes set reserved_bytes = (
      select coalesce(sum(reserved_bytes), 0) from allocations where allocations.node_id = nodes.id and allocations.state = 'active')`.execute(db);
  if (dialect.name === 'sqlite') await sqliteTriggers(db);
  else await postgresTriggers(db);
}

/** Row triggers: SQLite runs them in-process, at a few microseconds each. */
async function sqliteTriggers(db: Kysely<unknown>): Promise<void> {
  await sql`create trigger allocations_reserve after insert on allocations when new.state = 'active'
    begin update nodes set reserved_bytes = reserved_bytes + new.reserved_bytes where id = new.node_id; end`.execute(db);
  await sql`create trigger allocations_unreserve after delete on allocations when old.state = 'active'
    begin update nodes set reserved_bytes = reserved_bytes - old.reserved_bytes where id = old.node_id; end`.execute(db);
  await sql`create trigger allocations_rereserve after update of state, node_id, reserved_bytes on allocations
    when old.state = 'active' or new.state = 'active'
    begin
      update nodes set reserved_bytes = reserved_bytes - old.reserved_bytes where id = old.node_id and old.state = 'active';
      update nodes set reserved_bytes = reserved_bytes + new.reserved_bytes where id = new.node_id and new.state = 'active';
    end`.execute(db);
}

/**
 * Statement triggers with transition tables: one UPDATE of nodes per statement on allocations
 * whatever its row count (a batch of grants inserts many rows at once). The node rows are locked
 * in id order first, as the claim locks them, so the two cannot deadlock.
 */
async function postgresTriggers(db: Kysely<unknown>): Promise<void> {
  for (const [event, rows] of [
    ['insert', `select node_id, reserved_bytes as bytes from new_rows where state = 'active'`],
    ['delete', `select node_id, -reserved_bytes as bytes from old_rows where state = 'active'`],
    [
      'update',
      `select node_id, reserved_bytes as bytes from new_rows where state = 'active'
       union all select node_id, -reserved_bytes from old_rows where state = 'active'`,
    ],
  ] as const) {
    const transition = { insert: 'new table as new_rows', delete: 'old table as old_rows', update: 'old table as old_rows new table as new_rows' }[event];
    const perNode = `select node_id, sum(bytes) as bytes from (${rows}) changed group by node_id having sum(bytes) <> 0`;
    await sql
      .raw(
        `create function allocations_reservations_after_${event}() returns trigger language plpgsql as $$
        begin
          perform 1 from nodes where id in (select node_id from (${perNode}) per_node) order by id for update;
          update nodes set reserved_bytes = nodes.reserved_bytes + per_node.bytes from (${perNode}) per_node where nodes.id = per_node.node_id;
          return null;
        end $$`,
      )
      .execute(db);
    await sql
      .raw(
        `create trigger allocations_reservations_${event} after ${event} on allocations
         referencing ${transition} for each statement execute function allocations_reservations_after_${event}()`,
      )
      .execute(db);
  }
}
