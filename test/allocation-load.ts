import crypto from 'node:crypto';
import { sql } from 'kysely';
import type { Db } from '../src/db/database.js';

/** A node as the load sees it: its name and the token it registered with. */
export interface LoadNode {
  name: string;
  token: string;
}

/** One asset granted by a 200 from `/allocate`: the client was told it holds it. */
export interface Grant {
  allocationId: number;
  assetId: string;
  node: string;
  target: string;
  /** Date.now() when the 200 arrived. */
  at: number;
}

/** One answer (or network failure) the clients got. `status` is the HTTP status, or the error code. */
export interface Answer {
  target: string;
  path: string;
  status: number | string;
  code?: string;
  detail?: unknown;
  /** Date.now() when the answer arrived. */
  at: number;
}

export interface AllocationLoad {
  grants: Grant[];
  /** Allocations whose /complete was answered 200. */
  completed: number[];
  answers: Answer[];
  /** Instances the clients may use; the test removes one it kills, clients drop one that stops answering. */
  targets: Set<string>;
  /** Grants after `since` (epoch ms). */
  grantsSince(since: number): number;
  /** Stops every client after its current request and waits for them. */
  stop(): Promise<void>;
}

/** The checksum every node reports for an asset: the same on every copy, so copies agree. */
export const checksumOf = (assetId: string) => crypto.createHash('sha256').update(assetId).digest('hex');

/**
 * Nodes asking for work as agents do, each a sequential loop of `/allocate` (and `/complete` for every
 * third grant), spread over the instances in `targets`. No pauses: a client whose instance stops
 * answering drops it and moves to another, and stops when none is left.
 */
export function startAllocationLoad(nodes: LoadNode[], targets: string[], options: { maxAssets?: number } = {}): AllocationLoad {
  const load: AllocationLoad = {
    grants: [],
    completed: [],
    answers: [],
    targets: new Set(targets),
    grantsSince: (since) => load.grants.filter((grant) => grant.at > since).length,
    stop: async () => {
      stopped = true;
      await clients;
    },
  };
  let stopped = false;

  async function call(target: string, path: string, token: string, body: unknown): Promise<{ status: number; body: any } | undefined> {
    try {
      const response = await fetch(target + path, {
        method: 'POST',
        headers: { 'content-type': 'application/json', authorization: `Bearer ${token}` },
        body: JSON.stringify(body),
        signal: AbortSignal.timeout(15_000),
      });
      const text = await response.text();
      let parsed: any = text;
      try {
        parsed = JSON.parse(text);
      } catch {
        // Not JSON: kept as text, and the test will say so.
      }
      load.answers.push({ target, path, status: response.status, code: parsed?.code, detail: parsed?.detail, at: Date.now() });
      return { status: response.status, body: parsed };
    } catch (error) {
      const cause = (error as { cause?: { code?: string } }).cause;
      load.answers.push({ target, path, status: cause?.code ?? (error as Error).name, detail: (error as Error).message, at: Date.now() });
      // A refused or reset connection: this instance is gone for this load.
      load.targets.delete(target);
      return undefined;
    }
  }

  async function runClient(node: LoadNode, offset: number): Promise<void> {
    let turn = offset;
    while (!stopped) {
      const live = [...load.targets];
      if (live.length === 0) return;
      const target = live[turn++ % live.length] as string;
      const answer = await call(target, '/allocate', node.token, { node_id: node.name, free_space_gb: 1_000_000, max_assets: options.maxAssets ?? 2 });
      if (answer?.status !== 200) continue;
      const granted = answer.body as { id: string; allocation_id: number; size_bytes: number }[];
      const at = Date.now();
      for (const asset of granted) load.grants.push({ allocationId: asset.allocation_id, assetId: asset.id, node: node.name, target, at });
      const first = granted[0];
      if (first && first.allocation_id % 3 === 0) {
        const completion = { node_id: node.name, asset_id: first.id, sha256: checksumOf(first.id), bytes: first.size_bytes };
        const done = await call(target, '/complete', node.token, completion);
        if (done?.status === 200) load.completed.push(first.allocation_id);
      }
    }
  }

  const clients = Promise.all(nodes.map((node, index) => runClient(node, index)));
  return load;
}

/** The answers that are neither a success nor an expected domain refusal (no work left, already done). */
export function unexpectedAnswers(answers: Answer[]): Answer[] {
  return answers.filter((answer) => !(answer.status === 200 || answer.status === 404 || answer.status === 409));
}

