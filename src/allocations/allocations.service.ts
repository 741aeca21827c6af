import { sql } from 'kysely';
import type { AssetState } from '../assets/assets.table.js';
import type { Db } from '../db/database.js';
import { AppError } from '../errors.js';
import { recountHolders } from '../assets/assets.repository.js';
import { appendEvents } from '../events/events.repository.js';
import type { AllocationState } from './allocations.table.js';

/** Ends a node's active allocation of an asset by its choice; holders goes down by one. */
export async function releaseAllocation(
  db: Db,
  input: { assetId: string; nodeId: number; reason: string | null; actor: string },
  now: number,
): Promise<void> {
  await db.transaction().execute(async (trx) => {
    const ended = await endActiveAllocation(trx, input.assetId, input.nodeId, 'released', input.reason, now);
    if (!ended) throw new AppError('NOT_ALLOCATED', `Node ${input.nodeId} holds no active allocation of asset "${input.assetId}".`);
    await trx.updateTable('assets').set((eb) => ({ holders: eb('holders', '-', 1) })).where('id', '=', input.assetId).execute();
    await appendEvents(trx, now, [
      { actor: input.actor, kind: 'allocation.released', subjectType: 'allocation', subjectId: ended.id, data: { asset_id: input.assetId, node_id: input.nodeId, reason: input.reason } },
    ]);
  });
}

export interface CompletionReport {
  assetId: string;
  nodeId: number;
  sha256: string;
  bytes: number;
  uri: string | null;
  actor: string;
}

export interface CompletionResult {
  assetState: string;
  copies: number;
  replicasTarget: number;
}

/**
 * Records a node's finished copy. It counts as verified when it matches what is known of the
 * asset (expected sha256, size); a mismatch fails the allocation and frees its place.
 */
export async function completeAllocation(db: Db, report: CompletionReport, now: number): Promise<CompletionResult> {
  const outcome = await db.transaction().execute(async (trx) => {
    const asset = await trx
      .selectFrom('assets')
      .select(['sha256', 'size_bytes', 'replicas_target', 'copies', 'state'])
      .where('id', '=', report.assetId)
      .executeTakeFirst();
    if (!asset) throw new AppError('ASSET_NOT_FOUND', `No asset has id "${report.assetId}".`);
    const mismatch = findMismatch(asset, report);
    if (mismatch) {
      const failed = await endActiveAllocation(trx, report.assetId, report.nodeId, 'failed', mismatch.reason, now, report);
      if (!failed) return notHeld(trx, report);
      await trx.updateTable('assets').set((eb) => ({ holders: eb('holders', '-', 1) })).where('id', '=', report.assetId).execute();
      await appendEvents(trx, now, [
        { actor: report.actor, kind: 'allocation.failed', subjectType: 'allocation', subjectId: failed.id, data: { asset_id: report.assetId, node_id: report.nodeId, reason: mismatch.reason, sha256: report.sha256, bytes: report.bytes } },
      ]);
      return { error: mismatch.error };
    }
    const completed = await endActiveAllocation(trx, report.assetId, report.nodeId, 'completed', null, now, report);
    if (!completed) return notHeld(trx, report);
    const updated = await trx
      .updateTable('assets')
      .set((eb) => ({
        copies: eb('copies', '+', 1),
        state: eb.case().when(eb('copies', '+', 1), '>=', eb.ref('replicas_target')).then(sql.lit<AssetState>('rescued')).else(eb.ref('state')).end(),
        size_bytes: eb.fn.coalesce('size_bytes', eb.val(report.bytes)),
      }))
      .where('id', '=', report.assetId)
      .returning(['state', 'copies', 'replicas_target'])
      .executeTakeFirstOrThrow();
    await appendEvents(trx, now, [
      { actor: report.actor, kind: 'allocation.completed', subjectType: 'allocation', subjectId: completed.id, data: { asset_id: report.assetId, node_id: report.nodeId, sha256: report.sha256, bytes: report.bytes, uri: report.uri } },
      ...(updated.state === 'rescued' && asset.state !== 'rescued'
        ? [{ actor: report.actor, kind: 'asset.rescued', subjectType: 'asset', subjectId: report.assetId, data: { copies: updated.copies } }]
        : []),
    ]);
    return { result: { assetState: updated.state, copies: updated.copies, replicasTarget: updated.replicas_target } };
  });
  // The failed allocation is committed first; only then is the mismatch reported to the node.
  if ('error' in outcome) throw outcome.error;
  return outcome.result;
}

