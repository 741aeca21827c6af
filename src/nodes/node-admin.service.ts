import type { Db } from '../db/database.js';
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