export interface AllocationCheck {
  /** Granted with a 200 but not in the database (or in it for another asset or node). */
  lostGrants: Grant[];
  /** Allocation ids granted twice. */
  grantedTwice: number[];
  /** Completed with a 200 but not completed in the database. */
  lostCompletions: number[];
  /** Assets with more active + completed allocations than replicas_target. */
  overTarget: number;
  /** (asset, node) pairs with more than one active allocation. */
  duplicatePairs: number;
  /** Assets whose holders counter disagrees with copies + active allocations. */
  holdersMismatch: number;
  /** Nodes whose reserved_bytes disagrees with the sum of their active allocations. */
  reservationsMismatch: number;
}

/** Checks, in the database itself, everything the clients were told and the allocation invariants. */
export async function checkAllocations(db: Db, load: Pick<AllocationLoad, 'grants' | 'completed'>): Promise<AllocationCheck> {
  const rows = new Map<number, { asset_id: string; node: string; state: string }>();
  const ids = [...new Set(load.grants.map((grant) => grant.allocationId))];
  for (let start = 0; start < ids.length; start += 500) {
    const found = await db
      .selectFrom('allocations')
      .innerJoin('nodes', 'nodes.id', 'allocations.node_id')
      .select(['allocations.id', 'allocations.asset_id', 'nodes.name as node', 'allocations.state'])
      .where('allocations.id', 'in', ids.slice(start, start + 500))
      .execute();
    for (const row of found) rows.set(Number(row.id), row);
  }
  const times = new Map<number, number>();
  for (const grant of load.grants) times.set(grant.allocationId, (times.get(grant.allocationId) ?? 0) + 1);
  const grantedTwice = [...times].filter(([, count]) => count > 1).map(([id]) => id);
  const lostGrants = load.grants.filter((grant) => {
    const row = rows.get(grant.allocationId);
    return !row || row.asset_id !== grant.assetId || row.node !== grant.node;
  });
  const lostCompletions = load.completed.filter((id) => rows.get(id)?.state !== 'completed');
  const count = async (query: ReturnType<typeof sql<{ n: number }>>) => Number((await query.execute(db)).rows[0]?.n ?? 0);
  const overTarget = await count(sql<{ n: number }>`
    select count(*) as n from (
      select l.asset_id from allocations l join assets a on a.id = l.asset_id
      where l.state in ('active', 'completed')
      group by l.asset_id, a.replicas_target
      having count(*) > a.replicas_target
    ) t`);
  const duplicatePairs = await count(sql<{ n: number }>`
    select count(*) as n from (
      select asset_id, node_id from allocations where state = 'active'
      group by asset_id, node_id having count(*) > 1
    ) t`);
  const holdersMismatch = await count(sql<{ n: number }>`
    select count(*) as n from assets a
    left join (select asset_id, count(*) as active from allocations where state = 'active' group by asset_id) l on l.asset_id = a.id
    where a.holders <> a.copies + coalesce(l.active, 0)`);
  return { lostGrants, grantedTwice, lostCompletions, overTarget, duplicatePairs, holdersMismatch, reservationsMismatch: await reservationsMismatch(db) };
}

/** Nodes whose `reserved_bytes` (kept by triggers) is not the sum of their active allocations. */
export async function reservationsMismatch(db: Db): Promise<number> {
  const { rows } = await sql<{ n: number }>`
    select count(*) as n from nodes n
    left join (select node_id, sum(reserved_bytes) as reserved from allocations where state = 'active' group by node_id) l on l.node_id = n.id
    where n.reserved_bytes <> coalesce(l.reserved, 0)`.execute(db);
  return Number(rows[0]?.n ?? 0);
}

/** What `checkAllocations` finds when nothing was lost or duplicated. */
export const CONSISTENT: AllocationCheck = {
  lostGrants: [],
  grantedTwice: [],
  lostCompletions: [],
  overTarget: 0,
  duplicatePairs: 0,
  holdersMismatch: 0,
  reservationsMismatch: 0,
};

/** A short account of the answers by target and status, for failure messages. */
export function describeAnswers(answers: Answer[]): string {
  const counts = new Map<string, number>();
  for (const answer of answers) {
    const key = `${answer.target} ${answer.path} ${answer.status}${answer.code ? ` ${answer.code}` : ''}`;
    counts.set(key, (counts.get(key) ?? 0) + 1);
  }
  return [...counts.entries()].map(([key, n]) => `${key}: ${n}`).join('\n');
}