function findMismatch(
  asset: { sha256: string | null; size_bytes: number | null },
  report: CompletionReport,
): { reason: string; error: AppError } | undefined {
  if (asset.sha256 !== null && asset.sha256.toLowerCase() !== report.sha256.toLowerCase()) {
    return {
      reason: 'checksum_mismatch',
      error: new AppError('CHECKSUM_MISMATCH', `The reported sha256 ${report.sha256} differs from the expected ${asset.sha256}; the copy was not counted.`),
    };
  }
  if (asset.size_bytes !== null && asset.size_bytes !== report.bytes) {
    return {
      reason: 'size_mismatch',
      error: new AppError('SIZE_MISMATCH', `The reported size ${report.bytes} bytes differs from the expected ${asset.size_bytes}; the copy was not counted.`),
    };
  }
  return undefined;
}

async function notHeld(db: Db, report: CompletionReport): Promise<never> {
  const done = await db
    .selectFrom('allocations')
    .select('id')
    .where('asset_id', '=', report.assetId)
    .where('node_id', '=', report.nodeId)
    .where('state', '=', 'completed')
    .executeTakeFirst();
  if (done) throw new AppError('ALREADY_COMPLETED', `Node ${report.nodeId} already completed asset "${report.assetId}".`);
  throw new AppError('NOT_ALLOCATED', `Node ${report.nodeId} holds no active allocation of asset "${report.assetId}".`);
}

/** The one conditional statement that ends a lease: no row back means it was not active. */
async function endActiveAllocation(
  db: Db,
  assetId: string,
  nodeId: number,
  state: Exclude<AllocationState, 'active'>,
  reason: string | null,
  now: number,
  report?: Pick<CompletionReport, 'sha256' | 'bytes' | 'uri'>,
): Promise<{ id: number } | undefined> {
  return db
    .updateTable('allocations')
    .set({
      state,
      ended_at: now,
      end_reason: reason,
      ...(report ? { sha256: report.sha256.toLowerCase(), bytes: report.bytes, uri: report.uri, verified: state === 'completed' ? 1 : 0 } : {}),
    })
    .where('asset_id', '=', assetId)
    .where('node_id', '=', nodeId)
    .where('state', '=', 'active')
    .returning('id')
    .executeTakeFirst();
}

const EXPIRY_BATCH = 5000;

/** Expires every active allocation past its lease, in batches; each batch is one transaction. */
export async function expireDueAllocations(db: Db, now: number): Promise<number> {
  let total = 0;
  for (;;) {
    const expired = await db.transaction().execute(async (trx) => {
      const rows = await trx
        .updateTable('allocations')
        .set({ state: 'expired', ended_at: now, end_reason: 'lease expired' })
        .where('id', 'in', (eb) =>
          eb.selectFrom('allocations').select('id').where('state', '=', 'active').where('expires_at', '<=', now).orderBy('expires_at').limit(EXPIRY_BATCH),
        )
        .where('state', '=', 'active')
        .returning(['id', 'asset_id', 'node_id', 'expires_at'])
        .execute();
      await recountHolders(trx, rows.map((row) => row.asset_id));
      await appendEvents(
        trx,
        now,
        rows.map((row) => ({
          actor: 'system',
          kind: 'allocation.expired',
          subjectType: 'allocation',
          subjectId: row.id,
          data: { asset_id: row.asset_id, node_id: row.node_id, expires_at: row.expires_at },
        })),
      );
      return rows.length;
    });
    total += expired;
    if (expired < EXPIRY_BATCH) return total;
  }
}
