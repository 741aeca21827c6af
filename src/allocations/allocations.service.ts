import { sql } from 'kysely';
import type { AssetState } from '../assets/assets.table.js';
import type { Db } from '../db/database.js';
import { AppError } from '../errors.js';
import { appendEvents, type NewEvent } from '../events/events.repository.js';
import { addStrikes } from '../nodes/liveness.service.js';
import { pauseSourceHost } from '../sources/sources.repository.js';
import { endAllocations, type CopyCounts } from './end-allocations.js';
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
    if (cause === 'source_gone') await recordSourceGone(trx, input.assetId, reason as string, options.goneConfirmations, input.actor, now);
  });
}

interface ChargedFailure {
  assetId: string;
  nodeId: number;
  reason: string | null;
  verdict: Verdict;
  sourceHost: string | null;
  retryAfterSeconds?: number;
}

/** The consequences of a failed allocation that judgeFailure decided, in the caller's transaction. */
async function chargeFailure(trx: Db, failure: ChargedFailure, policy: FailurePolicy, actor: string, now: number): Promise<void> {
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

/**
 * Counts the distinct nodes that found the source answering 404/410; once enough agree, the asset
 * is `gone` (no copy anywhere) or `unreachable` (copies exist, no more can be made) and is no
 * longer handed out. One node alone cannot take an asset out of the rescue.
 */
async function recordSourceGone(trx: Db, assetId: string, reason: string, confirmations: number, actor: string, now: number): Promise<void> {
  const { nodes } = await trx
    .selectFrom('allocations')
    .select(sql<number>`count(distinct node_id)`.as('nodes'))
    .where('asset_id', '=', assetId)
    .where('end_reason', 'like', 'source_gone:%')
    .executeTakeFirstOrThrow();
  const confirmed = Number(nodes) >= confirmations;
  const asset = await trx
    .updateTable('assets')
    .set((eb) => ({
      source_errors: Number(nodes),
      source_error: reason,
      source_error_at: now,
      ...(confirmed ? { state: eb.case().when('copies', '>', 0).then(sql.lit<AssetState>('unreachable')).else(sql.lit<AssetState>('gone')).end() } : {}),
    }))
    .where('id', '=', assetId)
    .where('state', '=', 'pending')
    .returning(['state'])
    .executeTakeFirst();
  if (confirmed && asset) {
    await appendEvents(trx, now, [{ actor, kind: `asset.${asset.state}`, subjectType: 'asset', subjectId: assetId, data: { reason, nodes: Number(nodes) } }]);
  }
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
  /** Whether this copy counts (false while its checksum is disputed). */
  verified: boolean;
}

/**
 * Records a node's finished copy. Against an expected checksum or size, a mismatch fails the
 * allocation at once. Without one, copies are compared among themselves (quorum): a copy counts
 * only when every reported copy agrees, or when a majority of at least two agrees, in which case
 * the dissenters are marked bad. Until then the disputed copies do not count, so more are made.
 */
export async function completeAllocation(db: Db, report: CompletionReport, policy: FailurePolicy, now: number): Promise<CompletionResult> {
  const outcome = await db.transaction().execute(async (trx) => {
    // A no-op UPDATE to read the asset: on PostgreSQL it locks the row, so completions of one asset
    // run one after another and each counts the copies of those before it; otherwise two at once
    // would each count only their own (concurrency.test.ts: "concurrent completions and releases
    // keep holders and copies exact").
    const asset = await trx
      .updateTable('assets')
      .set((eb) => ({ holders: eb.ref('holders') }))
      .where('id', '=', report.assetId)
      .returning(['sha256', 'size_bytes', 'replicas_target', 'copies', 'state', 'source_host'])
      .executeTakeFirst();
    if (!asset) throw new AppError('ASSET_NOT_FOUND', `No asset has id "${report.assetId}".`);
    const mismatch = findMismatch(asset, report);
    if (mismatch) {
      const { ended } = await endAllocations(
        trx,
        report,
        {
          state: 'failed',
          reason: mismatch.reason,
          actor: report.actor,
          copy: report,
          event: () => ({
            kind: 'allocation.failed',
            data: { asset_id: report.assetId, node_id: report.nodeId, reason: mismatch.reason, sha256: report.sha256, bytes: report.bytes },
          }),
        },
        now,
      );
      if (ended.length === 0) return notHeld(trx, report);
      const verdict = judgeFailure(mismatch.reason, asset);
      await chargeFailure(
        trx,
        { assetId: report.assetId, nodeId: report.nodeId, reason: mismatch.reason, verdict, sourceHost: asset.source_host },
        policy,
        report.actor,
        now,
      );
      return { error: mismatch.error };
    }
    const { counts, settled: quorum } = await endAllocations(
      trx,
      report,
      {
        state: 'completed',
        reason: null,
        actor: report.actor,
        copy: report,
        settle: () => settleQuorum(trx, report.assetId, asset.sha256 !== null, now),
        event: () => ({
          kind: 'allocation.completed',
          data: { asset_id: report.assetId, node_id: report.nodeId, sha256: report.sha256, bytes: report.bytes, uri: report.uri },
        }),
        consequences: ({ counts, settled }) => quorumEvents(report, asset.state, settled, counts.get(report.assetId) as CopyCounts),
      },
      now,
    );
    // Nothing ended (so nothing was settled): the node held no active allocation of the asset.
    if (!quorum) return notHeld(trx, report);
    const updated = counts.get(report.assetId) as CopyCounts;
    const verified = !quorum.disputed && !quorum.dissenters.some((dissenter) => dissenter.nodeId === report.nodeId);
    if (verified) await addStrikes(trx, [report.nodeId], -1);
    await addStrikes(
      trx,
      quorum.dissenters.map((dissenter) => dissenter.nodeId),
      1,
    );
    return { result: { assetState: updated.state, copies: updated.copies, replicasTarget: updated.replicas_target, verified } };
  });
  // The failed allocation is committed first; only then is the mismatch reported to the node.
  if ('error' in outcome) throw outcome.error;
  return outcome.result;
}

/** What a completion did to its asset: a checksum dispute, its resolution's bad copies, the asset rescued. */
function quorumEvents(report: CompletionReport, stateBefore: AssetState, quorum: QuorumVerdict, updated: CopyCounts): NewEvent[] {
  return [
    ...(quorum.groups.length > 1
      ? [
          {
            actor: 'system',
            kind: 'asset.checksum_mismatch',
            subjectType: 'asset',
            subjectId: report.assetId,
            data: { groups: quorum.groups, resolved: !quorum.disputed },
          },
        ]
      : []),
    ...quorum.dissenters.map((dissenter) => ({
      actor: 'system',
      kind: 'allocation.copy_bad',
      subjectType: 'allocation',
      subjectId: dissenter.id,
      data: { asset_id: report.assetId, node_id: dissenter.nodeId, sha256: dissenter.sha256 },
    })),
    ...(updated.state === 'rescued' && stateBefore !== 'rescued'
      ? [{ actor: report.actor, kind: 'asset.rescued', subjectType: 'asset', subjectId: report.assetId, data: { copies: updated.copies } }]
      : []),
  ];
}

interface QuorumVerdict {
  /** Copies disagree and no majority of at least two settles it yet. */
  disputed: boolean;
  groups: { sha256: string; copies: number }[];
  dissenters: { id: number; nodeId: number; sha256: string }[];
}

async function settleQuorum(trx: Db, assetId: string, expectedKnown: boolean, now: number): Promise<QuorumVerdict> {
  const copies = await trx
    .selectFrom('allocations')
    .select(['id', 'node_id', 'sha256'])
    .where('asset_id', '=', assetId)
    .where('state', '=', 'completed')
    .execute();
  const counts = new Map<string, number>();
  for (const copy of copies) counts.set(copy.sha256 as string, (counts.get(copy.sha256 as string) ?? 0) + 1);
  const groups = [...counts].map(([sha256, count]) => ({ sha256, copies: count })).sort((a, b) => b.copies - a.copies);
  const winner = expectedKnown || groups.length === 1 ? groups[0] : groups.find((group) => group.copies >= 2 && group.copies * 2 > copies.length);
  if (!winner) {
    await trx.updateTable('allocations').set({ verified: 0 }).where('asset_id', '=', assetId).where('state', '=', 'completed').execute();
    return { disputed: true, groups, dissenters: [] };
  }
  const dissenters = copies
    .filter((copy) => copy.sha256 !== winner.sha256)
    .map((copy) => ({ id: copy.id, nodeId: copy.node_id, sha256: copy.sha256 as string }));
  await trx
    .updateTable('allocations')
    .set({ verified: 1 })
    .where('asset_id', '=', assetId)
    .where('state', '=', 'completed')
    .where('sha256', '=', winner.sha256)
    .execute();
  if (dissenters.length > 0) {
    await trx
      .updateTable('allocations')
      .set({ state: 'failed', verified: 0, end_reason: 'checksum_dissent', ended_at: now })
      .where(
        'id',
        'in',
        dissenters.map((dissenter) => dissenter.id),
      )
      .execute();
    // The agreed checksum becomes the expected one: later copies are checked against it directly.
    await trx.updateTable('assets').set({ sha256: winner.sha256 }).where('id', '=', assetId).where('sha256', 'is', null).execute();
  }
  return { disputed: false, groups, dissenters };
}

function findMismatch(
  asset: { sha256: string | null; size_bytes: number | null },
  report: CompletionReport,
): { reason: 'checksum_mismatch' | 'size_mismatch'; error: AppError } | undefined {
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
            eb.selectFrom('allocations').select('id').where('state', '=', 'active').where('expires_at', '<=', now).orderBy('expires_at').limit(EXPIRY_BATCH),
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
