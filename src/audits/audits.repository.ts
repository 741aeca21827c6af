import { sql } from 'kysely';
import { AUDITED_PROOFS } from '../allocations/allocations.table.js';
import type { Db } from '../db/database.js';
import type { DueWork } from '../db/due-work.js';
import { UNFINISHED_AUDIT_STATES, type AuditKind, type AuditMethod, type AuditRow } from './audits.table.js';

/**
 * An audit not ended yet, written out as the partial index `audits_unfinished` declares it:
 * SQLite's planner uses a partial index only for a query that repeats its condition with the
 * values written in, not bound.
 */
export const unfinishedAudit = sql<boolean>`audits.state in (${sql.join(UNFINISHED_AUDIT_STATES.map((state) => sql.lit(state)))})`;
/** A completed allocation, written out as the partial indexes of copies to audit declare it (see `unfinishedAudit`). */
const completedCopy = sql<boolean>`allocations.state = 'completed'`;
/**
 * The holder of each copy, looked up by key while the copies are read in audit-time order: the
 * unary plus keeps SQLite's planner from reading each online node's copies through
 * allocations_of_node instead, and sorting all of them to return the first few.
 */
const holderOfCopy = sql<boolean>`nodes.id = +allocations.node_id`;

/** Audits waiting to be prepared (the source's ranges read): claimed by one instance at a time. */
export const auditPreparation: DueWork<'audits'> = {
  table: 'audits',
  waiting: 'queued',
  claimed: 'preparing',
  dueAt: 'due_at',
  leaseUntil: 'lease_until',
  orderBy: 'id',
  among: unfinishedAudit,
};

/** Audits asked of their holder: held by it until answered or until the deadline (`lease_until`). */
export const openAudit: DueWork<'audits'> = {
  table: 'audits',
  waiting: 'open',
  claimed: 'open',
  leaseUntil: 'lease_until',
  orderBy: 'id',
  among: unfinishedAudit,
};

/** What an audit is about: one copy, as the audit's checks read it. */
export interface AuditedCopy {
  allocationId: number;
  assetId: string;
  nodeId: number;
  state: string;
  proof: string | null;
  bytes: number;
  sha256: string;
  merkleRoot: string | null;
  agreedRoot: string | null;
  url: string;
}

export async function findAudit(db: Db, id: number): Promise<AuditRow | undefined> {
  return db.selectFrom('audits').selectAll().where('id', '=', id).executeTakeFirst();
}

/** A copy as audits read it: the allocation with its asset's agreed root and source. */
function auditedCopies(db: Db) {
  return db
    .selectFrom('allocations')
    .innerJoin('assets', 'assets.id', 'allocations.asset_id')
    .select([
      'allocations.id',
      'allocations.asset_id',
      'allocations.node_id',
      'allocations.state',
      'allocations.proof',
      'allocations.bytes',
      'allocations.sha256',
      'allocations.merkle_root',
      'assets.merkle_root as agreed_root',
      'assets.url',
    ]);
}

type AuditedCopyRow = Awaited<ReturnType<ReturnType<typeof auditedCopies>['executeTakeFirstOrThrow']>>;

/** The copy of a row, or undefined for an allocation that holds none (no bytes or checksum reported). */
function toAuditedCopy(row: AuditedCopyRow | undefined): AuditedCopy | undefined {
  if (!row || row.bytes === null || row.sha256 === null) return undefined;
  return {
    allocationId: Number(row.id),
    assetId: row.asset_id,
    nodeId: Number(row.node_id),
    state: row.state,
    proof: row.proof,
    bytes: Number(row.bytes),
    sha256: row.sha256,
    merkleRoot: row.merkle_root,
    agreedRoot: row.agreed_root,
    url: row.url,
  };
}

export async function findAuditedCopy(db: Db, allocationId: number): Promise<AuditedCopy | undefined> {
  return toAuditedCopy(await auditedCopies(db).where('allocations.id', '=', allocationId).executeTakeFirst());
}

/** A spot check queued for each copy just completed, due at once. */
export async function queueSpotChecks(db: Db, copies: { id: number; asset_id: string; node_id: number }[], now: number): Promise<void> {
  if (copies.length === 0) return;
  await db
    .insertInto('audits')
    .values(
      copies.map((copy) => ({
        allocation_id: copy.id,
        asset_id: copy.asset_id,
        node_id: copy.node_id,
        kind: 'spot_check' as const,
        method: 'ranges' as const,
        state: 'queued' as const,
        created_at: now,
        due_at: now,
      })),
    )
    .execute();
}

