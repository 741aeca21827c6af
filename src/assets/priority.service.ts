import type { PriorityPolicy } from '../config.js';
import type { Db } from '../db/database.js';
import type { Dialect } from '../db/dialect.js';
import { AppError } from '../errors.js';
import { appendEvents } from '../events/events.repository.js';

export interface PriorityUpdate {
  assetId: string;
  priority: number;
}

/**
 * Applies a batch of manual priorities all or nothing: an unknown id rejects the whole batch.
 * Returns how many assets actually changed (a repeated or identical priority changes nothing).
 */
export async function updatePriorities(db: Db, updates: PriorityUpdate[], actor: string, now: number): Promise<number> {
  const latest = new Map(updates.map((update) => [update.assetId, update.priority]));
  const ids = [...latest.keys()];
  return db.transaction().execute(async (trx) => {
    const current = new Map<string, number>();
    for (let start = 0; start < ids.length; start += 1000) {
      const rows = await trx
        .selectFrom('assets')
        .select(['id', 'priority'])
        .where('id', 'in', ids.slice(start, start + 1000))
        .execute();
      for (const row of rows) current.set(row.id, row.priority);
    }
    const unknown = ids.filter((id) => !current.has(id));
    if (unknown.length > 0) {
      const shown = unknown
        .slice(0, 10)
        .map((id) => `"${id}"`)
        .join(', ');
      throw new AppError(
        'ASSET_NOT_FOUND',
        `Unknown asset ids: ${shown}${unknown.length > 10 ? ` and ${unknown.length - 10} more` : ''}. Nothing was updated.`,
        {
          unknown_ids: unknown.slice(0, 100),
        },
      );
    }
    const changed = ids.filter((id) => current.get(id) !== latest.get(id));
    for (const id of changed) {
      await trx
        .updateTable('assets')
        .set({ priority: latest.get(id) as number, priority_changed_at: now })
        .where('id', '=', id)
        .execute();
    }
    await appendEvents(
      trx,
      now,
      changed.map((id) => ({
        actor,
        kind: 'asset.priority_changed',
        subjectType: 'asset',
        subjectId: id,
        data: { from: current.get(id), to: latest.get(id) },
      })),
    );
    return changed.length;
  });
}

export interface PolicyResult {
  raised: number;
  lowered: number;
  jittered: number;
}

/**
 * One pass of PRIORITY_POLICY. `aging`: a pending asset nobody holds rises by one after waiting
 * `agingMs` since its last change, a rescued one sinks by one; `jitter`: the seeds' random ±1;
 * `none`: nothing. Always within 1–10. Bulk changes are summarised in one event per pass.
 */
export async function applyPriorityPolicy(db: Db, dialect: Dialect, options: { policy: PriorityPolicy; agingMs: number }, now: number): Promise<PolicyResult> {
  const result: PolicyResult = { raised: 0, lowered: 0, jittered: 0 };
  if (options.policy === 'none') return result;
  await db.transaction().execute(async (trx) => {
    if (options.policy === 'jitter') {
      const rows = await trx.updateTable('assets').set({ priority: dialect.jitteredPriority, priority_changed_at: now }).executeTakeFirst();
      result.jittered = Number(rows.numUpdatedRows);
    } else {
      const due = now - options.agingMs;
      const raised = await trx
        .updateTable('assets')
        .set((eb) => ({ priority: eb('priority', '+', 1), priority_changed_at: now }))
        .where('state', '=', 'pending')
        .where('holders', '=', 0)
        .where('priority', '<', 10)
        .where('priority_changed_at', '<=', due)
        .executeTakeFirst();
      const lowered = await trx
        .updateTable('assets')
        .set((eb) => ({ priority: eb('priority', '-', 1), priority_changed_at: now }))
        .where('state', '=', 'rescued')
        .where('priority', '>', 1)
        .where('priority_changed_at', '<=', due)
        .executeTakeFirst();
      result.raised = Number(raised.numUpdatedRows);
      result.lowered = Number(lowered.numUpdatedRows);
    }
    if (result.raised + result.lowered + result.jittered > 0) {
      await appendEvents(trx, now, [
        { actor: 'system', kind: 'asset.priorities_adjusted', subjectType: 'policy', subjectId: options.policy, data: { ...result } },
      ]);
    }
  });
  return result;
}
