import { sql } from 'kysely';
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
import { countVerdict, findAuditedCopy, nextAuditAt, openAudit, type AuditedCopy } from './audits.repository.js';
import type { AuditRow, AuditVerdict } from './audits.table.js';
import type { CopyProof } from '../allocations/allocations.table.js';
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
  const outcome = await db.transaction().execute(async (trx) => {
    await lockAsset(trx, audit.asset_id);
    const ended = await endClaim(trx, openAudit, { id: audit.id }, judgement.verdict, { ended_at: now, detail: judgement.detail });
    if (ended.length === 0) return undefined;
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
    const vetted = await renewScore(trx, deps, nodeId, judgement.verdict, events, now);
    await appendEvents(trx, now, events);
    return { ended: true, vetted };
  });
  if (!outcome) return false;
  // Each asset of the newly vetted node is recounted under its own lock, after this one is released.
  if (outcome.vetted) await countVettedCopies(db, Number(audit.node_id), now);
  return true;
}

async function applySpotCheck(trx: Db, deps: ProofDeps, copy: AuditedCopy, judgement: Judgement, events: NewEvent[], now: number): Promise<void> {
  if (judgement.verdict !== 'passed') {
    await loseAudited(trx, deps, copy, 'spot_check_failed', judgement.detail, now);
    return;
  }
  // A new node's proven copy counts once the node is vetted (countVettedCopies).
  const node = await trx.selectFrom('nodes').select('vetted_at').where('id', '=', copy.nodeId).executeTakeFirst();
  const waits = deps.vettingAudits > 0 && (node?.vetted_at ?? null) === null;
  await trx
    .updateTable('allocations')
    .set({ proof: waits ? 'vetting' : 'proven', proven_at: now, proved_at: now, next_audit_at: nextAuditAt(now, deps.auditIntervalMs, deps.random) })
    .where('id', '=', copy.allocationId)
    .where('proof', '=', 'pending')
    .execute();
  events.push({
    actor: 'system',
    kind: 'copy.proven',
    subjectType: 'allocation',
    subjectId: copy.allocationId,
    data: { asset_id: copy.assetId, node_id: copy.nodeId, by: 'spot_check', ...(waits ? { counts: 'once its node is vetted' } : {}) },
  });
  await settleProofs(trx, copy.assetId, deps.vettingAudits > 0, now, events);
}

async function applyRetention(trx: Db, deps: ProofDeps, copy: AuditedCopy, judgement: Judgement, events: NewEvent[], now: number): Promise<void> {
  if (judgement.verdict === 'passed') {
    await trx
      .updateTable('allocations')
      .set({ proof: keepVetting('proven'), audit_failures: 0, proved_at: now, next_audit_at: nextAuditAt(now, deps.auditIntervalMs, deps.random) })
      .where('id', '=', copy.allocationId)
      .execute();
    return;
  }
  const row = await trx
    .updateTable('allocations')
    .set((eb) => ({ proof: keepVetting('suspect'), audit_failures: eb('audit_failures', '+', 1), next_audit_at: now + deps.auditDeadlineMs }))
    .where('id', '=', copy.allocationId)
    .returning('audit_failures')
    .executeTakeFirstOrThrow();
  if (judgement.gone || Number(row.audit_failures) >= deps.auditFailuresToLose) {
    await loseAudited(trx, deps, copy, 'audit_failed', judgement.detail, now);
  }
}

