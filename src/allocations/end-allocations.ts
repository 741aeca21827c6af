import { sql, type OperandValueExpressionOrList } from 'kysely';
import { changeHolders } from '../assets/assets.repository.js';
import type { AssetState } from '../assets/assets.table.js';
import type { Db } from '../db/database.js';
import type { Database } from '../db/schema.js';
import { appendEvents, type NewEvent } from '../events/events.repository.js';
import type { AllocationState, CopyProof } from './allocations.table.js';
import { operatorKeySql } from './operator-key.js';

/** An allocation as the statement that ended it returned it. */
export interface EndedAllocation {
  id: number;
  asset_id: string;
  node_id: number;
  expires_at: number;
}

/** Which allocations end: one node's allocation of one asset, the ids a subquery picks, or listed ids. */
export type AllocationSelection =
  | { assetId: string; nodeId: number }
  /** A subquery of allocation ids. */
  | { pickedBy: OperandValueExpressionOrList<Database, 'allocations', 'id'> }
  | { ids: number[] };

/** What a node reported with the end: stored on the row, not counted until the quorum verifies it. */
export interface ReportedCopy {
  sha256: string;
  bytes: number;
  uri: string | null;
  merkleRoot?: string | null;
  /** What is proven of it as it ends: `proven` unless spot checks are due first. */
  proof?: CopyProof;
}

export interface CopyCounts {
  state: AssetState;
  copies: number;
  replicas_target: number;
}

export interface AllocationEnd<Settled> {
  state: Exclude<AllocationState, 'active'>;
  reason: string | null;
  /** Who ended them, as the events record it. */
  actor: string;
  /** The states that end: active claims, and for a superseded source its counted copies too. */
  from?: readonly ('active' | 'completed')[];
  copy?: ReportedCopy;
  /** Runs after the rows ended, before the copies are counted: what a completion's quorum decides. */
  settle?: (ended: EndedAllocation[]) => Promise<Settled>;
  /** The event of each ended allocation, its kind and data; actor, subject and time are the end's. */
  event?: (row: EndedAllocation) => { kind: string; data: Record<string, unknown> };
  /** Events written after the allocations' in the same statement: what the ends did to their assets. */
  consequences?: (outcome: { ended: EndedAllocation[]; counts: Map<string, CopyCounts>; settled: Settled }) => NewEvent[];
}

export interface EndOutcome<Settled> {
  ended: EndedAllocation[];
  /** Each asset's counts after a recount (none when holders only went down). */
  counts: Map<string, CopyCounts>;
  /** What `settle` returned; undefined when nothing ended. */
  settled: Settled | undefined;
}

const IDS_PER_STATEMENT = 1000;

/**
 * The one way allocations end (invariant 4): a conditional UPDATE of the rows still in a `from`
 * state (no row back: it had ended already, so nothing else happens), then holders, then the
 * events, all in the caller's transaction. An end that frees a claim takes one off its asset's
 * holders per ended row, relative, so concurrent grants compose. An end that makes a copy (a
 * completion) or takes copies out of the count (a superseded source) recounts copies, holders
 * and state from the allocations instead; the callers lock the asset rows first, which makes
 * the recount exact. Every end is recorded: by `event` for each row, or in the assets' events
 * (`consequences`) that list them. This module is the only one that lowers holders.
 */
export async function endAllocations<Settled = undefined>(
  trx: Db,
  which: AllocationSelection,
  end: AllocationEnd<Settled>,
  now: number,
): Promise<EndOutcome<Settled>> {
  const from = end.from ?? ['active'];
  const ended = await markEnded(trx, which, end, from, now);
  const counts = new Map<string, CopyCounts>();
  if (ended.length === 0) return { ended, counts, settled: undefined };
  const settled = (await end.settle?.(ended)) as Settled;
  if (end.state === 'completed' || from.includes('completed')) {
    for (const assetId of new Set(ended.map((row) => row.asset_id))) counts.set(assetId, await refreshCopyCounts(trx, assetId));
  } else {
    await changeHolders(
      trx,
      ended.map((row) => row.asset_id),
      -1,
    );
  }
  const event = end.event;
  await appendEvents(trx, now, [
    ...(event ? ended.map((row) => ({ actor: end.actor, subjectType: 'allocation', subjectId: row.id, ...event(row) })) : []),
    ...(end.consequences?.({ ended, counts, settled }) ?? []),
  ]);
  return { ended, counts, settled };
}