export interface NewAudit {
  copy: { allocationId: number; assetId: string; nodeId: number };
  kind: AuditKind;
  method: AuditMethod;
  /** Method block: asked of the holder at once, with this block and deadline. */
  open?: { block: number; deadline: number };
}

export async function insertAudits(db: Db, audits: NewAudit[], now: number): Promise<void> {
  if (audits.length === 0) return;
  await db
    .insertInto('audits')
    .values(
      audits.map((audit) => ({
        allocation_id: audit.copy.allocationId,
        asset_id: audit.copy.assetId,
        node_id: audit.copy.nodeId,
        kind: audit.kind,
        method: audit.method,
        state: audit.open ? ('open' as const) : ('queued' as const),
        block: audit.open?.block ?? null,
        lease_until: audit.open?.deadline ?? null,
        created_at: now,
        due_at: now,
      })),
    )
    // A copy another instance started an audit of meanwhile keeps that one.
    .onConflict((conflict) =>
      conflict
        .column('allocation_id')
        .where(sql<boolean>`state in ('queued', 'preparing', 'open')`)
        .doNothing(),
    )
    .execute();
}

/** The audits a node is asked to answer now (open, deadline not passed), oldest first. */
export async function openAuditsOf(db: Db, nodeId: number, now: number): Promise<AuditRow[]> {
  return (
    db
      .selectFrom('audits')
      .selectAll()
      .where('node_id', '=', nodeId)
      // Over audits_by_node (node_id, ended_at, state): an unfinished audit has not ended.
      .where('ended_at', 'is', null)
      .where('state', '=', 'open')
      .where('lease_until', '>=', now)
      .orderBy('id')
      .limit(100)
      .execute()
  );
}

/** Open audits whose deadline passed: misses, for the expiry pass. */
export async function lapsedAuditIds(db: Db, now: number, limit: number): Promise<number[]> {
  const rows = await db
    .selectFrom('audits')
    .select('id')
    .where(unfinishedAudit)
    .where('state', '=', 'open')
    .where('lease_until', '<', now)
    .orderBy('id')
    .limit(limit)
    .execute();
  return rows.map((row) => Number(row.id));
}

/** Audited copies (counted, or waiting for their node's vetting) without an audit time: each gets a random one within the interval. */
export async function scheduleUnscheduledCopies(db: Db, now: number, intervalMs: number, limit: number, random: () => number): Promise<number> {
  const rows = await db
    .selectFrom('allocations')
    .select('id')
    // Written as the partial index allocations_audit_unscheduled's predicate.
    .where(sql<boolean>`state = 'completed' and proof in ('proven', 'suspect', 'vetting') and next_audit_at is null`)
    .limit(limit)
    .execute();
  if (rows.length === 0) return 0;
  // One statement for the lot: each copy's own random time, chosen here (the random source is injected).
  const times = rows.map((row) => sql`when ${Number(row.id)} then cast(${nextAuditAt(now, intervalMs, random)} as bigint)`);
  await db
    .updateTable('allocations')
    .set({ next_audit_at: sql<number>`case id ${sql.join(times, sql` `)} end` })
    .where(
      'id',
      'in',
      rows.map((row) => Number(row.id)),
    )
    .where('next_audit_at', 'is', null)
    .execute();
  return rows.length;
}

/** A uniformly random time within the next interval: every copy is audited at least once per interval, never predictably. */
export function nextAuditAt(now: number, intervalMs: number, random: () => number): number {
  return now + 1 + Math.floor(random() * intervalMs);
}

/** Audits under way per node at most: a node holding many copies is never flooded. */
const UNFINISHED_PER_NODE = 8;

/**
 * Audited copies due for a retention audit whose holder is online and has none under way, first due
 * first, and no more per node than leaves it UNFINISHED_PER_NODE audits under way.
 */
export async function copiesDueForAudit(db: Db, now: number, limit: number): Promise<AuditedCopy[]> {
  const due = await dueCopies(db, now, limit * 2);
  const nodes = [...new Set(due.map((copy) => copy.nodeId))];
  const busy =
    nodes.length === 0
      ? []
      : await db
          .selectFrom('audits')
          .select(['node_id', db.fn.countAll<number>().as('count')])
          .where('node_id', 'in', nodes)
          .where('ended_at', 'is', null)
          .where(unfinishedAudit)
          .groupBy('node_id')
          .execute();
  const room = new Map(nodes.map((node) => [node, UNFINISHED_PER_NODE]));
  for (const row of busy) room.set(Number(row.node_id), UNFINISHED_PER_NODE - Number(row.count));
  const picked: AuditedCopy[] = [];
  for (const copy of due) {
    const left = room.get(copy.nodeId) ?? 0;
    if (left <= 0 || picked.length >= limit) continue;
    room.set(copy.nodeId, left - 1);
    picked.push(copy);
  }
  return picked;
}

