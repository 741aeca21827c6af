import crypto from 'node:crypto';
import { loseCopiesIn } from '../allocations/copy-loss.service.js';
import type { Db } from '../db/database.js';
import type { Dialect } from '../db/dialect.js';
import { claimDue, endClaim, updateHeld } from '../db/due-work.js';
import { appendEvents, type NewEvent } from '../events/events.repository.js';
import { blockCount, nonceHash } from '../lib/merkle.js';
import {
  auditPreparation,
  copiesDueForAudit,
  findAudit,
  findAuditedCopy,
  insertAudits,
  lapsedAuditIds,
  nextAuditAt,
  overdueCopies,
  recountStaleScores,
  scheduleUnscheduledCopies,
  type AuditedCopy,
  type NewAudit,
} from './audits.repository.js';
import type { AuditRow } from './audits.table.js';
import type { ProofDeps } from './proof-deps.js';
import { pickRanges, readSourceRanges } from './source-ranges.js';
import { applyVerdict, lockAsset, settleProofs } from './verdicts.service.js';

/** How long an instance may take to prepare an audit before another takes it over. */
const PREPARE_LEASE_MS = 120_000;
/** Range reads in flight at once in one pass. */
const PREPARE_CONCURRENCY = 8;
/** Node scores recounted per pass: every node at least hourly, for fleets of thousands of nodes. */
const SCORES_PER_PASS = 100;

/**
 * One pass of proofs, under the AUDITS_PER_MINUTE budget of a pass of `passMs`: prepares queued
 * audits (spot checks first: they decide whether new copies count), starts the retention audits
 * that fell due on copies whose holder is online, and takes out of the count copies a whole
 * interval overdue whose holder stayed away.
 */
export async function runProofs(
  db: Db,
  dialect: Dialect,
  deps: ProofDeps,
  passMs: number,
  now: number,
): Promise<{ prepared: number; started: number; overdue: number }> {
  const budget = Math.max(1, Math.floor((deps.auditsPerMinute * passMs) / 60_000));
  const prepared = await prepareQueued(db, dialect, deps, budget, now);
  await scheduleUnscheduledCopies(db, now, deps.auditIntervalMs, 1000, deps.random);
  const started = prepared < budget ? await startRetentionAudits(db, deps, budget - prepared, now) : 0;
  const overdue = await loseOverdue(db, deps, now);
  await recountStaleScores(db, now, deps.auditScoreWindowMs, SCORES_PER_PASS);
  return { prepared, started, overdue };
}

async function prepareQueued(db: Db, dialect: Dialect, deps: ProofDeps, limit: number, now: number): Promise<number> {
  const claimed = await claimDue(db, dialect, auditPreparation, { now, leaseMs: PREPARE_LEASE_MS, limit });
  for (let start = 0; start < claimed.length; start += PREPARE_CONCURRENCY) {
    await Promise.all(claimed.slice(start, start + PREPARE_CONCURRENCY).map((audit) => prepareAudit(db, deps, audit, now)));
  }
  return claimed.length;
}

/**
 * Reads random ranges of the source and opens the audit with their nonced hashes, or, when the
 * source cannot serve them, cancels it: a new copy is then `unproven` (it counts once copies of
 * other holders agree), a counted one waits for its next audit time.
 */
