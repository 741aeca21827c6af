import type { AssetState } from '../assets/assets.table.js';
import type { Db } from '../db/database.js';
import { AppError } from '../errors.js';
import type { NewEvent } from '../events/events.repository.js';
import { addStrikes } from '../nodes/liveness.service.js';
import { chargeFailure } from './allocations.service.js';
import { endAllocations, type CopyCounts } from './end-allocations.js';
import { judgeFailure, type FailurePolicy, type Verdict } from './failure-policy.js';
import { COUNTABLE_PROOFS, type CopyProof } from './allocations.table.js';
import { operatorKeyOf } from './operator-key.js';
import { queueSpotChecks } from '../audits/audits.repository.js';

export interface CompletionReport {
  assetId: string;
  nodeId: number;
  sha256: string;
  bytes: number;
  uri: string | null;
  /** The copy's Merkle root as its holder computed it; null from clients that compute none. */
  merkleRoot?: string | null;
  actor: string;
}

/** How completions are judged: the failure rules, and how many spot checks a copy needs before it counts. */
export interface CompletionPolicy extends FailurePolicy {
  /** VERIFY_SPOT_CHECKS: 0 counts a copy on its reported checksum alone. */
  spotChecks?: number;
  /** VETTING_AUDITS: the copies of a node that has not passed them wait for its vetting (0: none waits). */
  vettingAudits?: number;
  /** MAX_PLAUSIBLE_RATE_MB_S in bytes per second: a faster completion is refused with a strike (0 or none: no limit). */
  maxPlausibleRateBps?: number;
}

/** The shortest time a download is taken to last: a small file done within a second is plausible at any rate. */
const MIN_PLAUSIBLE_MS = 1000;

export interface CompletionResult {
  assetState: string;
  copies: number;
  replicasTarget: number;
  /** Whether this copy counts (false while its checksum is disputed or its proof is pending). */
  verified: boolean;
  /** What is proven of the copy: `pending` until its spot check, `proven` once it counts. */
  proof: CopyProof;
}

/**
 * Records a node's finished copy. Against an expected checksum, size or agreed Merkle root, a
 * mismatch fails the allocation at once. With spot checks on, the copy is `pending` and a spot
 * check is queued: it counts only once it passed (audits/proof.service.ts). A proven copy is
 * compared with the other proven copies (quorum): it counts only when every one agrees, or when
 * a majority of at least two agrees, in which case the dissenters are marked bad. Until then the
 * disputed copies do not count, so more are made.
 */
