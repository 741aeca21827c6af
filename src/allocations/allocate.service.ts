import { sql, type ExpressionBuilder } from 'kysely';
import type { Config } from '../config.js';
import type { Db } from '../db/database.js';
import type { Database } from '../db/schema.js';
import type { Dialect } from '../db/dialect.js';
import { changeHolders } from '../assets/assets.repository.js';
import { appendEvents } from '../events/events.repository.js';
import { activeByHost, lockSourceHosts } from '../sources/sources.repository.js';
import type { AllocationState } from './allocations.table.js';
import { coolingDown } from './retry-cooldowns.repository.js';
import { leaseFor, type LeasePolicy } from './lease.js';

export interface AllocationRequest {
  nodeId: number;
  /** Free bytes the node reports now; null to use its last report while that is fresh. */
  freeBytes: number | null;
  maxAssets: number;
  minPriority: number;
  maxPriority?: number;
  actor: string;
}

export interface AllocationPolicy extends LeasePolicy {
  unknownSizeEstimateBytes: number;
  unknownSizeMaxPerRequest: number;
  /** A free-space report older than this is not trusted. */
  freeSpaceTtlMs: number;
  /** A node with this many strikes gets nothing until an admin clears it. */
  maxStrikes: number;
  /** Node tag across which copies of an asset are spread where possible. */
  spreadTag: string;
  /** Active allocations per source host across the fleet; 0: no cap. */
  sourceHostMaxActive: number;
}

/** The allocation rules as configured. */
export function allocationPolicyFrom(config: Config): AllocationPolicy {
  return {
    leaseMaxMs: config.allocationExpiryMs,
    leaseMinMs: Math.min(config.leaseMinMs, config.allocationExpiryMs),
    unknownSizeEstimateBytes: config.unknownSizeEstimateBytes,
    unknownSizeMaxPerRequest: config.unknownSizeMaxPerRequest,
    freeSpaceTtlMs: config.freeSpaceTtlMs,
    maxStrikes: config.maxStrikes,
    spreadTag: config.spreadTag,
    sourceHostMaxActive: config.sourceHostMaxActive,
  };
}

/** Why a node got nothing although it asked: the route turns each into a clear error. */
export type Refusal = 'draining' | 'throttled' | 'stale_free_space' | 'outside_window';

export interface AllocationOutcome {
  granted: GrantedAsset[];
  refusal?: Refusal;
}

export interface GrantedAsset {
  allocationId: number;
  id: string;
  name: string;
  url: string;
  sizeBytes: number | null;
  priority: number;
  sha256: string | null;
  reservedBytes: number;
  expiresAt: number;
}

interface Candidate {
  id: string;
  name: string;
  url: string;
  size_bytes: number | null;
  priority: number;
  holders: number;
  first_seen_at: number;
  sha256: string | null;
  replicas_target: number;
  source_errors: number;
  retry_failures: number;
  source_host: string | null;
  /** Active allocations of the candidate's source host when read (0 without a cap). */
  host_active: number;
}

