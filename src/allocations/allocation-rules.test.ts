import { describe, expect, it } from 'vitest';
import {
  allowanceOf,
  compareAllocationOrder,
  hostRoomOf,
  isEligible,
  judgeRequests,
  noHolders,
  ownListOf,
  pickTogether,
  pickWithinBudget,
  refusalOf,
  sharedListOf,
  spreadAcrossTag,
  withinHostCaps,
  type AllocationPolicy,
  type AllocationRequest,
  type Candidate,
  type Grant,
  type NodeState,
  type Refusal,
  type ServedRequest,
  type AssetHolders,
} from './allocation-rules.js';

const HOUR = 3_600_000;
const NOW = 100 * HOUR;

const policy: AllocationPolicy = {
  leaseMaxMs: 24 * HOUR,
  leaseMinMs: HOUR,
  unknownSizeEstimateBytes: 50,
  unknownSizeMaxPerRequest: 2,
  freeSpaceTtlMs: HOUR,
  maxStrikes: 5,
  spreadTag: 'region',
  sourceHostMaxActive: 0,
  auditScoreMin: 0.8,
  distinctOperators: true,
  vettingAudits: 5,
  vettingMaxAssets: 3,
};

const node = (fields: Partial<NodeState> = {}): NodeState => ({
  id: 1,
  free_bytes: 1000,
  free_reported_at: NOW,
  reserved_bytes: 0,
  bandwidth_bps: null,
  strikes: 0,
  draining: 0,
  tags: '{"region":"east"}',
  window_from: null,
  window_until: null,
  audits_passed: 0,
  audits_failed: 0,
  operator_id: null,
  vetted_at: 0,
  ...fields,
});

const request = (fields: Partial<AllocationRequest> = {}): AllocationRequest => ({
  nodeId: 1,
  freeBytes: null,
  maxAssets: 4,
  minPriority: 1,
  actor: 't',
  ...fields,
});

const candidate = (id: string, fields: Partial<Candidate> = {}): Candidate => ({
  id,
  name: id,
  url: `http://h/${id}`,
  size_bytes: 100,
  priority: 5,
  holders: 0,
  first_seen_at: 0,
  sha256: null,
  replicas_target: 2,
  source_errors: 0,
  retry_failures: 0,
  source_host: null,
  host_active: 0,
  ...fields,
});

const ids = (list: { id: string }[] | { asset: { id: string } }[]) => list.map((entry) => ('asset' in entry ? entry.asset.id : entry.id));
const held = (holders: number[], spreadValues: (string | undefined)[] = [], sourceGone: number[] = [], operators: number[] = []): AssetHolders => ({
  holders: new Set(holders),
  operators: new Set(operators),
  sourceGone: new Set(sourceGone),
  spreadValues,
});

describe('refusals', () => {
  it.each<[string, Partial<NodeState>, Refusal | undefined]>([
    ['a fresh report', {}, undefined],
    ['draining', { draining: 1 }, 'draining'],
    ['draining before anything else', { draining: 1, strikes: 9, free_bytes: null }, 'draining'],
    ['before its window', { window_from: NOW + 1, window_until: NOW + HOUR }, 'outside_window'],
    ['at its window end', { window_from: NOW - HOUR, window_until: NOW }, 'outside_window'],
    ['inside its window', { window_from: NOW - HOUR, window_until: NOW + 1 }, undefined],
    ['a window with no start', { window_until: NOW + 1 }, undefined],
    ['at the strike limit', { strikes: 5 }, 'throttled'],
    ['below the strike limit', { strikes: 4 }, undefined],
    ['an audit score below the minimum', { audits_passed: 3, audits_failed: 2 }, 'audit_score_low'],
    ['an audit score at the minimum', { audits_passed: 8, audits_failed: 2 }, undefined],
    ['too few audits to judge', { audits_passed: 0, audits_failed: 4 }, undefined],
    ['new, at its vetting cap', { vetted_at: null, active_allocations: 3 }, 'vetting_full'],
    ['new, below its vetting cap', { vetted_at: null, active_allocations: 2 }, undefined],
    ['vetted, holding more than a new node may', { active_allocations: 50 }, undefined],
    ['no report', { free_bytes: null }, 'stale_free_space'],
    ['no report time', { free_reported_at: null }, 'stale_free_space'],
    ['a report just fresh', { free_reported_at: NOW - HOUR }, undefined],
    ['a report too old', { free_reported_at: NOW - HOUR - 1 }, 'stale_free_space'],
  ])('%s', (_, fields, refusal) => {
    expect(refusalOf(node(fields), policy, NOW)).toBe(refusal);
  });
});

