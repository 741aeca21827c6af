import { sql } from 'kysely';
import type { AssetState } from '../assets/assets.table.js';
import type { Db } from '../db/database.js';
import { AppError } from '../errors.js';
import { appendEvents } from '../events/events.repository.js';
import { addStrikes } from '../nodes/liveness.service.js';
import { PEERS_HOST } from '../sources/source-host.js';
import { pauseSourceHost } from '../sources/sources.repository.js';
import { endAllocations } from './end-allocations.js';
import { operatorKeySql } from './operator-key.js';
import { causeOf, judgeFailure, MISMATCH_REASONS, pauseFor, type FailurePolicy, type ReleaseCause, type Verdict } from './failure-policy.js';
import { recordCooldowns } from './retry-cooldowns.repository.js';

export interface ReleaseInput {
  assetId: string;
  nodeId: number;
  reason: string | null;
  sourceStatus?: number;
  cause?: ReleaseCause;
  /** The source's Retry-After, when it answered 429 or 503. */
  retryAfterSeconds?: number;
  actor: string;
}

export interface ReleaseOptions extends FailurePolicy {
  goneConfirmations: number;
}

/**
 * Ends a node's active allocation of an asset by its choice; holders goes down by one. What the
 * failure costs follows from its cause (judgeFailure): a strike and a `failed` allocation for the
 * node's own fault, a cooldown of the pair, a fleet-wide pause of a busy source's host.
 */
export async function releaseAllocation(db: Db, input: ReleaseInput, options: ReleaseOptions, now: number): Promise<void> {
  const cause = causeOf(input.cause, input.sourceStatus);
  const detail = cause === 'source_gone' ? [input.sourceStatus, input.reason].filter((part) => part !== undefined && part !== null).join(' ') : input.reason;
  const reason = cause === 'other' ? input.reason : detail ? `${cause}: ${detail}` : cause;
  await db.transaction().execute(async (trx) => {
    const asset = await trx.selectFrom('assets').select(['size_bytes', 'sha256', 'source_host']).where('id', '=', input.assetId).executeTakeFirst();
    const verdict = judgeFailure(cause, asset ?? { size_bytes: null, sha256: null });
    const { ended } = await endAllocations(
      trx,
      input,
      {
        state: verdict.strike ? 'failed' : 'released',
        reason,
        actor: input.actor,
        event: () => ({
          kind: verdict.strike ? 'allocation.failed' : 'allocation.released',
          data: { asset_id: input.assetId, node_id: input.nodeId, cause, reason, source_status: input.sourceStatus ?? null },
        }),
      },
      now,
    );
    if (ended.length === 0) throw new AppError('NOT_ALLOCATED', `Node ${input.nodeId} holds no active allocation of asset "${input.assetId}".`);
    await chargeFailure(
      trx,
      { assetId: input.assetId, nodeId: input.nodeId, reason, verdict, sourceHost: asset?.source_host ?? null, retryAfterSeconds: input.retryAfterSeconds },
      options,
      input.actor,
      now,
    );
    // What the source last did, for whoever looks at the asset (the count stays that of 404/410s).
    if (cause === 'source_unreachable' || cause === 'source_error' || cause === 'source_busy') {
      await trx.updateTable('assets').set({ source_error: reason, source_error_at: now }).where('id', '=', input.assetId).execute();
    }
    if ((SOURCE_FAILURES as readonly string[]).includes(cause)) {
      await recordSourceFailure(trx, input.assetId, cause, reason as string, options.goneConfirmations, input.actor, now);
    }
  });
}

export interface ChargedFailure {
  assetId: string;
  nodeId: number;
  reason: string | null;
  verdict: Verdict;
  sourceHost: string | null;
  retryAfterSeconds?: number;
}

/** The consequences of a failed allocation that judgeFailure decided, in the caller's transaction. */
export async function chargeFailure(trx: Db, failure: ChargedFailure, policy: FailurePolicy, actor: string, now: number): Promise<void> {
  const { verdict } = failure;
  if (verdict.strike) await addStrikes(trx, [failure.nodeId], 1);
  if (verdict.cooldown) await recordCooldowns(trx, [failure], policy, now);
  if (verdict.pauseHost && failure.sourceHost !== null) {
    const until = now + pauseFor(failure.retryAfterSeconds, policy);
    await pauseSourceHost(trx, failure.sourceHost, until, failure.reason ?? 'source busy', now);
    await appendEvents(trx, now, [
      {
        actor,
        kind: 'source.paused',
        subjectType: 'source_host',
        subjectId: failure.sourceHost,
        data: { until, asset_id: failure.assetId, node_id: failure.nodeId, reason: failure.reason },
      },
    ]);
  }
  if (verdict.mismatch) await recordMismatch(trx, failure.assetId, policy.mismatchConfirmations, now);
}

/**
 * Once distinct nodes enough found the catalogued size or checksum wrong, the fault is the
 * catalog's: the asset is `suspect` and no longer handed out (until an admin or a re-import with
 * other values resolves it), and the strikes those nodes got for it are taken back.
 */
