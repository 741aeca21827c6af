import { sql, type ExpressionBuilder } from 'kysely';
import type { Db } from '../db/database.js';
import type { Dialect } from '../db/dialect.js';
import type { Database } from '../db/schema.js';
import type { WorkerTarget } from '../workers/ssh.js';
import { WORKER_HOLDING_RENTAL_STATES } from './rentals.table.js';

/** A worker as provisioning needs it: where to connect and which host key to expect. */
export interface WorkerRow {
  id: number;
  name: string;
  hostname: string;
  ip: string | null;
  ssh_port: number | null;
  ssh_user: string | null;
  ssh_host_key: string | null;
}

const workerColumns = ['nodes.id', 'nodes.name', 'nodes.hostname', 'nodes.ip', 'nodes.ssh_port', 'nodes.ssh_user', 'nodes.ssh_host_key'] as const;

/**
 * A worker that counts for rentals and reservations: it reported how to reach it over SSH, the
 * control plane proved its host key at that address, it is approved (WORKER_APPROVAL) and not
 * quarantined.
 */
export function isRentableWorker(eb: ExpressionBuilder<Database, 'nodes'>) {
  return eb.and([
    eb('nodes.ssh_host_key', 'is not', null),
    eb('nodes.host_key_verified_at', 'is not', null),
    eb('nodes.approved_at', 'is not', null),
    eb('nodes.quarantined_at', 'is', null),
  ]);
}

/**
 * A worker that can be rented now: rentable, answers the SSH probe, is not dead or drained,
 * holds no live rental and has no cleanup still to do.
 */
function isFreeWorker(eb: ExpressionBuilder<Database, 'nodes'>) {
  return eb.and([
    isRentableWorker(eb),
    eb('nodes.ssh_user', 'is not', null),
    eb('nodes.ssh_port', 'is not', null),
    eb('nodes.ip', 'is not', null),
    eb('nodes.probe_status', '=', 'alive'),
    eb('nodes.status', '<>', 'dead'),
    eb('nodes.draining', '=', 0),
    eb.not(
      eb.exists(
        eb
          .selectFrom('rentals')
          .select(sql`1`.as('one'))
          .whereRef('rentals.node_id', '=', 'nodes.id')
          .where('rentals.state', 'in', WORKER_HOLDING_RENTAL_STATES),
      ),
    ),
    eb.not(
      eb.exists(
        eb
          .selectFrom('tasks')
          .select(sql`1`.as('one'))
          .whereRef('tasks.node_id', '=', 'nodes.id')
          .where('tasks.kind', '=', 'deprovision')
          .where('tasks.state', 'in', ['pending', 'running']),
      ),
    ),
  ]);
}

/** Picks up to `count` free workers; on PostgreSQL, rows other transactions are taking are skipped. */
export async function pickFreeWorkers(db: Db, dialect: Dialect, count: number, excludeNodeId?: number): Promise<WorkerRow[]> {
  let query = db
    .selectFrom('nodes')
    .select(workerColumns)
    .where(isFreeWorker)
    .$if(excludeNodeId !== undefined, (q) => q.where('nodes.id', '<>', excludeNodeId as number))
    .orderBy('nodes.id')
    .limit(count);
  if (dialect.hasRowLocks) query = query.forUpdate().skipLocked();
  return query.execute();
}

export async function countFreeWorkers(db: Db): Promise<number> {
  const row = await db
    .selectFrom('nodes')
    .select((eb) => eb.fn.countAll<number>().as('free'))
    .where(isFreeWorker)
    .executeTakeFirstOrThrow();
  return Number(row.free);
}

export async function findWorker(db: Db, nodeId: number): Promise<WorkerRow | undefined> {
  return db.selectFrom('nodes').select(workerColumns).where('nodes.id', '=', nodeId).executeTakeFirst();
}

export function targetOf(worker: WorkerRow): WorkerTarget {
  return { host: worker.ip as string, port: worker.ssh_port as number, username: worker.ssh_user as string, hostKey: worker.ssh_host_key as string };
}

/** Takes a worker out of the pool until an admin clears it; false when it already was. */
export async function quarantineWorker(db: Db, nodeId: number, reason: string, now: number): Promise<boolean> {
  const row = await db
    .updateTable('nodes')
    .set({ quarantined_at: now, quarantine_reason: reason.slice(0, 500) })
    .where('id', '=', nodeId)
    .where('quarantined_at', 'is', null)
    .returning('id')
    .executeTakeFirst();
  return row !== undefined;
}

/** Where renters reach each of these nodes. */
export function findWorkerAddresses(db: Db, nodeIds: number[]): Promise<{ id: number; hostname: string; ip: string | null; ssh_port: number | null }[]> {
  if (nodeIds.length === 0) return Promise.resolve([]);
  return db.selectFrom('nodes').select(['id', 'hostname', 'ip', 'ssh_port']).where('id', 'in', nodeIds).execute();
}

/** Removes every worker registration (a node with an SSH host key) that no allocation refers to. */
export function removeIdleWorkers(db: Db): Promise<{ id: number; name: string }[]> {
  return db
    .deleteFrom('nodes')
    .where('ssh_host_key', 'is not', null)
    .where((eb) => eb.not(eb.exists(eb.selectFrom('allocations').select('allocations.id').whereRef('allocations.node_id', '=', 'nodes.id'))))
    .returning(['id', 'name'])
    .execute();
}
