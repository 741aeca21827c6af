import type { Db } from '../db/database.js';
import type { Dialect } from '../db/dialect.js';
import { holdersOf, insertProvisionalNode, lockInIdOrder, recordReports, selectCandidates, withVettingLoad, type LockMode } from './candidates.repository.js';
import {
  allowanceOf,
  hostRoomOf,
  judgeRequests,
  mergeInAllocationOrder,
  ownListOf,
  pickTogether,
  pickWithinBudget,
  refusalOf,
  sharedListOf,
  spreadAcrossTag,
  type AllocationPolicy,
  type AllocationRequest,
  type Grant,
  type Refusal,
  type ServedRequest,
  type AssetHolders,
} from './allocation-rules.js';
import { grant, keepWithinHostCaps, type GrantedAsset } from './grants.repository.js';
import { coolingDown } from './retry-cooldowns.repository.js';

export type { GrantedAsset } from './grants.repository.js';
export { allocationPolicyFrom, type AllocationPolicy, type AllocationRequest, type Refusal } from './allocation-rules.js';

export interface AllocationOutcome {
  granted: GrantedAsset[];
  refusal?: Refusal;
}

/** How a pass runs on this database. */
interface PassStyle {
  lock: LockMode;
  /** Host rows are locked before a host's active allocations are counted (PostgreSQL, concurrent transactions). */
  lockHosts: boolean;
  /** The grants' writes to allocations, assets and events go in one statement (PostgreSQL). */
  writesTogether: boolean;
}

interface PassResult extends AllocationOutcome {
  /** The candidate lists ran dry before the request was filled: rows locked by others may have been skipped. */
  ranDry: boolean;
  /** How many assets the node could take in this request (strikes halve it); a later pass takes at most the rest. */
  allowed: number;
}

/**
 * Grants a node the most important assets that fit what it reported free.
 *
 * Invariant 1: only assets with holders < replicas_target, never one the node already holds or
 * keeps (the partial unique index `allocations_one_per_node` backs this up). Invariant 2: the
 * budget is the reported free bytes minus the node's active reservations (`nodes.reserved_bytes`,
 * kept by triggers on allocations), read from the node's row by the UPDATE that locks it, so two
 * requests of one node cannot both spend it. Invariant 3:
 * candidates in priority desc, holders asc, first_seen asc, id order.
 */
export async function allocateAssets(db: Db, dialect: Dialect, request: AllocationRequest, policy: AllocationPolicy, now: number): Promise<AllocationOutcome> {
  const [outcome] = await allocateBatch(db, dialect, [request], policy, now);
  return outcome as AllocationOutcome;
}

/**
 * Serves several requests in one transaction (group commit), as if they had come one after another
 * in node id order: each sees what the ones before it were granted, and the commit is shared.
 *
 * Two or more requests cost the same few statements, whatever their count: one UPDATE records
 * every node's report and returns its reservations, one SELECT reads a shared list of candidates
 * (known and unknown size), one more reads holders and gone sources when a candidate has either,
 * and the grants, their holders counts and their events are written by one statement on
 * PostgreSQL (data-modifying WITH), by an INSERT, an UPDATE per distinct increment of holders
 * (almost always one) and an INSERT on SQLite. The list is handed out here in allocation order. A
 * request it could not fill because it was cut at its limit gets its own claim in the same
 * transaction.
 *
 * On PostgreSQL candidates are locked with FOR UPDATE SKIP LOCKED, so concurrent transactions take
 * different rows without waiting. Skipping can leave a node short while slots are only briefly
 * locked by others; a request whose candidates ran dry gets a second pass in its own transaction
 * that waits for those rows and re-checks them, so racing nodes together get every free slot.
 */