describe('allowance', () => {
  it.each<[string, Partial<NodeState>, number, { budget: number; maxAssets: number; unknownCap: number; spreadValue: string | undefined } | undefined]>([
    ['the free bytes', {}, 4, { budget: 1000, maxAssets: 4, unknownCap: 2, spreadValue: 'east' }],
    ['less its reservations', { reserved_bytes: 960 }, 4, { budget: 40, maxAssets: 4, unknownCap: 0, spreadValue: 'east' }],
    ['nothing when reservations fill it', { reserved_bytes: 1000 }, 4, undefined],
    ['halved per strike', { strikes: 1 }, 4, { budget: 1000, maxAssets: 2, unknownCap: 2, spreadValue: 'east' }],
    ['never below one', { strikes: 4 }, 4, { budget: 1000, maxAssets: 1, unknownCap: 1, spreadValue: 'east' }],
    ['no spread value without the tag', { tags: '{"zone":"a"}' }, 1, { budget: 1000, maxAssets: 1, unknownCap: 1, spreadValue: undefined }],
    ['no spread value that is not a string', { tags: '{"region":3}' }, 1, { budget: 1000, maxAssets: 1, unknownCap: 1, spreadValue: undefined }],
    ['a new node up to its vetting cap', { vetted_at: null, active_allocations: 1 }, 4, { budget: 1000, maxAssets: 2, unknownCap: 2, spreadValue: 'east' }],
  ])('%s', (_, fields, maxAssets, expected) => {
    const allowance = allowanceOf(node(fields), request({ maxAssets }), policy, NOW);
    expect(
      allowance && { budget: allowance.budget, maxAssets: allowance.maxAssets, unknownCap: allowance.unknownCap, spreadValue: allowance.spreadValue },
    ).toEqual(expected);
  });

  it.each<[string, Partial<NodeState>, number, number]>([
    ['the longest lease without a rate', {}, 100, NOW + 24 * HOUR],
    ['three times the transfer at the rate, at least the minimum', { bandwidth_bps: 1 }, 100, NOW + HOUR],
    ['three times the transfer at the rate', { bandwidth_bps: 1 }, 3600, NOW + 3 * HOUR],
    ['never past the window', { window_until: NOW + 2 * HOUR }, 100, NOW + 2 * HOUR],
  ])('leases %s', (_, fields, bytes, expiresAt) => {
    expect(allowanceOf(node(fields), request(), policy, NOW)?.expiryFor(bytes)).toBe(expiresAt);
  });
});

describe('allocation order (invariant 3)', () => {
  it.each<[string, Partial<Candidate>, Partial<Candidate>]>([
    ['higher priority first', { priority: 9 }, { priority: 5, holders: 0 }],
    ['then fewer holders', { holders: 0 }, { holders: 1 }],
    ['then older', { first_seen_at: 1 }, { first_seen_at: 2 }],
    ['then id', {}, {}],
  ])('%s', (_, first, second) => {
    const [a, b] = [candidate('a', first), candidate('b', second)];
    expect([b, a].sort(compareAllocationOrder)).toEqual([a, b]);
    expect(compareAllocationOrder(a, a)).toBe(0);
  });
});