/** A retention audit's new proof state, except for a copy waiting for its node's vetting: that one still waits. */
function keepVetting(proof: 'proven' | 'suspect') {
  return sql<CopyProof>`case when proof = 'vetting' then 'vetting' else ${proof} end`;
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
export async function settleProofs(trx: Db, assetId: string, vetting: boolean, now: number, events: NewEvent[]): Promise<void> {
  const asset = await trx.selectFrom('assets').select(['state', 'sha256']).where('id', '=', assetId).executeTakeFirstOrThrow();
  await promoteAgreeing(trx, assetId, vetting, now, events);
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
async function promoteAgreeing(trx: Db, assetId: string, vetting: boolean, now: number, events: NewEvent[]): Promise<void> {
  const asset = await trx.selectFrom('assets').select(['replicas_target', 'merkle_root']).where('id', '=', assetId).executeTakeFirstOrThrow();
  const copies = await trx
    .selectFrom('allocations')
    .innerJoin('nodes', 'nodes.id', 'allocations.node_id')
    .select(['allocations.id', 'allocations.node_id', 'allocations.operator_id', 'allocations.sha256', 'allocations.merkle_root', 'allocations.proof'])
    .where('allocations.asset_id', '=', assetId)
    .where('allocations.state', '=', 'completed')
    .where('allocations.proof', 'in', [...COUNTABLE_PROOFS, 'unproven'])
    .where('allocations.merkle_root', 'is not', null)
    // A new node neither agrees nor is agreed with until it is vetted.
    .$if(vetting, (query) => query.where('nodes.vetted_at', 'is not', null))
    .orderBy('allocations.id')
    .execute();
  const groups = new Map<string, typeof copies>();
  for (const copy of copies) {
    const key = `${copy.sha256}/${copy.merkle_root}`;
    groups.set(key, [...(groups.get(key) ?? []), copy]);
  }
  let room = Number(asset.replicas_target) - (await placesHeld(trx, assetId));
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

/** What invariant 1 bounds: active claims, counted copies, and copies waiting for their spot check. */
async function placesHeld(trx: Db, assetId: string): Promise<number> {
  const held = await trx
    .selectFrom('allocations')
    .select((eb) => eb.fn.countAll<number>().as('count'))
    .where('asset_id', '=', assetId)
    .where((eb) => eb.or([eb('state', '=', 'active'), eb.and([eb('state', '=', 'completed'), eb.or([eb('verified', '=', 1), eb('proof', '=', 'pending')])])]))
    .executeTakeFirstOrThrow();
  return Number(held.count);
}

/**
 * A node just vetted: each of its copies that waited counts now, one asset at a time under its lock,
 * where the target leaves room (invariant 1; a copy past it is kept, not counted).
 */
async function countVettedCopies(db: Db, nodeId: number, now: number): Promise<void> {
  const waiting = await db
    .selectFrom('allocations')
    .select(['id', 'asset_id'])
    .where('node_id', '=', nodeId)
    .where('state', '=', 'completed')
    .where('proof', '=', 'vetting')
    .execute();
  for (const copy of waiting) {
    await db.transaction().execute(async (trx) => {
      await lockAsset(trx, copy.asset_id);
      const asset = await trx.selectFrom('assets').select('replicas_target').where('id', '=', copy.asset_id).executeTakeFirstOrThrow();
      if ((await placesHeld(trx, copy.asset_id)) >= Number(asset.replicas_target)) return;
      const moved = await trx
        .updateTable('allocations')
        .set({ proof: 'proven' })
        .where('id', '=', copy.id)
        .where('proof', '=', 'vetting')
        .returning('id')
        .executeTakeFirst();
      if (!moved) return;
      const events: NewEvent[] = [
        {
          actor: 'system',
          kind: 'copy.counted',
          subjectType: 'allocation',
          subjectId: copy.id,
          data: { asset_id: copy.asset_id, node_id: nodeId, by: 'vetting' },
        },
      ];
      await settleProofs(trx, copy.asset_id, true, now, events);
      await appendEvents(trx, now, events);
    });
  }
}

/**
 * Counts the verdict in the node's score (verdicts older than the window drop out when the proof
 * pass recounts it, at least hourly); the verdict that takes it below the minimum tells admins.
 */
async function renewScore(trx: Db, deps: ProofDeps, nodeId: number, verdict: AuditVerdict, events: NewEvent[], now: number): Promise<boolean> {
  const passed = verdict === 'passed';
  const after = await countVerdict(trx, nodeId, passed);
  if (!after) return false;
  // The same row a moment earlier: the verdict is all the UPDATE changed.
  const before = { passed: after.passed - (passed ? 1 : 0), failed: after.failed - (passed ? 0 : 1) };
  const wasBelow = belowAuditScore(before, deps.auditScoreMin);
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
  // Vetted: enough audits passed, and a score a node may work with.
  if (deps.vettingAudits <= 0 || after.vettedAt !== null || after.passed < deps.vettingAudits || belowAuditScore(after, deps.auditScoreMin)) return false;
  await trx.updateTable('nodes').set({ vetted_at: now }).where('id', '=', nodeId).where('vetted_at', 'is', null).execute();
  events.push({
    actor: 'system',
    kind: 'node.vetted',
    subjectType: 'node',
    subjectId: nodeId,
    data: { audits_passed: after.passed, audits_failed: after.failed },
  });
  return true;
}

export async function lockAsset(trx: Db, assetId: string): Promise<void> {
  await trx
    .updateTable('assets')
    .set((eb) => ({ holders: eb.ref('holders') }))
    .where('id', '=', assetId)
    .execute();
}