export async function allocateBatch(
  db: Db,
  dialect: Dialect,
  requests: AllocationRequest[],
  policy: AllocationPolicy,
  now: number,
): Promise<AllocationOutcome[]> {
  // A node's second request must see its first one's reservations: it waits for the next transaction.
  const firsts = new Map<number, number>();
  const repeats: number[] = [];
  requests.forEach((request, index) => (firsts.has(request.nodeId) ? repeats.push(index) : firsts.set(request.nodeId, index)));
  // Node id order, so two instances' batches lock node rows in the same order.
  const order = [...firsts.values()].sort((a, b) => (requests[a] as AllocationRequest).nodeId - (requests[b] as AllocationRequest).nodeId);
  const batch = order.map((index) => requests[index] as AllocationRequest);
  const style: PassStyle = { lock: dialect.hasRowLocks ? 'skip-locked' : 'none', lockHosts: dialect.hasRowLocks, writesTogether: dialect.hasWritableCtes };
  const passes = await db
    .transaction()
    .execute((trx) =>
      batch.length === 1 ? Promise.all([claim(trx, batch[0] as AllocationRequest, policy, now, style)]) : claimTogether(trx, batch, policy, now, style),
    );
  const outcomes: AllocationOutcome[] = new Array(requests.length);
  await Promise.all(
    order.map(async (index, position) => {
      const pass = passes[position] as PassResult;
      outcomes[index] = dialect.hasRowLocks
        ? await topUp(db, dialect, requests[index] as AllocationRequest, policy, now, pass)
        : { granted: pass.granted, refusal: pass.refusal };
    }),
  );
  if (repeats.length > 0) {
    try {
      const later = await allocateBatch(
        db,
        dialect,
        repeats.map((index) => requests[index] as AllocationRequest),
        policy,
        now,
      );
      repeats.forEach((index, position) => (outcomes[index] = later[position] as AllocationOutcome));
    } catch (error) {
      // The first requests' grants are committed: they must reach their nodes, not be run again.
      if (error instanceof PartialBatchError) repeats.forEach((index, position) => (outcomes[index] = error.outcomes[position] as AllocationOutcome));
      throw new PartialBatchError(outcomes, error instanceof PartialBatchError ? error.cause : error);
    }
  }
  return outcomes;
}

/**
 * allocateBatch failed after committing some requests' grants: `outcomes` holds those (final, to
 * be answered as they are) and undefined for the requests it did not serve.
 */
export class PartialBatchError extends Error {
  constructor(
    readonly outcomes: (AllocationOutcome | undefined)[],
    override readonly cause: unknown,
  ) {
    super(
      `allocation batch failed after serving ${outcomes.filter(Boolean).length} of ${outcomes.length} requests: ${(cause as Error)?.message ?? String(cause)}`,
    );
  }
}

/**
 * What allocateAssets would grant now, computed by the same code in a transaction rolled back.
 * With `provisionalName`, for a node not registered yet: it exists only inside that transaction.
 */
export async function previewAllocation(
  db: Db,
  request: AllocationRequest,
  policy: AllocationPolicy,
  now: number,
  provisionalName?: string,
): Promise<AllocationOutcome> {
  const trx = await db.startTransaction().execute();
  try {
    const nodeId = provisionalName === undefined ? request.nodeId : await insertProvisionalNode(trx, provisionalName, now);
    const { granted, refusal } = await claim(trx, { ...request, nodeId }, policy, now, { lock: 'none', lockHosts: false, writesTogether: false });
    return { granted, refusal };
  } finally {
    await trx.rollback().execute();
  }
}

async function topUp(
  db: Db,
  dialect: Dialect,
  request: AllocationRequest,
  policy: AllocationPolicy,
  now: number,
  first: PassResult,
): Promise<AllocationOutcome> {
  const missing = first.allowed - first.granted.length;
  if (first.refusal || !first.ranDry || missing <= 0) return { granted: first.granted, refusal: first.refusal };
  const unknownTaken = first.granted.filter((asset) => asset.sizeBytes === null).length;
  try {
    const second = await db
      .transaction()
      .execute((trx) =>
        claim(
          trx,
          request,
          { ...policy, unknownSizeMaxPerRequest: Math.max(0, policy.unknownSizeMaxPerRequest - unknownTaken) },
          now,
          { lock: 'wait', lockHosts: true, writesTogether: dialect.hasWritableCtes },
          missing,
        ),
      );
    return { granted: [...first.granted, ...second.granted] };
  } catch (error) {
    // A deadlock between two waiting passes, or the database gone: the first pass's grants are
    // committed, so they are the answer; the node asks again for the rest. Anything else is a bug.
    if (!dialect.isLockConflict(error) && !dialect.isConnectionError(error)) throw error;
    return { granted: first.granted };
  }
}

/**
 * One request's claim, inside the caller's transaction. `atMost` caps what a later pass takes: the
 * rest of what the node could take in the first one, counted after its strikes halved it.
 */
