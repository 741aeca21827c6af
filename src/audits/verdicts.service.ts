import { COUNTABLE_PROOFS } from '../allocations/allocations.table.js';
import { settleQuorum } from '../allocations/completion.service.js';
import { loseCopiesIn, type LostCopy } from '../allocations/copy-loss.service.js';
import { refreshCopyCounts } from '../allocations/end-allocations.js';
import { recordCooldowns } from '../allocations/retry-cooldowns.repository.js';
import { operatorKeyOf } from '../allocations/operator-key.js';
import type { Db } from '../db/database.js';
import { endClaim } from '../db/due-work.js';
import { appendEvents, type NewEvent } from '../events/events.repository.js';
import { addStrikes } from '../nodes/liveness.service.js';
import { belowAuditScore } from './audit-score.js';
import { findAuditedCopy, nextAuditAt, openAudit, recountAuditScore, type AuditedCopy } from './audits.repository.js';
import type { AuditRow, AuditVerdict } from './audits.table.js';
import type { ProofDeps } from './proof-deps.js';

/** What an audit's answer decided, and whether the copy is to be taken out of the count at once. */
export interface Judgement {
  verdict: AuditVerdict;
  detail: string;
  /** The holder said the copy is gone: no second chance. */
  gone?: boolean;
}

/**
 * Ends an open audit with its verdict and applies it, in one transaction under the asset's lock:
 * a passed spot check makes the copy count (and fixes the asset's Merkle root if none was agreed);
 * a failed or missed one is a strike and the copy is lost. A passed retention audit clears the
 * copy and sets its next audit time; a failed or missed one makes it `suspect` and is asked again
 * after a deadline, until AUDIT_FAILURES_TO_LOSE in a row lose it. Each verdict renews the node's
 * score. False when the audit had ended already.
 */
export async function applyVerdict(db: Db, deps: ProofDeps, audit: AuditRow, judgement: Judgement, now: number): Promise<boolean> {
  return db.transaction().execute(async (trx) => {
    await lockAsset(trx, audit.asset_id);
    const ended = await endClaim(trx, openAudit, { id: audit.id }, judgement.verdict, { ended_at: now, detail: judgement.detail });
    if (ended.length === 0) return false;
    const copy = await findAuditedCopy(trx, Number(audit.allocation_id));
    const nodeId = Number(audit.node_id);
    const events: NewEvent[] = [];
    if (judgement.verdict !== 'passed') {
      events.push({
        actor: 'system',
        kind: `audit.${judgement.verdict}`,
        subjectType: 'audit',
        subjectId: audit.id,
        data: { asset_id: audit.asset_id, node_id: nodeId, kind: audit.kind, method: audit.method, detail: judgement.detail },
      });
    }
    if (copy && copy.state === 'completed') {
      if (audit.kind === 'spot_check') await applySpotCheck(trx, deps, copy, judgement, events, now);
      else await applyRetention(trx, deps, copy, judgement, events, now);
    }
    await addStrikes(trx, [nodeId], judgement.verdict === 'passed' ? -1 : 1);
    await renewScore(trx, deps, nodeId, events, now);
    await appendEvents(trx, now, events);
    return true;
  });
}

async function applySpotCheck(trx: Db, deps: ProofDeps, copy: AuditedCopy, judgement: Judgement, events: NewEvent[], now: number): Promise<void> {
  if (judgement.verdict !== 'passed') {
    await loseAudited(trx, deps, copy, 'spot_check_failed', judgement.detail, now);
    return;
  }
  await trx
    .updateTable('allocations')
    .set({ proof: 'proven', proven_at: now, proved_at: now, next_audit_at: nextAuditAt(now, deps.auditIntervalMs, deps.random) })
    .where('id', '=', copy.allocationId)
    .where('proof', '=', 'pending')
    .execute();
  events.push({
    actor: 'system',
    kind: 'copy.proven',
    subjectType: 'allocation',
    subjectId: copy.allocationId,
    data: { asset_id: copy.assetId, node_id: copy.nodeId, by: 'spot_check' },
  });
  await settleProofs(trx, copy.assetId, now, events);
}

async function applyRetention(trx: Db, deps: ProofDeps, copy: AuditedCopy, judgement: Judgement, events: NewEvent[], now: number): Promise<void> {
  if (judgement.verdict === 'passed') {
    await trx
      .updateTable('allocations')
      .set({ proof: 'proven', audit_failures: 0, proved_at: now, next_audit_at: nextAuditAt(now, deps.auditIntervalMs, deps.random) })
      .where('id', '=', copy.allocationId)
      .execute();
    return;
  }
  const row = await trx
    .updateTable('allocations')
    .set((eb) => ({ proof: 'suspect', audit_failures: eb('audit_failures', '+', 1), next_audit_at: now + deps.auditDeadlineMs }))
    .where('id', '=', copy.allocationId)
    .returning('audit_failures')
    .executeTakeFirstOrThrow();
  if (judgement.gone || Number(row.audit_failures) >= deps.auditFailuresToLose) {
    await loseAudited(trx, deps, copy, 'audit_failed', judgement.detail, now);
  }
}

/**
 * Takes the copy out of the count, and keeps the asset from its holder for a cooldown (doubling per
 * loss): it is rebuilt on another node first.
 */
async function loseAudited(trx: Db, deps: ProofDeps, copy: AuditedCopy, reason: LostCopy['reason'], detail: string, now: number): Promise<void> {
  await loseCopiesIn(trx, copy.nodeId, [{ assetId: copy.assetId, reason, detail }], 'system', now);
  await recordCooldowns(trx, [{ nodeId: copy.nodeId, assetId: copy.assetId, reason }], deps.cooldown, now);
}

