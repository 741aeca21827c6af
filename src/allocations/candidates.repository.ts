import { sql, type ExpressionBuilder } from 'kysely';
import type { Db } from '../db/database.js';
import type { Database } from '../db/schema.js';
import type { AllocationState } from './allocations.table.js';
import {
  isVetting,
  type AllocationPolicy,
  compareAllocationOrder,
  noHolders,
  tagValue,
  type AllocationRequest,
  type Candidate,
  type CandidateList,
  type NodeState,
  type AssetHolders,
} from './allocation-rules.js';

// The reads and locks of a claim: the node's report, the candidates, who holds them (grants.repository.ts writes the grants).

export type LockMode = 'none' | 'skip-locked' | 'wait';

/**
 * Records each request's free-space report and reads its node's state, in one statement that also
 * takes the nodes' row locks (PostgreSQL, in id order), so a node's budget cannot be spent twice.
 */
export async function recordReports(trx: Db, requests: AllocationRequest[], now: number, lock: LockMode): Promise<NodeState[]> {
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
        free_bytes: sql<number>`case id ${sql.join(
          reports.map((request) => sql`when ${request.nodeId} then ${request.freeBytes}`),
          sql` `,
        )} else free_bytes end`,
        free_reported_at: sql<number>`case when id in (${sql.join(reports.map((request) => request.nodeId))}) then ${now} else free_reported_at end`,
      };
    })
    .$if(single, (query) => query.where('id', '=', ids[0] as number))
    .$if(!single && lock === 'none', (query) => query.where('id', 'in', ids))
    .$if(!single && lock !== 'none', (query) =>
      query.where('id', 'in', (eb) => eb.selectFrom('nodes').select('id').where('id', 'in', ids).orderBy('id').forUpdate()),
    )
    .returning([
      'id',
      'free_bytes',
      'free_reported_at',
      'reserved_bytes',
      'bandwidth_bps',
      'strikes',
      'draining',
      'tags',
      'window_from',
      'window_until',
      'audits_passed',
      'audits_failed',
      'operator_id',
      'vetted_at',
    ])
    .execute();
}

/** The allocations each new node (isVetting) holds, for its vetting cap; vetted nodes are not counted. */
export async function withVettingLoad(trx: Db, nodes: NodeState[], policy: Pick<AllocationPolicy, 'vettingAudits'>): Promise<NodeState[]> {
  const vetting = nodes.filter((node) => isVetting(node, policy)).map((node) => node.id);
  if (vetting.length === 0) return nodes;
  const rows = await trx
    .selectFrom('allocations')
    .select(['node_id', sql<number>`count(*)`.as('active')])
    .where('node_id', 'in', vetting)
    .where('state', '=', 'active')
    .groupBy('node_id')
    .execute();
  const active = new Map(rows.map((row) => [Number(row.node_id), Number(row.active)]));
  return nodes.map((node) => (isVetting(node, policy) ? { ...node, active_allocations: active.get(node.id) ?? 0 } : node));
}

export interface CandidateQuery extends CandidateList {
  lock: LockMode;
  /** SOURCE_HOST_MAX_ACTIVE: hosts at it are left out; 0 counts nothing. */
  hostCap: number;
  now: number;
}

/**
 * Candidates of known size that fit the budget, and of unknown size, up to a limit each, in one
 * statement (one round trip). Each list comes straight off a partial index in allocation order
 * (`assets_claimable`, `assets_claimable_unknown_size`).
 */