async function claim(trx: Db, request: AllocationRequest, policy: AllocationPolicy, now: number, style: PassStyle, atMost?: number): Promise<PassResult> {
  const { lock } = style;
  const [node] = await withVettingLoad(trx, await recordReports(trx, [request], now, lock), policy);
  if (!node) return { granted: [], ranDry: false, allowed: 0 };
  const refusal = refusalOf(node, policy, now);
  if (refusal) return { granted: [], ranDry: false, allowed: 0, refusal };
  const full = allowanceOf(node, request, policy, now);
  if (!full) return { granted: [], ranDry: false, allowed: 0 };
  const allowance = atMost === undefined ? full : { ...full, maxAssets: Math.min(full.maxAssets, atMost), unknownCap: Math.min(full.unknownCap, atMost) };

  const list = ownListOf(request, allowance);
  const { known, unknown } = await selectCandidates(
    trx,
    { ...list, lock, hostCap: policy.sourceHostMaxActive, now },
    { nodeId: request.nodeId, operatorId: allowance.operatorId },
  );
  const merged = mergeInAllocationOrder(known, unknown);
  const heldBy =
    allowance.spreadValue === undefined
      ? new Map<string, AssetHolders>()
      : await holdersOf(
          trx,
          merged.filter((candidate) => candidate.holders > 0),
          policy.spreadTag,
        );
  const ordered = spreadAcrossTag(merged, heldBy, allowance.spreadValue);
  let picked = pickWithinBudget(
    ordered,
    allowance.budget,
    allowance.maxAssets,
    { estimate: policy.unknownSizeEstimateBytes, maxUnknown: allowance.unknownCap },
    hostRoomOf(merged, policy.sourceHostMaxActive),
  );
  const ranDry = picked.length < allowance.maxAssets && known.length < list.limits.known;
  if (lock === 'wait' && picked.length > 0) {
    const stillFree = await lockInIdOrder(
      trx,
      picked.map(({ asset }) => asset.id),
    );
    picked = picked.filter(({ asset }) => stillFree.has(asset.id));
  }
  if (picked.length === 0) return { granted: [], ranDry, allowed: allowance.maxAssets };
  const grants = await keepWithinHostCaps(
    trx,
    picked.map((pick) => ({ request, ...pick, expiresAt: allowance.expiryFor(pick.reservedBytes), operatorId: allowance.operatorId })),
    policy.sourceHostMaxActive,
    style.lockHosts,
  );
  return { granted: await grant(trx, grants, now, style.writesTogether), ranDry, allowed: allowance.maxAssets };
}

/** Several requests of distinct nodes, in node id order, served from one shared candidate list. */
async function claimTogether(trx: Db, requests: AllocationRequest[], policy: AllocationPolicy, now: number, style: PassStyle): Promise<PassResult[]> {
  const nodes = new Map((await withVettingLoad(trx, await recordReports(trx, requests, now, style.lock), policy)).map((node) => [node.id, node]));
  const entries = judgeRequests(requests, nodes, policy, now);
  const served = entries.filter((entry): entry is ServedRequest => entry.allowance !== undefined);
  if (served.length === 0) return entries.map(({ refusal }) => ({ granted: [], ranDry: false, allowed: 0, refusal }));

  const list = sharedListOf(served);
  const { known, unknown } = await selectCandidates(trx, { ...list, lock: style.lock, hostCap: policy.sourceHostMaxActive, now });
  const candidates = mergeInAllocationOrder(known, unknown);
  const cut = { known: known.length === list.limits.known, unknown: list.limits.unknown > 0 && unknown.length === list.limits.unknown };
  const heldBy = await holdersOf(
    trx,
    candidates.filter((candidate) => candidate.holders > 0 || candidate.source_errors > 0),
    policy.spreadTag,
  );
  const waiting = await coolingDown(
    trx,
    candidates.filter((candidate) => candidate.retry_failures > 0).map((candidate) => candidate.id),
    served.map(({ request }) => request.nodeId),
    now,
  );
  const picked = pickTogether(served, candidates, { heldBy, waiting, hostRoom: hostRoomOf(candidates, policy.sourceHostMaxActive) }, policy, cut);
  const kept = await keepWithinHostCaps(trx, picked.grants, policy.sourceHostMaxActive, style.lockHosts);
  const granted = await grant(trx, kept, now, style.writesTogether);
  // Requests the shared list could not serve as their own claims would have: those claims, in order.
  const ownClaims = new Set(served.slice(picked.served).map(({ request }) => request));

  const results: PassResult[] = [];
  for (const { request, refusal, allowance } of entries) {
    if (ownClaims.has(request)) {
      results.push(await claim(trx, { ...request, freeBytes: null }, policy, now, style));
      continue;
    }
    const mine = granted.filter((_, index) => (kept[index] as Grant).request === request);
    const missing = allowance ? allowance.maxAssets - mine.length : 0;
    // Short of what it may take with a list that was not full: rows locked by others may have been skipped.
    results.push({ granted: mine, ranDry: missing > 0 && !picked.fullLists.has(request), allowed: allowance?.maxAssets ?? 0, refusal });
  }
  return results;
}