/**
 * After a copy's proof changed: unproven copies count once two holders' copies agree on checksum
 * and Merkle root (or one agrees with a proven copy), the quorum settles the proven copies, and
 * the asset is recounted (it may be rescued now, with its event).
 */
export async function settleProofs(trx: Db, assetId: string, now: number, events: NewEvent[]): Promise<void> {
  const asset = await trx.selectFrom('assets').select(['state', 'sha256']).where('id', '=', assetId).executeTakeFirstOrThrow();
  await promoteAgreeing(trx, assetId, now, events);
  const quorum = await settleQuorum(trx, assetId, asset.sha256 !== null, now);
  for (const dissenter of quorum.dissenters) {
    events.push({
      actor: 'system',
      kind: 'allocation.copy_bad',
      subjectType: 'allocation',
      subjectId: dissenter.id,
      data: { asset_id: assetId, node_id: dissenter.nodeId, sha256: dissenter.sha256 },
    });
  }
  const counts = await refreshCopyCounts(trx, assetId);
  if (counts.state === 'rescued' && asset.state !== 'rescued') {
    events.push({ actor: 'system', kind: 'asset.rescued', subjectType: 'asset', subjectId: assetId, data: { copies: counts.copies } });
  }
}

/**
 * What copies of distinct operators agree on (checksum and Merkle root): unproven copies in such a
 * group count (up to the target: invariant 1 holds, an agreeing copy past it is kept, not counted),
 * and the asset's Merkle root is fixed from the first group of two operators. One copy's root is
 * never agreed alone: a holder with the bytes could report another root, and block audits of every
 * honest copy would then fail against it.
 */
async function promoteAgreeing(trx: Db, assetId: string, now: number, events: NewEvent[]): Promise<void> {
  const asset = await trx.selectFrom('assets').select(['replicas_target', 'merkle_root']).where('id', '=', assetId).executeTakeFirstOrThrow();
  const held = await trx
    .selectFrom('allocations')
    .select((eb) => eb.fn.countAll<number>().as('count'))
    .where('asset_id', '=', assetId)
    .where((eb) => eb.or([eb('state', '=', 'active'), eb.and([eb('state', '=', 'completed'), eb.or([eb('verified', '=', 1), eb('proof', '=', 'pending')])])]))
    .executeTakeFirstOrThrow();
  const copies = await trx
    .selectFrom('allocations')
    .select(['id', 'node_id', 'operator_id', 'sha256', 'merkle_root', 'proof'])
    .where('asset_id', '=', assetId)
    .where('state', '=', 'completed')
    .where('proof', 'in', [...COUNTABLE_PROOFS, 'unproven'])
    .where('merkle_root', 'is not', null)
    .orderBy('id')
    .execute();
  const groups = new Map<string, typeof copies>();
  for (const copy of copies) {
    const key = `${copy.sha256}/${copy.merkle_root}`;
    groups.set(key, [...(groups.get(key) ?? []), copy]);
  }
  let room = Number(asset.replicas_target) - Number(held.count);
  let root = asset.merkle_root;
  for (const group of groups.values()) {
    // Agreement needs two operators (operator-key.ts): one person's nodes agree with themselves.
    if (new Set(group.map(operatorKeyOf)).size < 2) continue;
    const unproven = group.filter((copy) => copy.proof === 'unproven').slice(0, Math.max(0, room));
    room -= unproven.length;
    if (unproven.length > 0) {
      await trx
        .updateTable('allocations')
        .set({ proof: 'proven', proven_at: now })
        .where(
          'id',
          'in',
          unproven.map((copy) => copy.id),
        )
        .execute();
    }
    for (const copy of unproven) {
      events.push({
        actor: 'system',
        kind: 'copy.proven',
        subjectType: 'allocation',
        subjectId: copy.id,
        data: { asset_id: assetId, node_id: copy.node_id, by: 'agreement' },
      });
    }
    if (root === null) {
      root = (group[0] as (typeof copies)[number]).merkle_root as string;
      await trx.updateTable('assets').set({ merkle_root: root }).where('id', '=', assetId).where('merkle_root', 'is', null).execute();
    }
  }
}

/** Recounts the node's score; the verdict that takes it below the minimum tells admins. */
async function renewScore(trx: Db, deps: ProofDeps, nodeId: number, events: NewEvent[], now: number): Promise<void> {
  const before = await trx.selectFrom('nodes').select(['audits_passed', 'audits_failed']).where('id', '=', nodeId).executeTakeFirst();
  const after = await recountAuditScore(trx, nodeId, now - deps.auditScoreWindowMs);
  const wasBelow = before !== undefined && belowAuditScore({ passed: Number(before.audits_passed), failed: Number(before.audits_failed) }, deps.auditScoreMin);
  if (!wasBelow && belowAuditScore(after, deps.auditScoreMin)) {
    events.push({
      actor: 'system',
      kind: 'node.audit_score_low',
      subjectType: 'node',
      subjectId: nodeId,
      data: {
        passed: after.passed,
        failed: after.failed,
        min: deps.auditScoreMin,
        detail: 'the node gets no new work until its score recovers or an admin clears it',
      },
    });
  }
}

export async function lockAsset(trx: Db, assetId: string): Promise<void> {
  await trx
    .updateTable('assets')
    .set((eb) => ({ holders: eb.ref('holders') }))
    .where('id', '=', assetId)
    .execute();
}