async function markEnded<Settled>(
  trx: Db,
  which: AllocationSelection,
  end: AllocationEnd<Settled>,
  from: readonly AllocationState[],
  now: number,
): Promise<EndedAllocation[]> {
  const endsCopies = from.includes('completed');
  const lists = 'ids' in which ? chunksOf(which.ids, IDS_PER_STATEMENT) : [[]];
  const ended: EndedAllocation[] = [];
  for (const ids of lists) {
    let query = trx.updateTable('allocations').set({
      state: end.state,
      // A copy keeps the time it was completed; its end is in the event.
      ended_at: endsCopies ? sql<number>`coalesce(ended_at, ${now})` : now,
      end_reason: end.reason,
      ...(end.copy ? copyValues(end.copy, end.state === 'completed', now) : endsCopies ? { verified: 0, next_audit_at: null } : {}),
    });
    if ('assetId' in which) query = query.where('asset_id', '=', which.assetId).where('node_id', '=', which.nodeId);
    else if ('pickedBy' in which) query = query.where('id', 'in', which.pickedBy);
    else query = query.where('id', 'in', ids);
    query = from.length === 1 ? query.where('state', '=', from[0] as AllocationState) : query.where('state', 'in', from);
    ended.push(...(await query.returning(['id', 'asset_id', 'node_id', 'expires_at']).execute()));
  }
  return ended;
}

/** What a node reported, stored on the row; only a completion makes it a copy with a proof state. */
function copyValues(copy: ReportedCopy, kept: boolean, now: number) {
  const proof = kept ? (copy.proof ?? 'proven') : null;
  return {
    sha256: copy.sha256.toLowerCase(),
    bytes: copy.bytes,
    uri: copy.uri,
    merkle_root: copy.merkleRoot?.toLowerCase() ?? null,
    verified: 0,
    proof,
    proven_at: proof === 'proven' ? now : null,
  };
}

function chunksOf<T>(items: T[], size: number): T[][] {
  const chunks: T[][] = [];
  for (let start = 0; start < items.length; start += size) chunks.push(items.slice(start, start + size));
  return chunks;
}

/**
 * copies = verified copies of distinct operators (operator-key.ts); holders = copies + copies waiting for their spot check + active claims;
 * state from copies against the target. A pending copy holds its place, so no other node downloads
 * the asset while its proof is under way; an unproven one does not, so that copies to agree with it
 * are made.
 */
export async function refreshCopyCounts(trx: Db, assetId: string): Promise<CopyCounts> {
  const verified = sql<number>`(select count(distinct ${operatorKeySql}) from allocations where allocations.asset_id = assets.id and allocations.state = 'completed' and allocations.verified = 1)`;
  const active = sql<number>`(select count(*) from allocations where allocations.asset_id = assets.id and (allocations.state = 'active' or (allocations.state = 'completed' and allocations.verified = 0 and allocations.proof = 'pending')))`;
  return trx
    .updateTable('assets')
    .set({
      copies: verified,
      holders: sql`${verified} + ${active}`,
      state: sql`case when ${verified} >= replicas_target then 'rescued' when state = 'rescued' then 'pending' else state end`,
      size_bytes: sql`coalesce(size_bytes, (select max(bytes) from allocations where allocations.asset_id = assets.id and allocations.state = 'completed' and allocations.verified = 1))`,
    })
    .where('id', '=', assetId)
    .returning(['state', 'copies', 'replicas_target'])
    .executeTakeFirstOrThrow();
}
