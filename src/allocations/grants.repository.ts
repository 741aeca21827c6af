import { sql } from 'kysely';
import { changeHolders } from '../assets/assets.repository.js';
import type { Db } from '../db/database.js';
import { appendEvents } from '../events/events.repository.js';
import { PEERS_HOST, peersUrlOf } from '../sources/source-host.js';
import { activeByHost, lockSourceHosts } from '../sources/sources.repository.js';
import { withinHostCaps, type Grant } from './allocation-rules.js';

export interface GrantedAsset {
  allocationId: number;
  id: string;
  name: string;
  url: string;
  /** Set when the source is gone: the control plane's restore of the copies left, to be fetched with the node's token. */
  restoreUrl: string | null;
  sizeBytes: number | null;
  priority: number;
  sha256: string | null;
  reservedBytes: number;
  expiresAt: number;
}

/** Inserts the allocations, counts them in holders and records one event each; results in the grants' order. */
export async function grant(trx: Db, grants: Grant[], now: number, together: boolean): Promise<GrantedAsset[]> {
  if (grants.length === 0) return [];
  const allocationIds = await writeGrants(trx, grants, now, together);
  return grants.map((entry, index) => ({
    allocationId: allocationIds[index] as number,
    id: entry.asset.id,
    name: entry.asset.name,
    url: entry.asset.url,
    restoreUrl: entry.asset.source_host === PEERS_HOST ? peersUrlOf(entry.asset.id) : null,
    sizeBytes: entry.asset.size_bytes,
    priority: entry.asset.priority,
    sha256: entry.asset.sha256,
    reservedBytes: entry.reservedBytes,
    expiresAt: entry.expiresAt,
  }));
}

/**
 * The per-host cap under concurrency (PostgreSQL): the hosts' rows are locked in host order, then
 * their active allocations counted again, now that transactions granting on them before have
 * committed; grants past the cap are dropped (the node asks again). SQLite has one writer, and
 * the counts read with the candidates are already exact.
 */
export async function keepWithinHostCaps(trx: Db, grants: Grant[], hostCap: number, lockHosts: boolean): Promise<Grant[]> {
  if (hostCap <= 0 || !lockHosts) return grants;
  const hosts = [...new Set(grants.map(({ asset }) => asset.source_host).filter((host): host is string => host !== null))];
  if (hosts.length === 0) return grants;
  await lockSourceHosts(trx, hosts);
  return withinHostCaps(grants, await activeByHost(trx, hosts), hostCap);
}

/** Inserts the allocations, counts them in holders and records one event each; the allocation ids in the grants' order. */
async function writeGrants(trx: Db, grants: Grant[], now: number, together: boolean): Promise<number[]> {
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
      grants.map(({ request, asset, reservedBytes, expiresAt, operatorId }) => ({
        asset_id: asset.id,
        node_id: request.nodeId,
        state: 'active' as const,
        reserved_bytes: reservedBytes,
        created_at: now,
        expires_at: expiresAt,
        verified: 0,
        source_host: asset.source_host,
        operator_id: operatorId,
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
      insert into allocations (asset_id, node_id, state, reserved_bytes, created_at, expires_at, verified, source_host, operator_id)
      select g.asset_id, g.node_id, 'active', g.reserved_bytes, ${now}::bigint, g.expires_at, 0, g.source_host, g.operator_id
      from unnest(${column((g) => g.asset.id)}::text[], ${column((g) => g.request.nodeId)}::bigint[],
                  ${column((g) => g.reservedBytes)}::bigint[], ${column((g) => g.expiresAt)}::bigint[],
                  ${column((g) => g.asset.source_host)}::text[], ${column((g) => g.operatorId)}::bigint[])
        with ordinality as g(asset_id, node_id, reserved_bytes, expires_at, source_host, operator_id, position)
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