export async function selectCandidates(
  trx: Db,
  query: CandidateQuery,
  /** Leave out what this node holds, found gone or must wait for, and what its operator holds; a shared list leaves that to the caller. */
  forNode?: { nodeId: number; operatorId: number | null },
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

function candidateList(
  db: Db,
  { range, lock, budget, limits, hostCap, now }: CandidateQuery,
  size: 'known' | 'unknown',
  own: { nodeId: number; operatorId: number | null } | undefined,
) {
  let query = db
    .selectFrom('assets')
    .select([
      'id',
      'name',
      'url',
      'size_bytes',
      'priority',
      'holders',
      'first_seen_at',
      'sha256',
      'replicas_target',
      'source_errors',
      'retry_failures',
      'source_host',
    ])
    .select(
      hostCap > 0
        ? sql<number>`(select count(*) from allocations as host_allocations where host_allocations.state = 'active' and host_allocations.source_host = assets.source_host)`.as(
            'host_active',
          )
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
  if (own !== undefined) {
    const forNode = own.nodeId;
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
      // Nor one its operator holds on another node; written as allocations_one_per_operator's predicate.
      .$if(own.operatorId !== null, (filtered) =>
        filtered.where((eb) =>
          eb.not(
            eb.exists(
              eb
                .selectFrom('allocations')
                .select(sql.lit(1).as('one'))
                .whereRef('allocations.asset_id', '=', 'assets.id')
                .where('allocations.operator_id', '=', own.operatorId as number)
                .where(sql<boolean>`operator_id is not null and state in ('active', 'completed')`),
            ),
          ),
        ),
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
  query =
    size === 'known' ? query.where(sql<boolean>`size_bytes is not null`).where('size_bytes', '<=', budget) : query.where(sql<boolean>`size_bytes is null`);
  if (lock === 'skip-locked') query = query.forUpdate('assets').skipLocked();
  return query;
}

/** The requesting node's allocations of the candidate asset, for EXISTS tests. */
function thisNodesAllocations(eb: ExpressionBuilder<Database, 'assets'>, nodeId: number) {
  return eb.selectFrom('allocations').select(sql.lit(1).as('one')).whereRef('allocations.asset_id', '=', 'assets.id').where('allocations.node_id', '=', nodeId);
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

/** For candidates that some node holds or found gone: which nodes, and their spread tag values. */
export async function holdersOf(trx: Db, candidates: Candidate[], spreadTag: string): Promise<Map<string, AssetHolders>> {
  const heldBy = new Map<string, AssetHolders>();
  if (candidates.length === 0) return heldBy;
  const rows = await trx
    .selectFrom('allocations')
    .innerJoin('nodes', 'nodes.id', 'allocations.node_id')
    .select(['allocations.asset_id', 'allocations.node_id', 'allocations.operator_id', 'allocations.state', 'allocations.end_reason', 'nodes.tags'])
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
    const held = heldBy.get(row.asset_id) ?? noHolders();
    if (row.state === 'active' || row.state === 'completed') {
      held.holders.add(row.node_id);
      if (row.operator_id !== null) held.operators.add(Number(row.operator_id));
      held.spreadValues.push(tagValue(row.tags, spreadTag));
    }
    if (row.end_reason?.startsWith('source_gone:')) held.sourceGone.add(row.node_id);
    heldBy.set(row.asset_id, held);
  }
  return heldBy;
}

/**
 * Waits for the row locks of the chosen assets, taken in id order so two waiting passes cannot
 * deadlock, and returns those still free: PostgreSQL re-checks the WHERE clause on each row's
 * latest version once its lock is released.
 */
export async function lockInIdOrder(trx: Db, ids: string[]): Promise<Set<string>> {
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

export async function insertProvisionalNode(trx: Db, name: string, now: number): Promise<number> {
  const row = await trx
    .insertInto('nodes')
    .values({
      name,
      hostname: name,
      ip: null,
      ssh_port: null,
      status: 'unknown',
      free_bytes: null,
      free_reported_at: null,
      last_heartbeat_at: null,
      probe_failures: 0,
      bandwidth_bps: null,
      tags: '{}',
      token_hash: null,
      created_at: now,
      bytes_in_flight: null,
      ssh_host_key: null,
      ssh_user: null,
      probed_at: null,
      quarantined_at: null,
      quarantine_reason: null,
      window_from: null,
      window_until: null,
    })
    .returning('id')
    .executeTakeFirstOrThrow();
  return row.id;
}