export async function completeAllocation(db: Db, report: CompletionReport, policy: CompletionPolicy, now: number): Promise<CompletionResult> {
  const outcome = await db.transaction().execute(async (trx) => {
    // A no-op UPDATE to read the asset: on PostgreSQL it locks the row, so completions of one asset
    // run one after another and each counts the copies of those before it; otherwise two at once
    // would each count only their own (concurrency.test.ts: "concurrent completions and releases
    // keep holders and copies exact").
    const asset = await trx
      .updateTable('assets')
      .set((eb) => ({ holders: eb.ref('holders') }))
      .where('id', '=', report.assetId)
      .returning(['sha256', 'merkle_root', 'size_bytes', 'replicas_target', 'copies', 'state', 'source_host'])
      .executeTakeFirst();
    if (!asset) throw new AppError('ASSET_NOT_FOUND', `No asset has id "${report.assetId}".`);
    const holder = await readHolder(trx, report);
    const proof: CopyProof =
      (policy.spotChecks ?? 0) > 0 && report.bytes > 0 ? 'pending' : (policy.vettingAudits ?? 0) > 0 && holder.vettedAt === null ? 'vetting' : 'proven';
    const mismatch = findMismatch(asset, report) ?? findImplausible(report, holder.firstGrantedAt, policy.maxPlausibleRateBps ?? 0, now);
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
      // Bytes faster than any link carries them were never downloaded: the node's own fault.
      const verdict = mismatch.reason === 'implausible_rate' ? IMPLAUSIBLE : judgeFailure(mismatch.reason, asset);
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
        copy: { ...report, merkleRoot: report.merkleRoot ?? null, proof },
        settle: async (ended) => {
          if (proof === 'pending') await queueSpotChecks(trx, ended, now);
          return settleQuorum(trx, report.assetId, asset.sha256 !== null, now);
        },
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
    const agreed = !quorum.disputed && !quorum.dissenters.some((dissenter) => dissenter.nodeId === report.nodeId);
    const verified = agreed && proof === 'proven';
    if (verified) await addStrikes(trx, [report.nodeId], -1);
    await addStrikes(
      trx,
      quorum.dissenters.map((dissenter) => dissenter.nodeId),
      1,
    );
    return { result: { assetState: updated.state, copies: updated.copies, replicasTarget: updated.replicas_target, verified, proof } };
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

export interface QuorumVerdict {
  /** Copies disagree and no majority of at least two settles it yet. */
  disputed: boolean;
  groups: { sha256: string; copies: number }[];
  dissenters: { id: number; nodeId: number; sha256: string }[];
}

/**
 * Compares the asset's proven copies (a copy waiting for its proof takes no part yet) and marks
 * those of the agreed checksum counted, the dissenters bad. Run under the asset's row lock.
 */
export async function settleQuorum(trx: Db, assetId: string, expectedKnown: boolean, now: number): Promise<QuorumVerdict> {
  const copies = await trx
    .selectFrom('allocations')
    .select(['id', 'node_id', 'operator_id', 'sha256'])
    .where('asset_id', '=', assetId)
    .where('state', '=', 'completed')
    .where('proof', 'in', COUNTABLE_PROOFS)
    .execute();
  if (copies.length === 0) return { disputed: false, groups: [], dissenters: [] };
  // Copies vote once per operator (operator-key.ts): one person's nodes settle nothing together.
  const voters = new Map<string, Set<number>>();
  for (const copy of copies) voters.set(copy.sha256 as string, (voters.get(copy.sha256 as string) ?? new Set()).add(operatorKeyOf(copy)));
  const groups = [...voters].map(([sha256, keys]) => ({ sha256, copies: keys.size })).sort((a, b) => b.copies - a.copies);
  const total = new Set(copies.map(operatorKeyOf)).size;
  const winner = expectedKnown || groups.length === 1 ? groups[0] : groups.find((group) => group.copies >= 2 && group.copies * 2 > total);
  if (!winner) {
    await trx
      .updateTable('allocations')
      .set({ verified: 0 })
      .where('asset_id', '=', assetId)
      .where('state', '=', 'completed')
      .where('proof', 'in', COUNTABLE_PROOFS)
      .execute();
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
    .where('proof', 'in', COUNTABLE_PROOFS)
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

const IMPLAUSIBLE: Verdict = { strike: true, cooldown: true, mismatch: false, pauseHost: false };

/** Whether the holder is vetted, and when it was first given the asset (a resumed download began then). */
async function readHolder(trx: Db, report: CompletionReport): Promise<{ vettedAt: number | null; firstGrantedAt: number | null }> {
  const node = await trx.selectFrom('nodes').select('vetted_at').where('id', '=', report.nodeId).executeTakeFirst();
  const first = await trx
    .selectFrom('allocations')
    .select((eb) => eb.fn.min('created_at').as('first'))
    .where('node_id', '=', report.nodeId)
    .where('asset_id', '=', report.assetId)
    .executeTakeFirst();
  return { vettedAt: node?.vetted_at ?? null, firstGrantedAt: first?.first === null || first?.first === undefined ? null : Number(first.first) };
}

/** A completion faster than MAX_PLAUSIBLE_RATE_MB_S since the node was first given the asset. */
function findImplausible(
  report: CompletionReport,
  firstGrantedAt: number | null,
  maxRateBps: number,
  now: number,
): { reason: 'implausible_rate'; error: AppError } | undefined {
  if (maxRateBps <= 0 || firstGrantedAt === null) return undefined;
  const seconds = Math.max(MIN_PLAUSIBLE_MS, now - firstGrantedAt) / 1000;
  const rate = report.bytes / seconds;
  if (rate <= maxRateBps) return undefined;
  return {
    reason: 'implausible_rate',
    error: new AppError(
      'IMPLAUSIBLE_RATE',
      `${report.bytes} bytes in ${seconds.toFixed(1)} s since the asset was given (${Math.round(rate / 1e6)} MB/s) is faster than MAX_PLAUSIBLE_RATE_MB_S (${maxRateBps / 1e6}); the copy was not counted.`,
    ),
  };
}

function findMismatch(
  asset: { sha256: string | null; merkle_root: string | null; size_bytes: number | null },
  report: CompletionReport,
): { reason: 'checksum_mismatch' | 'size_mismatch'; error: AppError } | undefined {
  if (asset.merkle_root !== null && report.merkleRoot && asset.merkle_root !== report.merkleRoot.toLowerCase()) {
    return {
      reason: 'checksum_mismatch',
      error: new AppError(
        'CHECKSUM_MISMATCH',
        `The reported Merkle root ${report.merkleRoot} differs from the agreed ${asset.merkle_root}; the copy was not counted.`,
      ),
    };
  }
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