describe('picking within the budget', () => {
  const unknown = { estimate: 50, maxUnknown: 1 };
  it.each<[string, Candidate[], number, number, string[]]>([
    ['in order while each fits', [candidate('a'), candidate('b'), candidate('c')], 250, 5, ['a', 'b']],
    ['skipping what does not fit for what does', [candidate('a', { size_bytes: 300 }), candidate('b')], 250, 5, ['b']],
    ['up to the count', [candidate('a'), candidate('b')], 1000, 1, ['a']],
    [
      'unknown sizes at the estimate, up to their cap',
      [candidate('u1', { size_bytes: null }), candidate('u2', { size_bytes: null }), candidate('a')],
      1000,
      5,
      ['u1', 'a'],
    ],
    ['an estimate that does not fit', [candidate('u1', { size_bytes: null })], 40, 5, []],
  ])('%s', (_, candidates, budget, maxAssets, expected) => {
    expect(ids(pickWithinBudget(candidates, budget, maxAssets, unknown, undefined))).toEqual(expected);
  });

  it('reserves the estimate for an unknown size', () => {
    expect(pickWithinBudget([candidate('u', { size_bytes: null })], 100, 1, unknown, undefined)).toEqual([
      { asset: candidate('u', { size_bytes: null }), reservedBytes: 50 },
    ]);
  });

  it('takes no more from a host than its room, and spends the room', () => {
    const onHost = (id: string) => candidate(id, { source_host: 'h', host_active: 1 });
    const room = hostRoomOf([onHost('a'), onHost('b'), onHost('c')], 3);
    expect(room).toEqual(new Map([['h', 2]]));
    expect(ids(pickWithinBudget([onHost('a'), candidate('free'), onHost('b'), onHost('c')], 1000, 5, unknown, room))).toEqual(['a', 'free', 'b']);
    expect(room).toEqual(new Map([['h', 0]]));
    expect(hostRoomOf([onHost('a')], 0)).toBeUndefined();
  });
});

describe('spreading across the tag', () => {
  const [crowded, alone, unheld] = [candidate('crowded', { holders: 1 }), candidate('alone', { holders: 1 }), candidate('unheld')];
  const heldBy = new Map([
    ['crowded', held([7], ['east'])],
    ['alone', held([8], ['west'])],
  ]);
  it.each<[string, string | undefined, string[]]>([
    ['puts assets held in the same region last', 'east', ['alone', 'unheld', 'crowded']],
    ['keeps the order in another region', 'north', ['crowded', 'alone', 'unheld']],
    ['keeps the order without a value', undefined, ['crowded', 'alone', 'unheld']],
  ])('%s', (_, value, expected) => {
    expect(ids(spreadAcrossTag([crowded, alone, unheld], heldBy, value))).toEqual(expected);
  });
});

describe('eligibility in a shared list', () => {
  const none = new Map<string, Set<number>>();
  it.each<[string, Partial<Candidate>, Partial<AllocationRequest>, AssetHolders | undefined, number, Map<string, Set<number>>, boolean, (number | null)?]>([
    ['an asset in range with room', {}, {}, undefined, 0, none, true],
    ["held by another of the node's operator's nodes", {}, {}, held([2], [], [], [7]), 0, none, false, 7],
    ['held by another operator', {}, {}, held([2], [], [], [8]), 0, none, true, 7],
    ['held by an operator, for a node counted as its own', {}, {}, held([2], [], [], [7]), 0, none, true, null],
    ['below the minimum priority', { priority: 2 }, { minPriority: 3 }, undefined, 0, none, false],
    ['above the maximum priority', { priority: 9 }, { maxPriority: 8 }, undefined, 0, none, false],
    ['full with the batch before it', { holders: 1 }, {}, undefined, 1, none, false],
    ['held by the node', {}, {}, held([1]), 0, none, false],
    ['held by another node', {}, {}, held([2]), 0, none, true],
    ['found gone by the node', { source_errors: 1 }, {}, held([], [], [1]), 0, none, false],
    ['found gone by the node, without source errors counted', {}, {}, held([], [], [1]), 0, none, true],
    ['cooling down for the node', {}, {}, undefined, 0, new Map([['a', new Set([1])]]), false],
    ['cooling down for another node', {}, {}, undefined, 0, new Map([['a', new Set([2])]]), true],
  ])('%s', (_, asset, fields, heldBy, taken, waiting, eligible, operatorId = null) => {
    expect(isEligible(candidate('a', asset), request(fields), operatorId, heldBy, taken, waiting)).toBe(eligible);
  });
});

