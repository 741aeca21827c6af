import type { Db } from '../db/database.js';
import type { DueWork } from '../db/due-work.js';
import type { TransferPurpose, TransferRow } from './transfers.table.js';

/** Transfers as due work: created already claimed by their holder, renewed by each chunk, ended once. */
export const transferWork: DueWork<'transfers'> = {
  table: 'transfers',
  waiting: 'sending',
  claimed: 'sending',
  leaseUntil: 'lease_until',
  orderBy: 'id',
};

/** A counted copy of an asset and what is known of its holder's liveness. */
export interface Holder {
  allocationId: number;
  nodeId: number;
  nodeName: string;
  status: string;
  lastHeartbeatAt: number | null;
  bytes: number;
  sha256: string;
}

/** The counted copies of an asset (completed, verified), most recently seen holders first. */
export async function holdersOf(db: Db, assetId: string): Promise<Holder[]> {
  const rows = await db
    .selectFrom('allocations')
    .innerJoin('nodes', 'nodes.id', 'allocations.node_id')
    .select([
      'allocations.id as allocation_id',
      'nodes.id as node_id',
      'nodes.name',
      'nodes.status',
      'nodes.last_heartbeat_at',
      'allocations.bytes',
      'allocations.sha256',
    ])
    .where('allocations.asset_id', '=', assetId)
    .where('allocations.state', '=', 'completed')
    .where('allocations.verified', '=', 1)
    .orderBy('nodes.last_heartbeat_at', 'desc')
    .orderBy('allocations.id')
    .execute();
  return rows
    .filter((row) => row.bytes !== null && row.sha256 !== null)
    .map((row) => ({
      allocationId: row.allocation_id,
      nodeId: row.node_id,
      nodeName: row.name,
      status: row.status,
      lastHeartbeatAt: row.last_heartbeat_at === null ? null : Number(row.last_heartbeat_at),
      bytes: Number(row.bytes),
      sha256: (row.sha256 as string).toLowerCase(),
    }));
}

export interface NewTransfer {
  assetId: string;
  holder: Holder;
  purpose: TransferPurpose;
  rangeStart: number;
  rangeEnd: number;
  relayUrl: string;
  relayToken: string;
  leaseUntil: number;
}

export async function insertTransfer(db: Db, transfer: NewTransfer, now: number): Promise<TransferRow> {
  return db
    .insertInto('transfers')
    .values({
      asset_id: transfer.assetId,
      node_id: transfer.holder.nodeId,
      allocation_id: transfer.holder.allocationId,
      purpose: transfer.purpose,
      state: 'sending',
      range_start: transfer.rangeStart,
      range_end: transfer.rangeEnd,
      bytes_sent: 0,
      size_bytes: transfer.holder.bytes,
      sha256: transfer.holder.sha256,
      relay_url: transfer.relayUrl,
      relay_token: transfer.relayToken,
      attempts: 1,
      created_at: now,
      lease_until: transfer.leaseUntil,
    })
    .returningAll()
    .executeTakeFirstOrThrow();
}

export async function findTransfer(db: Db, id: number): Promise<TransferRow | undefined> {
  return db.selectFrom('transfers').selectAll().where('id', '=', id).executeTakeFirst();
}

/** The transfers a node holds and has not started (no chunk delivered yet): what it is asked to send. */
export async function openTransfersOf(db: Db, nodeId: number): Promise<TransferRow[]> {
  return db
    .selectFrom('transfers')
    .selectAll()
    .where('node_id', '=', nodeId)
    .where('state', '=', 'sending')
    .where('bytes_sent', '=', 0)
    .orderBy('id')
    .limit(100)
    .execute();
}

/** Of `nodeIds`, those holding an open transfer. */
export async function nodesWithOpenTransfers(db: Db, nodeIds: number[]): Promise<number[]> {
  if (nodeIds.length === 0) return [];
  const rows = await db
    .selectFrom('transfers')
    .select('node_id')
    .distinct()
    .where('state', '=', 'sending')
    .where('bytes_sent', '=', 0)
    .where('node_id', 'in', nodeIds)
    .execute();
  return rows.map((row) => Number(row.node_id));
}

/** Open transfers whose lease lapsed `graceMs` ago or more: their requester is gone too. */
export async function lapsedTransferIds(db: Db, now: number, limit: number): Promise<number[]> {
  const rows = await db.selectFrom('transfers').select('id').where('state', '=', 'sending').where('lease_until', '<', now).orderBy('id').limit(limit).execute();
  return rows.map((row) => Number(row.id));
}

/** Records that a node showed its copies of `assetIds` present and intact; how many it holds. */
export async function recordProved(db: Db, nodeId: number, assetIds: string[], now: number): Promise<number> {
  if (assetIds.length === 0) return 0;
  const rows = await db
    .updateTable('allocations')
    .set({ proved_at: now })
    .where('node_id', '=', nodeId)
    .where('state', '=', 'completed')
    .where('asset_id', 'in', assetIds)
    .returning('id')
    .execute();
  return rows.length;
}
