import type { Db } from '../db/database.js';
import { endAllocations } from './end-allocations.js';

/** A copy that is no longer there as counted: gone from its holder's disk, corrupt, or serving other bytes. */
export interface LostCopy {
  assetId: string;
  /** missing, corrupt: its holder reported it; wrong_bytes: it served other bytes; the rest: its audits (audits/proof.service.ts). */
  reason: 'missing' | 'corrupt' | 'wrong_bytes' | 'spot_check_failed' | 'audit_failed' | 'unaudited';
  detail?: string;
}

/**
 * Takes a node's counted copies of the named assets out of the count: each completed allocation
 * ends `lost` (with an `allocation.lost` event), and its asset's copies, holders and state are
 * recounted, so a rescued asset is pending again and is handed out for repair. The asset rows are
 * locked first, in id order, which makes the recount exact beside concurrent completions. Ids the
 * node holds no counted copy of are skipped. Returns how many copies stopped counting.
 */
export async function loseCopies(db: Db, nodeId: number, lost: LostCopy[], actor: string, now: number): Promise<number> {
  if (lost.length === 0) return 0;
  return db.transaction().execute((trx) => loseCopiesIn(trx, nodeId, lost, actor, now));
}

/** `loseCopies` in the caller's transaction. */
export async function loseCopiesIn(trx: Db, nodeId: number, lost: LostCopy[], actor: string, now: number): Promise<number> {
  const byAsset = new Map(lost.map((copy) => [copy.assetId, copy]));
  const assetIds = [...byAsset.keys()].sort();
  for (const assetId of assetIds) {
    await trx
      .updateTable('assets')
      .set((eb) => ({ holders: eb.ref('holders') }))
      .where('id', '=', assetId)
      .execute();
  }
  const copies = await trx
    .selectFrom('allocations')
    .select(['id', 'asset_id'])
    .where('node_id', '=', nodeId)
    .where('state', '=', 'completed')
    .where('asset_id', 'in', assetIds)
    .execute();
  let total = 0;
  for (const copy of copies) {
    const report = byAsset.get(copy.asset_id) as LostCopy;
    const { ended } = await endAllocations(
      trx,
      { ids: [copy.id] },
      {
        state: 'lost',
        reason: report.reason,
        actor,
        from: ['completed'],
        event: (row) => ({
          kind: 'allocation.lost',
          data: { asset_id: row.asset_id, node_id: row.node_id, reason: report.reason, ...(report.detail ? { detail: report.detail } : {}) },
        }),
      },
      now,
    );
    total += ended.length;
  }
  return total;
}
