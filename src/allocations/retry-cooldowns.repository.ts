import type { Db } from '../db/database.js';
import { cooldownAfter, type FailurePolicy } from './failure-policy.js';

export interface FailedPair {
  nodeId: number;
  assetId: string;
  reason: string | null;
}

/**
 * Records a failure of each node-asset pair: its count goes up by one and the pair may not be
 * granted again before the cooldown for that count has passed. The assets' `retry_failures` go
 * up too, which is what makes the claim look for cooldowns at all.
 */
export async function recordCooldowns(trx: Db, pairs: FailedPair[], policy: Pick<FailurePolicy, 'cooldownMs' | 'cooldownMaxMs'>, now: number): Promise<void> {
  for (let start = 0; start < pairs.length; start += 500) {
    const chunk = pairs.slice(start, start + 500);
    const assetIds = [...new Set(chunk.map((pair) => pair.assetId))];
    const earlier = await trx
      .selectFrom('retry_cooldowns')
      .select(['node_id', 'asset_id', 'failures'])
      .where('asset_id', 'in', assetIds)
      .where('node_id', 'in', [...new Set(chunk.map((pair) => pair.nodeId))])
      .execute();
    const failuresOf = new Map(earlier.map((row) => [`${row.node_id} ${row.asset_id}`, row.failures]));
    const rows = chunk.map((pair) => {
      const failures = (failuresOf.get(`${pair.nodeId} ${pair.assetId}`) ?? 0) + 1;
      return { node_id: pair.nodeId, asset_id: pair.assetId, failures, retry_at: now + cooldownAfter(failures, policy), reason: pair.reason, updated_at: now };
    });
    await trx
      .insertInto('retry_cooldowns')
      .values(rows)
      .onConflict((conflict) =>
        conflict.columns(['node_id', 'asset_id']).doUpdateSet((eb) => ({
          failures: eb.ref('excluded.failures'),
          retry_at: eb.ref('excluded.retry_at'),
          reason: eb.ref('excluded.reason'),
          updated_at: eb.ref('excluded.updated_at'),
        })),
      )
      .execute();
    await trx
      .updateTable('assets')
      .set((eb) => ({ retry_failures: eb('retry_failures', '+', 1) }))
      .where('id', 'in', assetIds)
      .execute();
  }
}

/** For each asset, the nodes that may not get it yet. */
export async function coolingDown(db: Db, assetIds: string[], nodeIds: number[], now: number): Promise<Map<string, Set<number>>> {
  const waiting = new Map<string, Set<number>>();
  if (assetIds.length === 0 || nodeIds.length === 0) return waiting;
  const rows = await db
    .selectFrom('retry_cooldowns')
    .select(['asset_id', 'node_id'])
    .where('asset_id', 'in', assetIds)
    .where('node_id', 'in', nodeIds)
    .where('retry_at', '>', now)
    .execute();
  for (const row of rows) waiting.set(row.asset_id, (waiting.get(row.asset_id) ?? new Set()).add(row.node_id));
  return waiting;
}

/** Forgets every cooldown of a node (an admin cleared it). */
export async function clearCooldowns(db: Db, nodeId: number): Promise<void> {
  await db.deleteFrom('retry_cooldowns').where('node_id', '=', nodeId).execute();
}