describe('a batch', () => {
  const served = (nodeId: number, fields: Partial<NodeState> = {}, maxAssets = 4): ServedRequest => {
    const ask = request({ nodeId, maxAssets });
    return { request: ask, allowance: allowanceOf(node({ id: nodeId, ...fields }), ask, policy, NOW)! };
  };

  it('judges each request by its node: unknown, refused, without room, served', () => {
    const nodes = new Map([2, 3, 4].map((id) => [id, node({ id, draining: id === 3 ? 1 : 0, reserved_bytes: id === 4 ? 1000 : 0 })]));
    const judged = judgeRequests(
      [1, 2, 3, 4].map((nodeId) => request({ nodeId })),
      nodes,
      policy,
      NOW,
    );
    expect(judged.map(({ request: { nodeId }, refusal, allowance }) => [nodeId, refusal, allowance?.budget])).toEqual([
      [1, undefined, undefined],
      [2, undefined, 1000],
      [3, 'draining', undefined],
      [4, undefined, undefined],
    ]);
  });

  it('sizes one list for all, and a single request its own', () => {
    const [a, b] = [served(1, {}, 4), served(2, { free_bytes: 3000 }, 2)];
    expect(sharedListOf([a, { ...b, request: { ...b.request, minPriority: 3, maxPriority: 8 } }])).toEqual({
      range: { minPriority: 1, maxPriority: 10 },
      budget: 3000,
      limits: { known: 28, unknown: 6 },
    });
    expect(ownListOf(a.request, a.allowance)).toEqual({ range: { minPriority: 1, maxPriority: 10 }, budget: 1000, limits: { known: 12, unknown: 2 } });
  });

  it('serves requests one after another: each sees the grants before it', () => {
    const candidates = [candidate('a', { replicas_target: 1 }), candidate('b', { replicas_target: 2 }), candidate('c', { replicas_target: 2, holders: 1 })];
    const heldBy = new Map([['c', held([9], ['east'])]]);
    const { grants } = pickTogether(
      [served(1), served(2, { tags: '{"region":"west"}' })],
      candidates,
      { heldBy, waiting: new Map(), hostRoom: undefined },
      policy,
    );
    // Node 1 (east) takes c last, behind b; node 2 finds a full and c full.
    expect(grants.map((grant) => [grant.request.nodeId, grant.asset.id])).toEqual([
      [1, 'a'],
      [1, 'b'],
      [1, 'c'],
      [2, 'b'],
    ]);
    // The holders it was given are left as they were.
    expect(heldBy.get('c')).toEqual(held([9], ['east']));
  });

  it('shares the host room across the batch', () => {
    const onHost = (id: string) => candidate(id, { source_host: 'h', host_active: 1 });
    const { grants } = pickTogether(
      [served(1), served(2)],
      [onHost('a'), onHost('b')],
      { heldBy: new Map(), waiting: new Map(), hostRoom: hostRoomOf([onHost('a')], 2) },
      policy,
    );
    expect(grants.map((grant) => [grant.request.nodeId, grant.asset.id])).toEqual([[1, 'a']]);
  });

  it('keeps grants in order while their hosts stay below the cap', () => {
    const grant = (id: string, host: string | null): Grant => ({
      request: request(),
      asset: candidate(id, { source_host: host }),
      reservedBytes: 1,
      expiresAt: 1,
      operatorId: null,
    });
    const active = new Map([
      ['full', 2],
      ['some', 1],
    ]);
    expect(ids(withinHostCaps([grant('a', 'full'), grant('b', 'some'), grant('c', 'some'), grant('d', null), grant('e', 'new')], active, 2))).toEqual([
      'b',
      'd',
      'e',
    ]);
    expect(active).toEqual(
      new Map([
        ['full', 2],
        ['some', 1],
      ]),
    );
  });

  it('starts a held empty', () => {
    expect(noHolders()).toEqual(held([]));
  });
});