async function prepareAudit(db: Db, deps: ProofDeps, audit: AuditRow, now: number): Promise<void> {
  const copy = await findAuditedCopy(db, Number(audit.allocation_id));
  if (!copy || copy.state !== 'completed') {
    await endClaim(db, auditPreparation, { id: audit.id }, 'cancelled', { ended_at: now, detail: 'the copy ended' });
    return;
  }
  const ranges = pickRanges(copy.bytes, audit.kind === 'spot_check' ? deps.spotChecks : 1, deps.random);
  const read = await readSourceRanges(deps.sourceFetch, copy.url, copy.bytes, ranges);
  if ('unavailable' in read) {
    const ended = await endClaim(db, auditPreparation, { id: audit.id }, 'cancelled', { ended_at: now, detail: read.unavailable });
    if (ended.length > 0) await checkedWithoutSource(db, deps, audit, copy, read.unavailable, now);
    return;
  }
  const nonce = crypto.randomBytes(16).toString('hex');
  await updateHeld(
    db,
    auditPreparation,
    { id: audit.id },
    {
      state: 'open',
      nonce,
      ranges: JSON.stringify(ranges.map((range) => [range.offset, range.length])),
      expected: JSON.stringify(read.bytes.map((bytes) => nonceHash(nonce, bytes))),
      lease_until: now + deps.auditDeadlineMs,
    },
  );
}

/** A copy whose source could not be read for its audit: a new one waits for agreement, a counted one for its next time. */
async function checkedWithoutSource(db: Db, deps: ProofDeps, audit: AuditRow, copy: AuditedCopy, why: string, now: number): Promise<void> {
  if (audit.kind === 'retention') {
    await db
      .updateTable('allocations')
      .set({ next_audit_at: nextAuditAt(now, deps.auditIntervalMs, deps.random) })
      .where('id', '=', copy.allocationId)
      .execute();
    return;
  }
  await db.transaction().execute(async (trx) => {
    await lockAsset(trx, copy.assetId);
    const moved = await trx
      .updateTable('allocations')
      .set({ proof: 'unproven' })
      .where('id', '=', copy.allocationId)
      .where('state', '=', 'completed')
      .where('proof', '=', 'pending')
      .returning('id')
      .executeTakeFirst();
    if (!moved) return;
    const events: NewEvent[] = [
      {
        actor: 'system',
        kind: 'copy.unproven',
        subjectType: 'allocation',
        subjectId: copy.allocationId,
        data: { asset_id: copy.assetId, node_id: copy.nodeId, reason: why },
      },
    ];
    await settleProofs(trx, copy.assetId, deps.vettingAudits > 0, now, events);
    await appendEvents(trx, now, events);
  });
}

/**
 * Retention audits for up to `limit` copies due: a random block with its Merkle path where the copy
 * carries the agreed root, else nonced ranges of the source (prepared by the next pass).
 */
async function startRetentionAudits(db: Db, deps: ProofDeps, limit: number, now: number): Promise<number> {
  const due = await copiesDueForAudit(db, now, limit);
  const audits: NewAudit[] = due.map((copy) => {
    const byBlock = copy.merkleRoot !== null && copy.merkleRoot === copy.agreedRoot && copy.bytes > 0;
    return {
      copy,
      kind: 'retention',
      method: byBlock ? 'block' : 'ranges',
      ...(byBlock ? { open: { block: Math.floor(deps.random() * blockCount(copy.bytes)), deadline: now + deps.auditDeadlineMs } } : {}),
    };
  });
  await insertAudits(db, audits, now);
  return audits.length;
}

async function loseOverdue(db: Db, deps: ProofDeps, now: number): Promise<number> {
  const overdue = await overdueCopies(db, now, deps.auditIntervalMs, 100);
  let lost = 0;
  for (const copy of overdue) {
    lost += await db
      .transaction()
      .execute((trx) =>
        loseCopiesIn(
          trx,
          copy.node_id,
          [{ assetId: copy.asset_id, reason: 'unaudited', detail: 'its holder stayed away a whole audit interval past its audit time' }],
          'system',
          now,
        ),
      );
  }
  return lost;
}

/** Open audits past their deadline: each is a miss, applied like a failed answer. */
export async function expireAudits(db: Db, deps: ProofDeps, now: number): Promise<number> {
  let missed = 0;
  for (const id of await lapsedAuditIds(db, now, 500)) {
    const audit = await findAudit(db, id);
    if (audit && (await applyVerdict(db, deps, audit, { verdict: 'missed', detail: 'no answer before its deadline' }, now))) missed += 1;
  }
  return missed;
}