async function dueCopies(db: Db, now: number, limit: number): Promise<AuditedCopy[]> {
  const rows = await auditedCopies(db)
    .innerJoin('nodes', (join) => join.on(holderOfCopy))
    .where(completedCopy)
    .where('allocations.next_audit_at', 'is not', null)
    .where('allocations.next_audit_at', '<=', now)
    .where('allocations.proof', 'in', AUDITED_PROOFS)
    .where('nodes.status', '=', 'alive')
    .where(({ not, exists, selectFrom }) =>
      not(exists(selectFrom('audits').select(sql.lit(1).as('one')).whereRef('audits.allocation_id', '=', 'allocations.id').where(unfinishedAudit))),
    )
    .orderBy('allocations.next_audit_at')
    .limit(limit)
    .execute();
  return rows.map(toAuditedCopy).filter((copy): copy is AuditedCopy => copy !== undefined);
}

/** Counted copies a whole interval past their audit time whose holder is not online: they stop counting. */
export async function overdueCopies(db: Db, now: number, intervalMs: number, limit: number): Promise<{ id: number; asset_id: string; node_id: number }[]> {
  const rows = await db
    .selectFrom('allocations')
    .innerJoin('nodes', (join) => join.on(holderOfCopy))
    .select(['allocations.id', 'allocations.asset_id', 'allocations.node_id'])
    .where(completedCopy)
    .where('allocations.next_audit_at', 'is not', null)
    .where('allocations.next_audit_at', '<', now - intervalMs)
    .where('nodes.status', '!=', 'alive')
    .orderBy('allocations.next_audit_at')
    .limit(limit)
    .execute();
  return rows.map((row) => ({ id: Number(row.id), asset_id: row.asset_id, node_id: Number(row.node_id) }));
}

/**
 * Adds a verdict to its node's score (a miss counts as a failure): the counts after it, and whether
 * the node was vetted already. Undefined for a node that no longer exists.
 */
export async function countVerdict(db: Db, nodeId: number, passed: boolean): Promise<{ passed: number; failed: number; vettedAt: number | null } | undefined> {
  const row = await db
    .updateTable('nodes')
    .set((eb) => (passed ? { audits_passed: eb('audits_passed', '+', 1) } : { audits_failed: eb('audits_failed', '+', 1) }))
    .where('id', '=', nodeId)
    .returning(['audits_passed', 'audits_failed', 'vetted_at'])
    .executeTakeFirst();
  return row && { passed: Number(row.audits_passed), failed: Number(row.audits_failed), vettedAt: row.vetted_at === null ? null : Number(row.vetted_at) };
}

/** How often a node's score is recounted from its verdicts, so that those older than the window drop out. */
export const SCORE_RECOUNT_MS = 3_600_000;

/** Recounts the scores of up to `limit` nodes not recounted within SCORE_RECOUNT_MS, oldest first. */
export async function recountStaleScores(db: Db, now: number, windowMs: number, limit: number): Promise<number> {
  const stale = await db
    .selectFrom('nodes')
    .select('id')
    .where((eb) => eb.or([eb('audit_score_at', 'is', null), eb('audit_score_at', '<', now - SCORE_RECOUNT_MS)]))
    // Never recounted first, on both databases (PostgreSQL sorts nulls last).
    .orderBy(sql`coalesce(audit_score_at, 0)`)
    .limit(limit)
    .execute();
  for (const node of stale) await recountAuditScore(db, Number(node.id), now - windowMs, now);
  return stale.length;
}

/** A node's verdicts within the window: what its audit score is. */
export async function recountAuditScore(db: Db, nodeId: number, since: number, now: number): Promise<{ passed: number; failed: number }> {
  const rows = await db
    .selectFrom('audits')
    .select(['state', db.fn.countAll<number>().as('count')])
    .where('node_id', '=', nodeId)
    .where('ended_at', '>=', since)
    .where('state', 'in', ['passed', 'failed', 'missed'])
    .groupBy('state')
    .execute();
  const count = (state: string) => Number(rows.find((row) => row.state === state)?.count ?? 0);
  const score = { passed: count('passed'), failed: count('failed') + count('missed') };
  await db.updateTable('nodes').set({ audits_passed: score.passed, audits_failed: score.failed, audit_score_at: now }).where('id', '=', nodeId).execute();
  return score;
}