async function recordMismatch(trx: Db, assetId: string, confirmations: number, now: number): Promise<void> {
  const rows = await trx
    .selectFrom('allocations')
    .innerJoin('assets', 'assets.id', 'allocations.asset_id')
    .select('allocations.node_id')
    .distinct()
    .where('allocations.asset_id', '=', assetId)
    .where('allocations.state', '=', 'failed')
    .whereRef('allocations.ended_at', '>=', 'assets.mismatches_since')
    .where((eb) => eb.or(MISMATCH_REASONS.map((prefix) => eb('allocations.end_reason', 'like', `${prefix}%`))))
    .execute();
  if (rows.length < confirmations) return;
  const suspect = await trx
    .updateTable('assets')
    .set({ state: 'suspect' })
    .where('id', '=', assetId)
    .where('state', '=', 'pending')
    .returning(['size_bytes', 'sha256'])
    .executeTakeFirst();
  if (!suspect) return;
  const nodes = rows.map((row) => row.node_id);
  await addStrikes(trx, nodes, -1);
  await appendEvents(trx, now, [
    {
      actor: 'system',
      kind: 'asset.suspect',
      subjectType: 'asset',
      subjectId: assetId,
      data: { nodes, size_bytes: suspect.size_bytes, sha256: suspect.sha256 },
    },
  ]);
}

const SOURCE_FAILURES = ['source_gone', 'source_unreachable', 'source_error'] as const;

/**
 * Counts the distinct nodes that found the source failing. Once enough found it answering 404/410,
 * the asset is `gone` when no copy exists; with copies left, enough nodes finding it failing in any
 * way (404/410, no answer, 5xx) keep it in the rescue: its source host becomes PEERS_HOST, so new
 * copies are made from the copies left through the control plane (repair from peers), under the
 * per-host cap. One node alone cannot take an asset's source away.
 */
async function recordSourceFailure(
  trx: Db,
  assetId: string,
  cause: ReleaseCause,
  reason: string,
  confirmations: number,
  actor: string,
  now: number,
): Promise<void> {
  // Nodes of one operator confirm once (operator-key.ts).
  const distinctNodes = async (causes: readonly string[]) => {
    const { nodes } = await trx
      .selectFrom('allocations')
      .select(sql<number>`count(distinct ${operatorKeySql})`.as('nodes'))
      .where('asset_id', '=', assetId)
      .where((eb) => eb.or(causes.map((prefix) => eb('end_reason', 'like', `${prefix}:%`))))
      .executeTakeFirstOrThrow();
    return Number(nodes);
  };
  const gone = await distinctNodes(['source_gone']);
  const failing = await distinctNodes(SOURCE_FAILURES);
  const confirmedGone = cause === 'source_gone' && gone >= confirmations;
  const repair = failing >= confirmations;
  if (cause !== 'source_gone' && !repair) return;
  const asset = await trx
    .updateTable('assets')
    .set((eb) => ({
      ...(cause === 'source_gone' ? { source_errors: gone, source_error: reason, source_error_at: now } : {}),
      ...(confirmedGone ? { state: eb.case().when('copies', '>', 0).then(eb.ref('state')).else(sql.lit<AssetState>('gone')).end() } : {}),
      ...(repair ? { source_host: eb.case().when('copies', '>', 0).then(sql.lit(PEERS_HOST)).else(eb.ref('source_host')).end() } : {}),
    }))
    .where('id', '=', assetId)
    .where('state', '=', 'pending')
    .where((eb) => eb.or([eb('source_host', 'is', null), eb('source_host', '!=', PEERS_HOST)]))
    .returning(['state', 'copies', 'source_host'])
    .executeTakeFirst();
  if (!asset) return;
  if (asset.state === 'gone' && confirmedGone) {
    await appendEvents(trx, now, [{ actor, kind: 'asset.gone', subjectType: 'asset', subjectId: assetId, data: { reason, nodes: gone } }]);
  } else if (asset.source_host === PEERS_HOST) {
    const data = { reason, nodes: failing, repair: 'from_copies', copies: asset.copies };
    await appendEvents(trx, now, [{ actor, kind: 'asset.source_gone', subjectType: 'asset', subjectId: assetId, data }]);
  }
}

const EXPIRY_BATCH = 5000;

/** Expires every active allocation past its lease, in batches; each batch is one transaction. */
export async function expireDueAllocations(db: Db, policy: Pick<FailurePolicy, 'cooldownMs' | 'cooldownMaxMs'>, now: number): Promise<number> {
  let total = 0;
  for (;;) {
    const expired = await db.transaction().execute(async (trx) => {
      const { ended: rows } = await endAllocations(
        trx,
        {
          pickedBy: (eb) =>
            // A literal state: SQLite's planner takes the partial index allocations_active_by_expiry only then.
            eb
              .selectFrom('allocations')
              .select('id')
              .where('state', '=', sql.lit('active'))
              .where('expires_at', '<=', now)
              .orderBy('expires_at')
              .limit(EXPIRY_BATCH),
        },
        {
          state: 'expired',
          reason: 'lease expired',
          actor: 'system',
          event: (row) => ({ kind: 'allocation.expired', data: { asset_id: row.asset_id, node_id: row.node_id, expires_at: row.expires_at } }),
        },
        now,
      );
      // One strike per node per pass: a node that lets work lapse is given less; and it does not
      // get the same asset straight back to let it lapse again.
      await addStrikes(
        trx,
        rows.map((row) => row.node_id),
        1,
      );
      await recordCooldowns(
        trx,
        rows.map((row) => ({ nodeId: row.node_id, assetId: row.asset_id, reason: 'lease expired' })),
        policy,
        now,
      );
      return rows.length;
    });
    total += expired;
    if (expired < EXPIRY_BATCH) return total;
  }
}
