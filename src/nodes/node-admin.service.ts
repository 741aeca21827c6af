import type { Db } from '../db/database.js';
import { refreshCopyCounts } from '../allocations/end-allocations.js';
import { clearCooldowns } from '../allocations/retry-cooldowns.repository.js';
import { appendEvents } from '../events/events.repository.js';
import { requeueFailedTasks } from '../tasks/outbox.js';

export type NodeAdminAction = 'drain' | 'clear';

/**
 * An admin's drain (the node keeps its work but gets nothing new) or clear (strikes forgiven,
 * drain ended, quarantine lifted), with its event.
 */
export async function adjustNode(db: Db, input: { nodeId: number; action: NodeAdminAction; actor: string }, now: number): Promise<void> {
  const values = input.action === 'drain' ? { draining: 1 } : { strikes: 0, draining: 0, quarantined_at: null, quarantine_reason: null };
  await db.transaction().execute(async (trx) => {
    await trx.updateTable('nodes').set(values).where('id', '=', input.nodeId).execute();
    if (input.action === 'clear') {
      // A worker leaves quarantine with its cleanup to do again: it joins the pool once that succeeded.
      await requeueFailedTasks(trx, input.nodeId, 'deprovision', now);
      // A node whose volunteer fixed its set-up (AGENT_ALLOW_PRIVATE_NETWORKS, a disk) need not wait out its cooldowns.
      await clearCooldowns(trx, input.nodeId);
    }
    await appendEvents(trx, now, [
      { actor: input.actor, kind: `node.${input.action === 'drain' ? 'drained' : 'cleared'}`, subjectType: 'node', subjectId: input.nodeId },
    ]);
  });
}

/**
 * Attaches a node to the user behind it (null: it counts as its own operator again). Its claims and
 * copies take the new operator (with DISTINCT_OPERATORS), and their assets are recounted under their
 * row locks, in id order: copies of one operator now count once.
 */
export async function setOperator(db: Db, input: { nodeId: number; operatorId: number | null; distinct: boolean; actor: string }, now: number): Promise<void> {
  await db.transaction().execute(async (trx) => {
    await trx.updateTable('nodes').set({ operator_id: input.operatorId }).where('id', '=', input.nodeId).execute();
    const held = await trx
      .updateTable('allocations')
      .set({ operator_id: input.distinct ? input.operatorId : null })
      .where('node_id', '=', input.nodeId)
      .where('state', 'in', ['active', 'completed'])
      .returning('asset_id')
      .execute();
    for (const assetId of [...new Set(held.map((row) => row.asset_id))].sort()) {
      await trx
        .updateTable('assets')
        .set((eb) => ({ holders: eb.ref('holders') }))
        .where('id', '=', assetId)
        .execute();
      await refreshCopyCounts(trx, assetId);
    }
    await appendEvents(trx, now, [
      {
        actor: input.actor,
        kind: 'node.operator_set',
        subjectType: 'node',
        subjectId: input.nodeId,
        data: { operator_id: input.operatorId, assets: held.length },
      },
    ]);
  });
}
