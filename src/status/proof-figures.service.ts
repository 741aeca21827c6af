import { sql } from 'kysely';
import { COPY_PROOFS, type CopyProof } from '../allocations/allocations.table.js';
import { AUDIT_KINDS, UNFINISHED_AUDIT_STATES, type AuditKind, type AuditState, type AuditVerdict } from '../audits/audits.table.js';
import { unfinishedAudit } from '../audits/audits.repository.js';
import type { Db } from '../db/database.js';

/** The window of the recent verdicts in `/status`, `/api/summary` and `/metrics`: the last 24 h by the server's clock. */
export const RECENT_AUDITS_MS = 86_400_000;
export const AUDIT_VERDICTS: readonly AuditVerdict[] = ['passed', 'failed', 'missed'];

/** Completed copies, counted or not: what holders claim to keep. */
export interface ClaimedCopies {
  /** Every proof state, 0 included. */
  byProof: Record<CopyProof, number>;
  /** Bytes of every completed copy, proven or not. */
  bytes: number;
  /** Of those, the bytes of counted copies (`verified = 1`): read in the same statement, so never more than `bytes`. */
  countedBytes: number;
}

export interface AuditCount {
  kind: AuditKind;
  /** A verdict (passed, failed, missed) or an unfinished state (queued, preparing, open). */
  state: AuditState;
  count: number;
}

/** What `/status` and `/api/summary` add about proofs: claimed against proven, and the day's verdicts. */
export interface ProofFigures {
  copiesByProof: Record<CopyProof, number>;
  bytesClaimed: number;
  /** The bytes of counted copies, as `readCopyBytes` reads them. */
  bytesProven: number;
  /** Spot checks and retention audits together. */
  auditsLastDay: Record<AuditVerdict, number>;
}

/** Completed copies by proof state, and their bytes: one GROUP BY over the completed allocations. */
export async function readClaimedCopies(db: Db): Promise<ClaimedCopies> {
  const rows = await db
    .selectFrom('allocations')
    .select([
      'proof',
      sql<number>`count(*)`.as('count'),
      sql<number>`coalesce(sum(bytes), 0)`.as('bytes'),
      sql<number>`coalesce(sum(case when verified = 1 then bytes else 0 end), 0)`.as('counted_bytes'),
    ])
    .where('state', '=', 'completed')
    .groupBy('proof')
    .execute();
  const byProof = Object.fromEntries(COPY_PROOFS.map((proof) => [proof, 0])) as Record<CopyProof, number>;
  // Every completed copy has a proof since migration 0016; its bytes count as claimed whatever it says.
  for (const row of rows) if (row.proof !== null) byProof[row.proof] = Number(row.count);
  const total = (key: 'bytes' | 'counted_bytes') => rows.reduce((sum, row) => sum + Number(row[key]), 0);
  return { byProof, bytes: total('bytes'), countedBytes: total('counted_bytes') };
}

/** Audits of `states` by kind and state: every pair listed, 0 included, so a series never vanishes. */
function everyPair(states: readonly AuditState[], rows: { kind: AuditKind; state: AuditState; count: number | string }[]): AuditCount[] {
  const counts = new Map(rows.map((row) => [`${row.kind} ${row.state}`, Number(row.count)]));
  return AUDIT_KINDS.flatMap((kind) => states.map((state) => ({ kind, state, count: counts.get(`${kind} ${state}`) ?? 0 })));
}

/** Verdicts reached at or after `since`, by kind and verdict; cancelled audits are no verdict. */
export async function countVerdictsSince(db: Db, since: number): Promise<AuditCount[]> {
  const rows = await db
    .selectFrom('audits')
    .select(['kind', 'state', sql<number>`count(*)`.as('count')])
    .where('ended_at', '>=', since)
    .where('state', 'in', AUDIT_VERDICTS)
    .groupBy(['kind', 'state'])
    .execute();
  return everyPair(AUDIT_VERDICTS, rows);
}

/** Audits not ended yet, by kind and state (over the partial index `audits_unfinished`). */
export async function countUnfinishedAudits(db: Db): Promise<AuditCount[]> {
  const rows = await db
    .selectFrom('audits')
    .select(['kind', 'state', sql<number>`count(*)`.as('count')])
    .where(unfinishedAudit)
    .groupBy(['kind', 'state'])
    .execute();
  return everyPair(UNFINISHED_AUDIT_STATES, rows);
}

/** Claimed copies and the verdicts of the last `RECENT_AUDITS_MS` before `now`. */
export async function readProofFigures(db: Db, now: number): Promise<ProofFigures> {
  const [claimed, verdicts] = await Promise.all([readClaimedCopies(db), countVerdictsSince(db, now - RECENT_AUDITS_MS)]);
  const auditsLastDay = Object.fromEntries(AUDIT_VERDICTS.map((verdict) => [verdict, 0])) as Record<AuditVerdict, number>;
  for (const row of verdicts) auditsLastDay[row.state as AuditVerdict] += row.count;
  return { copiesByProof: claimed.byProof, bytesClaimed: claimed.bytes, bytesProven: claimed.countedBytes, auditsLastDay };
}
