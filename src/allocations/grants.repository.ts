import { sql } from 'kysely';
import { changeHolders } from '../assets/assets.repository.js';
import type { Db } from '../db/database.js';
import { appendEvents } from '../events/events.repository.js';
import type { Grant } from './allocation-rules.js';

/** Inserts the allocations, counts them in holders and records one event each; the allocation ids in the grants' order. */
export async function writeGrants(trx: Db, grants: Grant[], now: number, together: boolean): Promise<number[]> {
  const inserted = together ? await writeGrantsTogether(trx, grants, now) : await writeGrantsApart(trx, grants, now);
  return grants.map(allocationIds(inserted));
}

interface InsertedAllocation {
  id: number;
  asset_id: string;
  node_id: number;
}

/** Each grant's allocation id, from the inserted rows (one per asset and node). */
function allocationIds(inserted: InsertedAllocation[]): (grant: Grant) => number {
  const ids = new Map(inserted.map((row) => [`${row.asset_id} ${row.node_id}`, row.id]));
  return ({ asset, request }) => ids.get(`${asset.id} ${request.nodeId}`) as number;
}

const GRANTED = 'allocation.granted';

function grantedEventData({ asset, request, reservedBytes, expiresAt }: Grant) {
  return { asset_id: asset.id, node_id: request.nodeId, reserved_bytes: reservedBytes, expires_at: expiresAt };
}

/** One statement per table: the INSERT, the holders increments (changeHolders), the events. */
async function writeGrantsApart(trx: Db, grants: Grant[], now: number): Promise<InsertedAllocation[]> {
  const inserted = await trx
    .insertInto('allocations')
    .values(
      grants.map(({ request, asset, reservedBytes, expiresAt }) => ({
        asset_id: asset.id,
        node_id: request.nodeId,
        state: 'active' as const,
        reserved_bytes: reservedBytes,
        created_at: now,
        expires_at: expiresAt,
        verified: 0,
        source_host: asset.source_host,
      })),
    )
    .returning(['id', 'asset_id', 'node_id'])
    .execute();
  // An asset granted to several nodes of a batch gains several holders.
  await changeHolders(
    trx,
    grants.map(({ asset }) => asset.id),
    1,
  );
  const allocationIdOf = allocationIds(inserted);
  await appendEvents(
    trx,
    now,
    grants.map((entry) => ({
      actor: entry.request.actor,
      kind: GRANTED,
      subjectType: 'allocation',
      subjectId: allocationIdOf(entry),
      data: grantedEventData(entry),
    })),
  );
  return inserted;
}

/**
 * The same three writes as data-modifying WITH queries of one statement: one round trip instead
 * of three. The grants travel as arrays, so the SQL text is the same for any number of them and
 * stays one prepared statement. Rows are inserted in the grants' order.
 */
async function writeGrantsTogether(trx: Db, grants: Grant[], now: number): Promise<InsertedAllocation[]> {
  const column = <T>(value: (grant: Grant) => T) => grants.map(value);
  const { rows } = await sql<InsertedAllocation>`
    with granted as (
      insert into allocations (asset_id, node_id, state, reserved_bytes, created_at, expires_at, verified, source_host)
      select g.asset_id, g.node_id, 'active', g.reserved_bytes, ${now}::bigint, g.expires_at, 0, g.source_host
      from unnest(${column((g) => g.asset.id)}::text[], ${column((g) => g.request.nodeId)}::bigint[],
                  ${column((g) => g.reservedBytes)}::bigint[], ${column((g) => g.expiresAt)}::bigint[],
                  ${column((g) => g.asset.source_host)}::text[])
        with ordinality as g(asset_id, node_id, reserved_bytes, expires_at, source_host, position)
      order by g.position
      returning id, asset_id, node_id
    ), counted as (
      update assets set holders = holders + c.grants
      from (select asset_id, count(*)::int as grants from granted group by asset_id) as c
      where assets.id = c.asset_id
    ), logged as (
      insert into events (at, actor, kind, subject_type, subject_id, data)
      select ${now}::bigint, e.actor, ${GRANTED}, 'allocation', granted.id::text, e.data
      from unnest(${column((g) => g.asset.id)}::text[], ${column((g) => g.request.nodeId)}::bigint[],
                  ${column((g) => g.request.actor)}::text[], ${column((g) => JSON.stringify(grantedEventData(g)))}::text[])
        with ordinality as e(asset_id, node_id, actor, data, position)
      join granted using (asset_id, node_id)
      order by e.position
    )
    select id, asset_id, node_id from granted`.execute(trx);
  return rows;
}
