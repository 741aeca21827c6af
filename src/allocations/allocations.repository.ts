import type { ExpressionBuilder } from 'kysely';
import { toIso } from '../clock.js';
import type { Db } from '../db/database.js';
import type { Database } from '../db/schema.js';
import { PEERS_HOST, peersUrlOf } from '../sources/source-host.js';
import type { AllocationView } from './allocations.schemas.js';
import type { AllocationState } from './allocations.table.js';

export interface AllocationFilter {
  nodeId?: number;
  assetId?: string;
  state?: AllocationState;
  /** Only allocations with an id below this one (newest first). */
  before?: number;
  limit: number;
}

/** The latest verdict of an allocation's audits (spot check or retention). */
function lastAudit(eb: ExpressionBuilder<Database, 'allocations' | 'nodes'>) {
  return eb
    .selectFrom('audits')
    .whereRef('audits.allocation_id', '=', 'allocations.id')
    .where('audits.state', 'in', ['passed', 'failed', 'missed'])
    .orderBy('audits.ended_at', 'desc')
    .limit(1);
}

export async function listAllocations(db: Db, filter: AllocationFilter): Promise<AllocationView[]> {
  let query = db
    .selectFrom('allocations')
    .innerJoin('nodes', 'nodes.id', 'allocations.node_id')
    .selectAll('allocations')
    .select(['nodes.name as node_name', 'nodes.status as node_status', 'nodes.last_heartbeat_at as node_last_heartbeat_at'])
    .select((eb) => [lastAudit(eb).select('audits.ended_at').as('last_audit_at'), lastAudit(eb).select('audits.state').as('last_audit_verdict')])
    .orderBy('allocations.id', 'desc')
    .limit(filter.limit);
  if (filter.nodeId !== undefined) query = query.where('allocations.node_id', '=', filter.nodeId);
  if (filter.assetId !== undefined) query = query.where('allocations.asset_id', '=', filter.assetId);
  if (filter.state !== undefined) query = query.where('allocations.state', '=', filter.state);
  if (filter.before !== undefined) query = query.where('allocations.id', '<', filter.before);
  const rows = await query.execute();
  return rows.map((row) => ({
    id: row.id,
    asset_id: row.asset_id,
    node_id: row.node_id,
    node_name: row.node_name,
    state: row.state,
    reserved_bytes: row.reserved_bytes,
    created_at: toIso(row.created_at),
    expires_at: toIso(row.expires_at),
    ended_at: toIso(row.ended_at),
    end_reason: row.end_reason,
    bytes: row.bytes,
    sha256: row.sha256,
    uri: row.uri,
    verified: row.verified === 1,
    proved_at: toIso(row.proved_at),
    proof: row.proof,
    proven_at: toIso(row.proven_at),
    last_audit: row.last_audit_at === null ? null : { at: toIso(Number(row.last_audit_at)) as string, verdict: row.last_audit_verdict as string },
    holder_status: row.node_status,
    holder_last_seen: toIso(row.node_last_heartbeat_at),
    restore_url: row.state === 'active' && row.source_host === PEERS_HOST ? peersUrlOf(row.asset_id) : null,
  }));
}
