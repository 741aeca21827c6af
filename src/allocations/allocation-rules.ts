import { belowAuditScore } from '../audits/audit-score.js';
import type { Config } from '../config.js';
import type { NodeRow } from '../nodes/nodes.table.js';
import { leaseFor, type LeasePolicy } from './lease.js';

// The allocation rules, without the database: who may get what, how much, in which order.

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
  /** AUDIT_SCORE_MIN: a node below it gets no new work; 0: never. */
  auditScoreMin: number;
  /** DISTINCT_OPERATORS: grants record the node's operator, who then gets no second copy of an asset. */
  distinctOperators: boolean;
  /** VETTING_AUDITS: a node that has not passed them is new (0: none is). */
  vettingAudits: number;
  /** VETTING_MAX_ASSETS: what a new node holds at once. */
  vettingMaxAssets: number;
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
    auditScoreMin: config.auditScoreMin,
    distinctOperators: config.distinctOperators,
    vettingAudits: config.vettingAudits,
    vettingMaxAssets: config.vettingMaxAssets,
  };
}

/** Why a node got nothing although it asked: the route turns each into a clear error. */
export type Refusal = 'draining' | 'throttled' | 'audit_score_low' | 'vetting_full' | 'stale_free_space' | 'outside_window';

export interface Candidate {
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

/**
 * What a claim reads of the requesting node (from the UPDATE that records its report), and, for a
 * node being vetted, how many allocations it holds.
 */
export type NodeState = { active_allocations?: number } & Pick<
  NodeRow,
  | 'id'
  | 'free_bytes'
  | 'free_reported_at'
  | 'reserved_bytes'
  | 'bandwidth_bps'
  | 'strikes'
  | 'draining'
  | 'tags'
  | 'window_from'
  | 'window_until'
  | 'audits_passed'
  | 'audits_failed'
  | 'operator_id'
  | 'vetted_at'
>;

/** Whether the node is new: its copies wait for its vetting, and it holds little at once. */
export function isVetting(node: Pick<NodeState, 'vetted_at'>, policy: Pick<AllocationPolicy, 'vettingAudits'>): boolean {
  return policy.vettingAudits > 0 && node.vetted_at === null;
}

/** Who already has a candidate asset: the nodes holding it, those that found its source gone, and their spread tag values. */
export interface AssetHolders {
  /** Nodes with an active claim or a copy. */
  holders: Set<number>;
  /** The operators their grants recorded (DISTINCT_OPERATORS). */
  operators: Set<number>;
  /** Nodes that found the source gone. */
  sourceGone: Set<number>;
  /** The spread tag's value on each holder. */
  spreadValues: (string | undefined)[];
}

export interface Grant {
  request: AllocationRequest;
  asset: Candidate;
  reservedBytes: number;
  expiresAt: number;
  /** The operator the allocation records (Allowance.operatorId). */
  operatorId: number | null;
}

export function refusalOf(node: NodeState, policy: AllocationPolicy, now: number): Refusal | undefined {
  if (node.draining) return 'draining';
  // A node lent only in schedule windows (node-window) gets work inside the current one, leased to end with it.
  if (node.window_until !== null && !((node.window_from ?? 0) <= now && now < node.window_until)) return 'outside_window';
  if (node.strikes >= policy.maxStrikes) return 'throttled';
  if (belowAuditScore({ passed: node.audits_passed, failed: node.audits_failed }, policy.auditScoreMin)) return 'audit_score_low';
  if (isVetting(node, policy) && (node.active_allocations ?? 0) >= policy.vettingMaxAssets) return 'vetting_full';
  if (node.free_bytes === null || node.free_reported_at === null || now - node.free_reported_at > policy.freeSpaceTtlMs) return 'stale_free_space';
  return undefined;
}

/** What a node may take now (allowanceOf: undefined when its reservations leave it no room). */
export interface Allowance {
  budget: number;
  maxAssets: number;
  unknownCap: number;
  /** Its value of the spread tag. */
  spreadValue: string | undefined;
  /** The operator its grants record, who may hold one copy of an asset: with DISTINCT_OPERATORS, its node's; else none. */
  operatorId: number | null;
  expiryFor(bytes: number): number;
}

export function allowanceOf(node: NodeState, request: AllocationRequest, policy: AllocationPolicy, now: number): Allowance | undefined {
  const budget = (node.free_bytes ?? 0) - node.reserved_bytes;
  if (budget <= 0) return undefined;
  // Each strike halves what the node may take in one request; a new node tops up to its vetting cap.
  const halved = Math.max(1, Math.floor(request.maxAssets / 2 ** node.strikes));
  const maxAssets = isVetting(node, policy) ? Math.max(1, Math.min(halved, policy.vettingMaxAssets - (node.active_allocations ?? 0))) : halved;
  const unknownCap = policy.unknownSizeEstimateBytes <= budget ? Math.min(policy.unknownSizeMaxPerRequest, maxAssets) : 0;
  const windowEnd = node.window_until ?? Number.MAX_SAFE_INTEGER;
  return {
    budget,
    maxAssets,
    unknownCap,
    spreadValue: tagValue(node.tags, policy.spreadTag),
    operatorId: policy.distinctOperators ? node.operator_id : null,
    expiryFor: (bytes) => Math.min(now + leaseFor(bytes, node.bandwidth_bps, policy), windowEnd),
  };
}

/** The candidate list of one request: up to three times what it may take, of known size, and its unknown-size cap. */
export function ownListOf(request: AllocationRequest, allowance: Allowance): CandidateList {
  return { range: priorityRange(request), budget: allowance.budget, limits: { known: Math.min(allowance.maxAssets * 3, 1000), unknown: allowance.unknownCap } };
}

/**
 * One list for all, long enough that each request finds in it the whole list its own claim would
 * read (ownListOf) after the requests before it took theirs: what they take, plus the longest own
 * list, plus a margin for candidates some requests may not take. A request that still finds too
 * few gets its own claim (pickTogether).
 */
export function sharedListOf(served: ServedRequest[]): CandidateList {
  const own = served.map(({ request, allowance }) => ownListOf(request, allowance).limits);
  const sum = (values: number[]) => values.reduce((total, value) => total + value, 0);
  return {
    range: {
      minPriority: Math.min(...served.map(({ request }) => request.minPriority)),
      maxPriority: Math.max(...served.map(({ request }) => priorityRange(request).maxPriority)),
    },
    budget: Math.max(...served.map(({ allowance }) => allowance.budget)),
    limits: {
      known: Math.min(sum(served.map(({ allowance }) => allowance.maxAssets)) + Math.max(...own.map((limits) => limits.known)) + 10, 1000),
      unknown: Math.min(sum(served.map(({ allowance }) => allowance.unknownCap)) + Math.max(...own.map((limits) => limits.unknown)), 1000),
    },
  };
}

export interface CandidateList {
  range: { minPriority: number; maxPriority: number };
  /** Known sizes above it are left out. */
  budget: number;
  limits: { known: number; unknown: number };
}

/** A request of a batch, with what its node's state decided: refused, no room, or an allowance. */
export interface BatchRequest {
  request: AllocationRequest;
  refusal?: Refusal;
  allowance?: Allowance;
}

export type ServedRequest = BatchRequest & { allowance: Allowance };

/** Each request of a batch judged against its node's state; a request of an unknown node gets neither. */
export function judgeRequests(requests: AllocationRequest[], nodes: Map<number, NodeState>, policy: AllocationPolicy, now: number): BatchRequest[] {
  return requests.map((request) => {
    const node = nodes.get(request.nodeId);
    if (!node) return { request };
    const refusal = refusalOf(node, policy, now);
    return refusal ? { request, refusal } : { request, allowance: allowanceOf(node, request, policy, now) };
  });
}

/**
 * Whether a request of a batch may get a candidate from the shared list: in its priority range,
 * below the target counting the batch's earlier grants (`taken`), not held by its node, not found
 * gone by it, not cooling down for it. The single claim's SQL applies the same rules.
 */
export function isEligible(
  asset: Candidate,
  request: AllocationRequest,
  operatorId: number | null,
  held: AssetHolders | undefined,
  taken: number,
  waiting: Map<string, Set<number>>,
): boolean {
  const { minPriority, maxPriority } = priorityRange(request);
  return (
    asset.priority >= minPriority &&
    asset.priority <= maxPriority &&
    asset.holders + taken < asset.replicas_target &&
    !held?.holders.has(request.nodeId) &&
    !(operatorId !== null && held?.operators.has(operatorId)) &&
    !(asset.source_errors > 0 && held?.sourceGone.has(request.nodeId)) &&
    !waiting.get(asset.id)?.has(request.nodeId)
  );
}

/**
 * The grants of a batch from one shared list, request after request (node id order): each sees
 * the holders and host room the grants before it made, as if it came after them, and picks
 * from exactly the candidates its own claim would read then (ownListOf: its first eligible ones
 * of known size within its budget, and of unknown size). When the shared list was cut (`cut`)
 * before it held all of those for a request, that request and the ones after it are left to
 * their own claims, in order: `served` says how many requests the grants are for. `fullLists`:
 * the requests whose own claim would have read a full list of known sizes (no second look then).
 */
export function pickTogether(
  served: ServedRequest[],
  candidates: Candidate[],
  seen: { heldBy: Map<string, AssetHolders>; waiting: Map<string, Set<number>>; hostRoom: Map<string, number> | undefined },
  policy: Pick<AllocationPolicy, 'unknownSizeEstimateBytes'>,
  cut: { known: boolean; unknown: boolean } = { known: false, unknown: false },
): { grants: Grant[]; served: number; fullLists: Set<AllocationRequest> } {
  const heldBy = new Map(
    [...seen.heldBy].map(([id, held]) => [
      id,
      { holders: new Set(held.holders), operators: new Set(held.operators), sourceGone: held.sourceGone, spreadValues: [...held.spreadValues] },
    ]),
  );
  const hostRoom = seen.hostRoom && new Map(seen.hostRoom);
  const taken = new Map<string, number>();
  const grants: Grant[] = [];
  const fullLists = new Set<AllocationRequest>();
  for (const [position, { request, allowance }] of served.entries()) {
    const eligible = candidates
      .filter((asset) => isEligible(asset, request, allowance.operatorId, heldBy.get(asset.id), taken.get(asset.id) ?? 0, seen.waiting))
      .filter(
        (asset) =>
          (asset.size_bytes === null || asset.size_bytes <= allowance.budget) && !(asset.source_host !== null && (hostRoom?.get(asset.source_host) ?? 1) <= 0),
      )
      // Ordered by the holders counts as this request sees them, after the grants before it.
      .map((asset) => ({ ...asset, holders: asset.holders + (taken.get(asset.id) ?? 0) }))
      .sort(compareAllocationOrder);
    const { limits } = ownListOf(request, allowance);
    const known = eligible.filter((asset) => asset.size_bytes !== null);
    const unknown = eligible.filter((asset) => asset.size_bytes === null);
    if ((cut.known && known.length < limits.known) || (cut.unknown && unknown.length < limits.unknown)) return { grants, served: position, fullLists };
    if (known.length >= limits.known) fullLists.add(request);
    const ordered = spreadAcrossTag(mergeInAllocationOrder(known.slice(0, limits.known), unknown.slice(0, limits.unknown)), heldBy, allowance.spreadValue);
    const picked = pickWithinBudget(
      ordered,
      allowance.budget,
      allowance.maxAssets,
      { estimate: policy.unknownSizeEstimateBytes, maxUnknown: allowance.unknownCap },
      hostRoom,
    );
    for (const { asset, reservedBytes: bytes } of picked) {
      taken.set(asset.id, (taken.get(asset.id) ?? 0) + 1);
      const held = heldBy.get(asset.id) ?? noHolders();
      held.holders.add(request.nodeId);
      if (allowance.operatorId !== null) held.operators.add(allowance.operatorId);
      held.spreadValues.push(allowance.spreadValue);
      heldBy.set(asset.id, held);
      grants.push({ request, asset, reservedBytes: bytes, expiresAt: allowance.expiryFor(bytes), operatorId: allowance.operatorId });
    }
  }
  return { grants, served: served.length, fullLists };
}

export function noHolders(): AssetHolders {
  return { holders: new Set<number>(), operators: new Set<number>(), sourceGone: new Set<number>(), spreadValues: [] };
}

/** Grants in order while each host stays below the cap, from its `active` allocations counted now. */
export function withinHostCaps(grants: Grant[], active: Map<string, number>, hostCap: number): Grant[] {
  const counts = new Map(active);
  return grants.filter(({ asset }) => {
    if (asset.source_host === null) return true;
    const count = counts.get(asset.source_host) ?? 0;
    if (count >= hostCap) return false;
    counts.set(asset.source_host, count + 1);
    return true;
  });
}

export function priorityRange(request: AllocationRequest): { minPriority: number; maxPriority: number } {
  return { minPriority: request.minPriority, maxPriority: request.maxPriority ?? 10 };
}

export function tagValue(tags: string, key: string): string | undefined {
  const value = (JSON.parse(tags) as Record<string, unknown>)[key];
  return typeof value === 'string' ? value : undefined;
}

/**
 * Puts candidates that already have a copy or claim on a node with the same tag value (say, the
 * same region) after the others, keeping allocation order within each group: copies spread where
 * possible, and still go to this node when nothing else is left.
 */
export function spreadAcrossTag(candidates: Candidate[], heldBy: Map<string, AssetHolders>, value: string | undefined): Candidate[] {
  if (value === undefined) return candidates;
  const crowded = (candidate: Candidate) => candidate.holders > 0 && heldBy.get(candidate.id)?.spreadValues.includes(value) === true;
  return [...candidates.filter((candidate) => !crowded(candidate)), ...candidates.filter(crowded)];
}

/** What each candidate's host may still take, from the counts read with the candidates; undefined without a cap. */
export function hostRoomOf(candidates: Candidate[], hostCap: number): Map<string, number> | undefined {
  if (hostCap <= 0) return undefined;
  const room = new Map<string, number>();
  for (const candidate of candidates) if (candidate.source_host !== null) room.set(candidate.source_host, hostCap - candidate.host_active);
  return room;
}

export function compareAllocationOrder(a: Candidate, b: Candidate): number {
  return b.priority - a.priority || a.holders - b.holders || a.first_seen_at - b.first_seen_at || (a.id < b.id ? -1 : a.id > b.id ? 1 : 0);
}

export function mergeInAllocationOrder(known: Candidate[], unknown: Candidate[]): Candidate[] {
  return unknown.length === 0 ? known : [...known, ...unknown].sort(compareAllocationOrder);
}

/**
 * Greedy in allocation order: take each candidate that still fits, up to the count and unknown-size
 * caps and what its source host may still take (`hostRoom`, shared by the requests of a batch).
 */
export function pickWithinBudget(
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