type LockMode = 'none' | 'skip-locked' | 'wait';

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
export async function allocateAssets(
  db: Db,
  dialect: Dialect,
  request: AllocationRequest,
  policy: AllocationPolicy,
  now: number,
): Promise<AllocationOutcome> {
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
 * that waits for those rows and re-checks them (measured: without it, 50 nodes racing for 30 slots
 * got 20).
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
  const passes = await db.transaction().execute((trx) => (batch.length === 1 ? Promise.all([claim(trx, batch[0] as AllocationRequest, policy, now, style)]) : claimTogether(trx, batch, policy, now, style)));
  const outcomes: AllocationOutcome[] = new Array(requests.length);
  await Promise.all(
    order.map(async (index, position) => {
      const pass = passes[position] as PassResult;
      outcomes[index] = dialect.hasRowLocks ? await topUp(db, dialect, requests[index] as AllocationRequest, policy, now, pass) : { granted: pass.granted, refusal: pass.refusal };
    }),
  );
  if (repeats.length > 0) {
    try {
      const later = await allocateBatch(db, dialect, repeats.map((index) => requests[index] as AllocationRequest), policy, now);
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
    super(`allocation batch failed after serving ${outcomes.filter(Boolean).length} of ${outcomes.length} requests: ${(cause as Error)?.message ?? String(cause)}`);
  }
}

class DryRun extends Error {
  constructor(readonly outcome: AllocationOutcome) {
    super('dry run');
  }
}

/**
 * What allocateAssets would grant now, computed by the same code in a transaction rolled back.
 * With `provisionalName`, for a node not registered yet: it exists only inside that transaction.
 */
export async function previewAllocation(db: Db, request: AllocationRequest, policy: AllocationPolicy, now: number, provisionalName?: string): Promise<AllocationOutcome> {
  try {
    await db.transaction().execute(async (trx) => {
      const nodeId = provisionalName === undefined ? request.nodeId : await insertProvisionalNode(trx, provisionalName, now);
      const { granted, refusal } = await claim(trx, { ...request, nodeId }, policy, now, { lock: 'none', lockHosts: false, writesTogether: false });
      throw new DryRun({ granted, refusal });
    });
  } catch (error) {
    if (error instanceof DryRun) return error.outcome;
    throw error;
  }
  throw new Error('unreachable: the dry run always rolls back');
}

async function insertProvisionalNode(trx: Db, name: string, now: number): Promise<number> {
  const row = await trx
    .insertInto('nodes')
    .values({ name, hostname: name, ip: null, ssh_port: null, status: 'unknown', free_bytes: null, free_reported_at: null, last_heartbeat_at: null, probe_failures: 0, bandwidth_bps: null, tags: '{}', token_hash: null, created_at: now, bytes_in_flight: null, ssh_host_key: null, ssh_user: null, probed_at: null, quarantined_at: null, quarantine_reason: null, window_from: null, window_until: null })
    .returning('id')
    .executeTakeFirstOrThrow();
  return row.id;
}

async function topUp(db: Db, dialect: Dialect, request: AllocationRequest, policy: AllocationPolicy, now: number, first: PassResult): Promise<AllocationOutcome> {
  const missing = request.maxAssets - first.granted.length;
  if (first.refusal || !first.ranDry || missing <= 0) return { granted: first.granted, refusal: first.refusal };
  const unknownTaken = first.granted.filter((asset) => asset.sizeBytes === null).length;
  try {
    const second = await db.transaction().execute((trx) =>
      claim(
        trx,
        { ...request, maxAssets: missing },
        { ...policy, unknownSizeMaxPerRequest: Math.max(0, policy.unknownSizeMaxPerRequest - unknownTaken) },
        now,
        { lock: 'wait', lockHosts: true, writesTogether: dialect.hasWritableCtes },
      ),
    );
    return { granted: [...first.granted, ...second.granted] };
  } catch {
    // A deadlock between two waiting passes, or the database gone: the first pass's grants are
    // committed, so they are the answer; the node asks again for the rest.
    return { granted: first.granted };
  }
}

type NodeState = NonNullable<Awaited<ReturnType<typeof recordReports>>[number]>;

/**
 * Records each request's free-space report and reads its node's state, in one statement that also
 * takes the nodes' row locks (PostgreSQL, in id order), so a node's budget cannot be spent twice.
 */
async function recordReports(trx: Db, requests: AllocationRequest[], now: number, lock: LockMode) {
  const ids = requests.map((request) => request.nodeId);
  const reports = requests.filter((request) => request.freeBytes !== null);
  const [first] = requests;
  const single = requests.length === 1 && first !== undefined;
  return trx
    .updateTable('nodes')
    .set((eb) => {
      if (reports.length === 0) return { free_bytes: eb.ref('free_bytes') };
      if (single) return { free_bytes: first.freeBytes, free_reported_at: now };
      return {
        free_bytes: sql<number>`case id ${sql.join(reports.map((request) => sql`when ${request.nodeId} then ${request.freeBytes}`), sql` `)} else free_bytes end`,
        free_reported_at: sql<number>`case when id in (${sql.join(reports.map((request) => request.nodeId))}) then ${now} else free_reported_at end`,
      };
    })
    .$if(single, (query) => query.where('id', '=', ids[0] as number))
    .$if(!single && lock === 'none', (query) => query.where('id', 'in', ids))
    .$if(!single && lock !== 'none', (query) =>
      query.where('id', 'in', (eb) => eb.selectFrom('nodes').select('id').where('id', 'in', ids).orderBy('id').forUpdate()),
    )
    .returning(['id', 'free_bytes', 'free_reported_at', 'reserved_bytes', 'bandwidth_bps', 'strikes', 'draining', 'tags', 'window_from', 'window_until'])
    .execute();
}

function refusalOf(node: NodeState, policy: AllocationPolicy, now: number): Refusal | undefined {
  if (node.draining) return 'draining';
  // A node lent only in schedule windows (node-window) gets work inside the current one, leased to end with it.
  if (node.window_until !== null && !((node.window_from ?? 0) <= now && now < node.window_until)) return 'outside_window';
  if (node.strikes >= policy.maxStrikes) return 'throttled';
  if (node.free_bytes === null || node.free_reported_at === null || now - node.free_reported_at > policy.freeSpaceTtlMs) return 'stale_free_space';
  return undefined;
}

/** What a node may take now: undefined when its reservations leave it no room. */
interface Allowance {
  budget: number;
  maxAssets: number;
  unknownCap: number;
  /** Its value of the spread tag. */
  spreadValue: string | undefined;
  expiryFor(bytes: number): number;
}

function allowanceOf(node: NodeState, request: AllocationRequest, policy: AllocationPolicy, now: number): Allowance | undefined {
  const budget = (node.free_bytes ?? 0) - node.reserved_bytes;
  if (budget <= 0) return undefined;
  // Each strike halves what the node may take in one request.
  const maxAssets = Math.max(1, Math.floor(request.maxAssets / 2 ** node.strikes));
  const unknownCap = policy.unknownSizeEstimateBytes <= budget ? Math.min(policy.unknownSizeMaxPerRequest, maxAssets) : 0;
  const windowEnd = node.window_until ?? Number.MAX_SAFE_INTEGER;
  return {
    budget,
    maxAssets,
    unknownCap,
    spreadValue: tagValue(node.tags, policy.spreadTag),
    expiryFor: (bytes) => Math.min(now + leaseFor(bytes, node.bandwidth_bps, policy), windowEnd),
  };
}

/** One request's claim, inside the caller's transaction. */
async function claim(trx: Db, request: AllocationRequest, policy: AllocationPolicy, now: number, style: PassStyle): Promise<PassResult> {
  const { lock } = style;
  const [node] = await recordReports(trx, [request], now, lock);
  if (!node) return { granted: [], ranDry: false };
  const refusal = refusalOf(node, policy, now);
  if (refusal) return { granted: [], ranDry: false, refusal };
  const allowance = allowanceOf(node, request, policy, now);
  if (!allowance) return { granted: [], ranDry: false };

  const { budget, maxAssets, unknownCap } = allowance;
  const knownLimit = Math.min(maxAssets * 3, 1000);
  const range = priorityRange(request);
  const { known, unknown } = await selectCandidates(trx, { range, lock, budget, limits: { known: knownLimit, unknown: unknownCap }, hostCap: policy.sourceHostMaxActive, now }, request.nodeId);
  const merged = mergeInAllocationOrder(known, unknown);
  const ties = allowance.spreadValue === undefined ? new Map<string, Ties>() : await holdersOf(trx, merged.filter((candidate) => candidate.holders > 0), policy.spreadTag);
  const ordered = spreadAcrossTag(merged, ties, allowance.spreadValue);
  let picked = pickWithinBudget(ordered, budget, maxAssets, { estimate: policy.unknownSizeEstimateBytes, maxUnknown: unknownCap }, hostRoomOf(merged, policy.sourceHostMaxActive));
  const ranDry = picked.length < maxAssets && known.length < knownLimit;
  if (lock === 'wait' && picked.length > 0) {
    const stillFree = await lockInIdOrder(trx, picked.map(({ asset }) => asset.id));
    picked = picked.filter(({ asset }) => stillFree.has(asset.id));
  }
  if (picked.length === 0) return { granted: [], ranDry };
  const grants = await keepWithinHostCaps(trx, picked.map((pick) => ({ request, ...pick, expiresAt: allowance.expiryFor(pick.reservedBytes) })), policy.sourceHostMaxActive, style);
  return { granted: await grant(trx, grants, now, style), ranDry };
}

interface Entry {
  request: AllocationRequest;
  refusal?: Refusal;
  allowance?: Allowance;
  picked: { asset: Candidate; reservedBytes: number }[];
}

/** Several requests of distinct nodes, in node id order, served from one shared candidate list. */
async function claimTogether(trx: Db, requests: AllocationRequest[], policy: AllocationPolicy, now: number, style: PassStyle): Promise<PassResult[]> {
  const { lock } = style;
  const nodes = new Map((await recordReports(trx, requests, now, lock)).map((node) => [node.id, node]));
  const entries: Entry[] = requests.map((request) => {
    const node = nodes.get(request.nodeId);
    return { request, refusal: node && refusalOf(node, policy, now), picked: [] };
  });
  const open = entries.filter((entry) => nodes.has(entry.request.nodeId) && !entry.refusal);
  if (open.length === 0) return entries.map(({ refusal }) => ({ granted: [], ranDry: false, refusal }));
  for (const entry of open) entry.allowance = allowanceOf(nodes.get(entry.request.nodeId) as NodeState, entry.request, policy, now);
  const served = open.filter((entry): entry is Entry & { allowance: Allowance } => entry.allowance !== undefined);
  if (served.length === 0) return entries.map(({ refusal }) => ({ granted: [], ranDry: false, refusal }));

  // One list for all: the first of each request's own list, cut where together they would surely be full.
  const range = {
    minPriority: Math.min(...served.map(({ request }) => request.minPriority)),
    maxPriority: Math.max(...served.map(({ request }) => priorityRange(request).maxPriority)),
  };
  const widest = Math.max(...served.map(({ allowance }) => allowance.budget));
  const knownLimit = Math.min(served.reduce((sum, { allowance }) => sum + allowance.maxAssets, 0) + 10, 1000);
  const unknownLimit = Math.min(served.reduce((sum, { allowance }) => sum + allowance.unknownCap, 0), 1000);
  const { known, unknown } = await selectCandidates(trx, { range, lock, budget: widest, limits: { known: knownLimit, unknown: unknownLimit }, hostCap: policy.sourceHostMaxActive, now });
  const candidates = mergeInAllocationOrder(known, unknown);
  const cut = known.length === knownLimit || (unknownLimit > 0 && unknown.length === unknownLimit);

  const ties = await holdersOf(trx, candidates.filter((candidate) => candidate.holders > 0 || candidate.source_errors > 0), policy.spreadTag);
  const waiting = await coolingDown(
    trx,
    candidates.filter((candidate) => candidate.retry_failures > 0).map((candidate) => candidate.id),
    served.map(({ request }) => request.nodeId),
    now,
  );
  const hostRoom = hostRoomOf(candidates, policy.sourceHostMaxActive);
  const taken = new Map<string, number>();
  const grants: Grant[] = [];
  for (const entry of served) {
    const { request, allowance } = entry;
    const { minPriority, maxPriority } = priorityRange(request);
    const eligible = candidates
      .filter((asset) => {
        const tie = ties.get(asset.id);
        return (
          asset.priority >= minPriority &&
          asset.priority <= maxPriority &&
          asset.holders + (taken.get(asset.id) ?? 0) < asset.replicas_target &&
          !tie?.holders.has(request.nodeId) &&
          !(asset.source_errors > 0 && tie?.sourceGone.has(request.nodeId)) &&
          !waiting.get(asset.id)?.has(request.nodeId)
        );
      })
      // Ordered by the holders counts as this request sees them, after the grants before it.
      .map((asset) => ({ ...asset, holders: asset.holders + (taken.get(asset.id) ?? 0) }))
      .sort(compareAllocationOrder);
    const ordered = spreadAcrossTag(eligible, ties, allowance.spreadValue);
    entry.picked = pickWithinBudget(ordered, allowance.budget, allowance.maxAssets, { estimate: policy.unknownSizeEstimateBytes, maxUnknown: allowance.unknownCap }, hostRoom);
    for (const { asset, reservedBytes: bytes } of entry.picked) {
      taken.set(asset.id, (taken.get(asset.id) ?? 0) + 1);
      const tie = ties.get(asset.id) ?? { holders: new Set<number>(), sourceGone: new Set<number>(), spreadValues: [] };
      tie.holders.add(request.nodeId);
      tie.spreadValues.push(allowance.spreadValue);
      ties.set(asset.id, tie);
      grants.push({ request, asset, reservedBytes: bytes, expiresAt: allowance.expiryFor(bytes) });
    }
  }
  const kept = await keepWithinHostCaps(trx, grants, policy.sourceHostMaxActive, style);
  const granted = await grant(trx, kept, now, style);

  const results: PassResult[] = [];
  for (const entry of entries) {
    const mine = granted.filter((_, index) => (kept[index] as Grant).request === entry.request);
    const missing = entry.allowance ? entry.allowance.maxAssets - mine.length : 0;
    if (missing <= 0 || !entry.allowance) {
      results.push({ granted: mine, ranDry: false, refusal: entry.refusal });
    } else if (!cut) {
      // The list held every claimable asset in reach but rows locked by others (PostgreSQL).
      results.push({ granted: mine, ranDry: lock !== 'none' });
    } else {
      const unknownTaken = entry.picked.filter(({ asset }) => asset.size_bytes === null).length;
      const more = await claim(
        trx,
        { ...entry.request, freeBytes: null, maxAssets: missing },
        { ...policy, unknownSizeMaxPerRequest: Math.max(0, entry.allowance.unknownCap - unknownTaken) },
        now,
        style,
      );
      results.push({ granted: [...mine, ...more.granted], ranDry: more.ranDry });
    }
  }
  return results;
}

interface Ties {
  /** Nodes with an active claim or a copy. */
  holders: Set<number>;
  /** Nodes that found the source gone. */
  sourceGone: Set<number>;
  /** The spread tag's value on each holder. */
  spreadValues: (string | undefined)[];
}

/** For candidates that some node holds or found gone: which nodes, and their spread tag values. */
async function holdersOf(trx: Db, candidates: Candidate[], spreadTag: string): Promise<Map<string, Ties>> {
  const ties = new Map<string, Ties>();
  if (candidates.length === 0) return ties;
  const rows = await trx
    .selectFrom('allocations')
    .innerJoin('nodes', 'nodes.id', 'allocations.node_id')
    .select(['allocations.asset_id', 'allocations.node_id', 'allocations.state', 'allocations.end_reason', 'nodes.tags'])
    .where(
      'allocations.asset_id',
      'in',
      candidates.map((candidate) => candidate.id),
    )
    .where((eb) =>
      eb.or([
        eb('allocations.state', 'in', [sql.lit<AllocationState>('active'), sql.lit<AllocationState>('completed')]),
        sql<boolean>`end_reason like 'source_gone:%'`,
      ]),
    )
    .execute();
  for (const row of rows) {
    const tie = ties.get(row.asset_id) ?? { holders: new Set<number>(), sourceGone: new Set<number>(), spreadValues: [] };
    if (row.state === 'active' || row.state === 'completed') {
      tie.holders.add(row.node_id);
      tie.spreadValues.push(tagValue(row.tags, spreadTag));
    }
    if (row.end_reason?.startsWith('source_gone:')) tie.sourceGone.add(row.node_id);
    ties.set(row.asset_id, tie);
  }
  return ties;
}

function priorityRange(request: AllocationRequest): { minPriority: number; maxPriority: number } {
  return { minPriority: request.minPriority, maxPriority: request.maxPriority ?? 10 };
}

function tagValue(tags: string, key: string): string | undefined {
  const value = (JSON.parse(tags) as Record<string, unknown>)[key];
  return typeof value === 'string' ? value : undefined;
}

/**
 * Puts candidates that already have a copy or claim on a node with the same tag value (say, the
 * same region) after the others, keeping allocation order within each group: copies spread where
 * possible, and still go to this node when nothing else is left.
 */
function spreadAcrossTag(candidates: Candidate[], ties: Map<string, Ties>, value: string | undefined): Candidate[] {
  if (value === undefined) return candidates;
  const crowded = (candidate: Candidate) => candidate.holders > 0 && ties.get(candidate.id)?.spreadValues.includes(value) === true;
  return [...candidates.filter((candidate) => !crowded(candidate)), ...candidates.filter(crowded)];
}

interface Grant {
  request: AllocationRequest;
  asset: Candidate;
  reservedBytes: number;
  expiresAt: number;
}

/** Inserts the allocations, counts them in holders and records one event each; results in the grants' order. */
async function grant(trx: Db, grants: Grant[], now: number, style: PassStyle): Promise<GrantedAsset[]> {
  if (grants.length === 0) return [];
  const inserted = style.writesTogether ? await writeGrantsTogether(trx, grants, now) : await writeGrantsApart(trx, grants, now);
  const allocationIdOf = allocationIds(inserted);
  return grants.map((entry) => ({
    allocationId: allocationIdOf(entry),
    id: entry.asset.id,
    name: entry.asset.name,
    url: entry.asset.url,
    sizeBytes: entry.asset.size_bytes,
    priority: entry.asset.priority,
    sha256: entry.asset.sha256,
    reservedBytes: entry.reservedBytes,
    expiresAt: entry.expiresAt,
  }));
}

interface InsertedAllocation {
  id: number;
  asset_id: string;
  node_id: number;
}

/** Each grant's allocation id, from the inserted rows (one per asset and node). */
function allocationIds(inserted: InsertedAllocation[]): (grant: Grant) => number {
  const ids = new Map(inserted.map((row) => [`${row.asset_id} ${row.node_id}`, row.id]));
  return ({ asset, request }) => ids.get(`${asset.id} ${request.nodeId}`) as number;
}

const GRANTED = 'allocation.granted';

function grantedEventData({ asset, request, reservedBytes, expiresAt }: Grant) {
  return { asset_id: asset.id, node_id: request.nodeId, reserved_bytes: reservedBytes, expires_at: expiresAt };
}

/** One statement per table: the INSERT, the holders increments (changeHolders), the events. */
async function writeGrantsApart(trx: Db, grants: Grant[], now: number): Promise<InsertedAllocation[]> {
  const inserted = await trx
    .insertInto('allocations')
    .values(
      grants.map(({ request, asset, reservedBytes, expiresAt }) => ({
        asset_id: asset.id,
        node_id: request.nodeId,
        state: 'active' as const,
        reserved_bytes: reservedBytes,
        created_at: now,
        expires_at: expiresAt,
        verified: 0,
        source_host: asset.source_host,
      })),
    )
    .returning(['id', 'asset_id', 'node_id'])
    .execute();
  // An asset granted to several nodes of a batch gains several holders.
  await changeHolders(trx, grants.map(({ asset }) => asset.id), 1);
  const allocationIdOf = allocationIds(inserted);
  await appendEvents(
    trx,
    now,
    grants.map((entry) => ({
      actor: entry.request.actor,
      kind: GRANTED,
      subjectType: 'allocation',
      subjectId: allocationIdOf(entry),
      data: grantedEventData(entry),
    })),
  );
  return inserted;
}

/**
 * The same three writes as data-modifying WITH queries of one statement: one round trip instead
 * of three. The grants travel as arrays, so the SQL text is the same for any number of them and
 * stays one prepared statement. Rows are inserted in the grants' order.
 */
async function writeGrantsTogether(trx: Db, grants: Grant[], now: number): Promise<InsertedAllocation[]> {
  const column = <T>(value: (grant: Grant) => T) => grants.map(value);
  const { rows } = await sql<InsertedAllocation>`
    with granted as (
      insert into allocations (asset_id, node_id, state, reserved_bytes, created_at, expires_at, verified, source_host)
      select g.asset_id, g.node_id, 'active', g.reserved_bytes, ${now}::bigint, g.expires_at, 0, g.source_host
      from unnest(${column((g) => g.asset.id)}::text[], ${column((g) => g.request.nodeId)}::bigint[],
                  ${column((g) => g.reservedBytes)}::bigint[], ${column((g) => g.expiresAt)}::bigint[],
                  ${column((g) => g.asset.source_host)}::text[])
        with ordinality as g(asset_id, node_id, reserved_bytes, expires_at, source_host, position)
      order by g.position
      returning id, asset_id, node_id
    ), counted as (
      update assets set holders = holders + c.grants
      from (select asset_id, count(*)::int as grants from granted group by asset_id) as c
      where assets.id = c.asset_id
    ), logged as (
      insert into events (at, actor, kind, subject_type, subject_id, data)
      select ${now}::bigint, e.actor, ${GRANTED}, 'allocation', granted.id::text, e.data
      from unnest(${column((g) => g.asset.id)}::text[], ${column((g) => g.request.nodeId)}::bigint[],
                  ${column((g) => g.request.actor)}::text[], ${column((g) => JSON.stringify(grantedEventData(g)))}::text[])
        with ordinality as e(asset_id, node_id, actor, data, position)
      join granted using (asset_id, node_id)
      order by e.position
    )
    select id, asset_id, node_id from granted`.execute(trx);
  return rows;
}

/** The requesting node's allocations of the candidate asset, for EXISTS tests. */
function thisNodesAllocations(eb: ExpressionBuilder<Database, 'assets'>, nodeId: number) {
  return eb.selectFrom('allocations').select(sql.lit(1).as('one')).whereRef('allocations.asset_id', '=', 'assets.id').where('allocations.node_id', '=', nodeId);
}

interface CandidateQuery {
  range: { minPriority: number; maxPriority: number };
  lock: LockMode;
  budget: number;
  limits: { known: number; unknown: number };
  /** SOURCE_HOST_MAX_ACTIVE: hosts at it are left out; 0 counts nothing. */
  hostCap: number;
  now: number;
}

/**
 * Candidates of known size that fit the budget, and of unknown size, up to a limit each, in one
 * statement (one round trip). Each list comes straight off a partial index in allocation order
 * (`assets_claimable`, `assets_claimable_unknown_size`).
 */
async function selectCandidates(
  trx: Db,
  query: CandidateQuery,
  /** Leave out what this node holds, found gone or must wait for; a shared list leaves that to the caller. */
  forNode?: number,
): Promise<{ known: Candidate[]; unknown: Candidate[] }> {
  const list = (size: 'known' | 'unknown') => candidateList(trx, query, size, forNode);
  const rows =
    query.limits.unknown > 0
      ? await trx
          .with('known', () => list('known'))
          .with('unknown', () => list('unknown'))
          .selectFrom('known')
          .selectAll()
          .unionAll((eb) => eb.selectFrom('unknown').selectAll())
          .execute()
      : await list('known').execute();
  // UNION ALL does not promise to keep each list's order: restore allocation order.
  if (query.limits.unknown > 0) rows.sort(compareAllocationOrder);
  const candidates = rows.map((row) => ({ ...row, host_active: Number(row.host_active) }));
  return { known: candidates.filter((row) => row.size_bytes !== null), unknown: candidates.filter((row) => row.size_bytes === null) };
}

function candidateList(db: Db, { range, lock, budget, limits, hostCap, now }: CandidateQuery, size: 'known' | 'unknown', forNode: number | undefined) {
  let query = db
    .selectFrom('assets')
    .select(['id', 'name', 'url', 'size_bytes', 'priority', 'holders', 'first_seen_at', 'sha256', 'replicas_target', 'source_errors', 'retry_failures', 'source_host'])
    .select(
      hostCap > 0
        ? sql<number>`(select count(*) from allocations as host_allocations where host_allocations.state = 'active' and host_allocations.source_host = assets.source_host)`.as('host_active')
        : sql<number>`0`.as('host_active'),
    )
    // Written exactly as the partial indexes' predicates, so the planner can use them.
    .where(sql<boolean>`state = 'pending' and holders < replicas_target`)
    .where('priority', '>=', range.minPriority)
    .where('priority', '<=', range.maxPriority)
    // Hosts that asked the fleet to wait, or already serve SOURCE_HOST_MAX_ACTIVE allocations: one
    // small set, read once per statement.
    .where((eb) => eb.or([eb('source_host', 'is', null), eb('source_host', 'not in', blockedHosts(db, hostCap, now))]))
    .orderBy('priority', 'desc')
    .orderBy('holders', 'asc')
    .orderBy('first_seen_at', 'asc')
    .orderBy('id', 'asc')
    .limit(limits[size]);
  if (forNode !== undefined) {
    query = query
      .where((eb) =>
        eb.not(
          eb.exists(
            // Literal states: a bound parameter hides the partial index allocations_one_per_node
            // from the planner, which then walks every allocation of the node.
            thisNodesAllocations(eb, forNode).where('allocations.state', 'in', [sql.lit<AllocationState>('active'), sql.lit<AllocationState>('completed')]),
          ),
        ),
      )
      // A node never gets back an asset whose source it found gone; only the rare assets with
      // source errors pay for this subquery.
      .where((eb) =>
        eb.or([
          eb('source_errors', '=', 0),
          // Written as the partial index allocations_source_gone's predicate, so the planner uses it.
          eb.not(eb.exists(thisNodesAllocations(eb, forNode).where(sql<boolean>`end_reason like 'source_gone:%'`))),
        ]),
      )
      // Nor one it failed before its cooldown is over; only assets with failures pay for this.
      .where((eb) =>
        eb.or([
          eb('retry_failures', '=', 0),
          eb.not(
            eb.exists(
              eb
                .selectFrom('retry_cooldowns')
                .select(sql.lit(1).as('one'))
                .whereRef('retry_cooldowns.asset_id', '=', 'assets.id')
                .where('retry_cooldowns.node_id', '=', forNode)
                .where('retry_cooldowns.retry_at', '>', now),
            ),
          ),
        ]),
      );
  }
  query = size === 'known' ? query.where(sql<boolean>`size_bytes is not null`).where('size_bytes', '<=', budget) : query.where(sql<boolean>`size_bytes is null`);
  if (lock === 'skip-locked') query = query.forUpdate('assets').skipLocked();
  return query;
}

/** Paused hosts, and with a cap the hosts at it (from the index of active allocations by host). */
function blockedHosts(db: Db, hostCap: number, now: number) {
  const paused = db.selectFrom('source_hosts').select('host').where('paused_until', '>', now);
  if (hostCap <= 0) return paused;
  return paused.unionAll(
    db
      .selectFrom('allocations as full_hosts')
      .select(sql<string>`full_hosts.source_host`.as('host'))
      .where(sql<boolean>`full_hosts.state = 'active'`)
      .where('full_hosts.source_host', 'is not', null)
      .groupBy('full_hosts.source_host')
      .having(sql<number>`count(*)`, '>=', hostCap),
  );
}

/** What each candidate's host may still take, from the counts read with the candidates; undefined without a cap. */
function hostRoomOf(candidates: Candidate[], hostCap: number): Map<string, number> | undefined {
  if (hostCap <= 0) return undefined;
  const room = new Map<string, number>();
  for (const candidate of candidates) if (candidate.source_host !== null) room.set(candidate.source_host, hostCap - candidate.host_active);
  return room;
}

/**
 * The per-host cap under concurrency (PostgreSQL): the hosts' rows are locked in host order, then
 * their active allocations counted again, now that transactions granting on them before have
 * committed; grants past the cap are dropped (the node asks again). SQLite has one writer, and
 * the counts read with the candidates are already exact.
 */
async function keepWithinHostCaps(trx: Db, grants: Grant[], hostCap: number, style: PassStyle): Promise<Grant[]> {
  if (hostCap <= 0 || !style.lockHosts) return grants;
  const hosts = [...new Set(grants.map(({ asset }) => asset.source_host).filter((host): host is string => host !== null))];
  if (hosts.length === 0) return grants;
  await lockSourceHosts(trx, hosts);
  const active = await activeByHost(trx, hosts);
  return grants.filter(({ asset }) => {
    if (asset.source_host === null) return true;
    const count = active.get(asset.source_host) ?? 0;
    if (count >= hostCap) return false;
    active.set(asset.source_host, count + 1);
    return true;
  });
}

/**
 * Waits for the row locks of the chosen assets, taken in id order so two waiting passes cannot
 * deadlock, and returns those still free: PostgreSQL re-checks the WHERE clause on each row's
 * latest version once its lock is released.
 */
async function lockInIdOrder(trx: Db, ids: string[]): Promise<Set<string>> {
  const rows = await trx
    .selectFrom('assets')
    .select('id')
    .where('id', 'in', ids)
    .where('state', '=', 'pending')
    .whereRef('holders', '<', 'replicas_target')
    .orderBy('id')
    .forUpdate()
    .execute();
  return new Set(rows.map((row) => row.id));
}

function compareAllocationOrder(a: Candidate, b: Candidate): number {
  return b.priority - a.priority || a.holders - b.holders || a.first_seen_at - b.first_seen_at || (a.id < b.id ? -1 : a.id > b.id ? 1 : 0);
}

function mergeInAllocationOrder(known: Candidate[], unknown: Candidate[]): Candidate[] {
  return unknown.length === 0 ? known : [...known, ...unknown].sort(compareAllocationOrder);
}

/**
 * Greedy in allocation order: take each candidate that still fits, up to the count and unknown-size
 * caps and what its source host may still take (`hostRoom`, shared by the requests of a batch).
 */
function pickWithinBudget(
  candidates: Candidate[],
  budget: number,
  maxAssets: number,
  unknownSize: { estimate: number; maxUnknown: number },
  hostRoom: Map<string, number> | undefined,
): { asset: Candidate; reservedBytes: number }[] {
  const picked: { asset: Candidate; reservedBytes: number }[] = [];
  let remaining = budget;
  let unknownTaken = 0;
  for (const asset of candidates) {
    if (picked.length >= maxAssets) break;
    const isUnknown = asset.size_bytes === null;
    const bytes = asset.size_bytes ?? unknownSize.estimate;
    if (bytes > remaining || (isUnknown && unknownTaken >= unknownSize.maxUnknown)) continue;
    const room = asset.source_host === null ? undefined : hostRoom?.get(asset.source_host);
    if (room !== undefined && room <= 0) continue;
    if (room !== undefined) hostRoom?.set(asset.source_host as string, room - 1);
    picked.push({ asset, reservedBytes: bytes });
    remaining -= bytes;
    if (isUnknown) unknownTaken += 1;
  }
  return picked;
}
