import { sql } from 'kysely';
import { leaseFor, type LeasePolicy } from '../allocations/lease.js';
import { endAllocations } from '../allocations/end-allocations.js';
import type { Db } from '../db/database.js';
import { appendEvents } from '../events/events.repository.js';
import type { NodeStatus } from './nodes.table.js';

export interface HeartbeatReport {
  freeBytes: number;
  bytesInFlight: number | null;
  rateBytesPerSecond: number | null;
  progress: { assetId: string; bytesDone: number }[];
}

export interface HeartbeatResult {
  status: NodeStatus;
  draining: boolean;
  renewed: { assetId: string; expiresAt: number }[];
  /** Reported allocations that are no longer active (expired, reclaimed, superseded): the node drops them. */
  ended: string[];
  /** Source hosts of the node's active allocations that asked the fleet to wait, and until when. */
  pausedSources: { host: string; until: number }[];
}

// Weight of a new rate report: smooths one fast or slow minute without ignoring a real change.
const RATE_SMOOTHING = 0.3;

/**
 * A node's sign of life: it is alive again (whatever it was), its free space and rate are
 * recorded, and each allocation that made progress since the last report gets its lease renewed
 * for the bytes left at the node's rate. A download that stalls gets no renewal and expires.
 */
export async function recordHeartbeat(db: Db, nodeId: number, report: HeartbeatReport, policy: LeasePolicy, now: number): Promise<HeartbeatResult> {
  return db.transaction().execute(async (trx) => {
    const before = await trx.selectFrom('nodes').select(['name', 'status', 'bandwidth_bps', 'draining']).where('id', '=', nodeId).executeTakeFirstOrThrow();
    const rate =
      report.rateBytesPerSecond !== null && report.rateBytesPerSecond > 0
        ? before.bandwidth_bps === null
          ? report.rateBytesPerSecond
          : before.bandwidth_bps * (1 - RATE_SMOOTHING) + report.rateBytesPerSecond * RATE_SMOOTHING
        : before.bandwidth_bps;
    await trx
      .updateTable('nodes')
      .set({
        status: 'alive',
        last_heartbeat_at: now,
        free_bytes: report.freeBytes,
        free_reported_at: now,
        bytes_in_flight: report.bytesInFlight,
        bandwidth_bps: rate,
      })
      .where('id', '=', nodeId)
      .execute();
    if (before.status !== 'alive') {
      await appendEvents(trx, now, [
        { actor: `node:${before.name}`, kind: 'node.alive', subjectType: 'node', subjectId: nodeId, data: { was: before.status } },
      ]);
    }
    const renewed: HeartbeatResult['renewed'] = [];
    const ended: string[] = [];
    for (const { assetId, bytesDone } of report.progress) {
      const allocation = await trx
        .selectFrom('allocations')
        .select(['id', 'reserved_bytes', 'expires_at', 'bytes_done'])
        .where('node_id', '=', nodeId)
        .where('asset_id', '=', assetId)
        .where('state', '=', 'active')
        .executeTakeFirst();
      if (!allocation) ended.push(assetId);
      if (!allocation || bytesDone <= (allocation.bytes_done ?? 0)) continue;
      const expiresAt = Math.max(allocation.expires_at, now + leaseFor(Math.max(0, allocation.reserved_bytes - bytesDone), rate, policy));
      await trx.updateTable('allocations').set({ bytes_done: bytesDone, progress_at: now, expires_at: expiresAt }).where('id', '=', allocation.id).execute();
      renewed.push({ assetId, expiresAt });
    }
    const paused = await trx
      .selectFrom('source_hosts')
      .select(['host', 'paused_until'])
      .where('paused_until', '>', now)
      .where('host', 'in', (eb) =>
        eb
          .selectFrom('allocations')
          .select(sql<string>`source_host`.as('host'))
          .where('node_id', '=', nodeId)
          .where('state', '=', 'active'),
      )
      .execute();
    return {
      status: 'alive',
      draining: before.draining === 1,
      renewed,
      ended,
      pausedSources: paused.map((row) => ({ host: row.host, until: Number(row.paused_until) })),
    };
  });
}

/**
 * A node's agent said goodbye (a clean stop): it is `offline`, which liveness timeouts leave alone,
 * so it gets no strike and is never reclaimed as dead; its copies keep counting. Its next
 * heartbeat makes it alive again.
 */
export async function markNodeOffline(db: Db, nodeId: number, actor: string, now: number): Promise<void> {
  await db.transaction().execute(async (trx) => {
    const before = await trx.selectFrom('nodes').select('status').where('id', '=', nodeId).executeTakeFirstOrThrow();
    if (before.status === 'offline') return;
    await trx.updateTable('nodes').set({ status: 'offline' }).where('id', '=', nodeId).execute();
    await appendEvents(trx, now, [{ actor, kind: 'node.offline', subjectType: 'node', subjectId: nodeId, data: { was: before.status } }]);
  });
}

/**
 * Nodes that sent heartbeats and fell silent: `suspect` after `timeoutMs`, `dead` after a further
 * `graceMs` (a strike: its work will be reclaimed). Nodes that never sent a heartbeat (the seeds'
 * clients, which only call /allocate) are left alone; their leases simply expire.
 */
export async function markSilentNodes(db: Db, now: number, limits: { timeoutMs: number; graceMs: number }): Promise<{ suspect: number; dead: number }> {
  return db.transaction().execute(async (trx) => {
    const suspect = await trx
      .updateTable('nodes')
      .set({ status: 'suspect' })
      .where('status', '=', 'alive')
      .where('last_heartbeat_at', '<=', now - limits.timeoutMs)
      .returning(['id', 'last_heartbeat_at'])
      .execute();
    const dead = await trx
      .updateTable('nodes')
      .set((eb) => ({ status: 'dead', strikes: eb('strikes', '+', 1) }))
      .where('status', '=', 'suspect')
      .where('last_heartbeat_at', '<=', now - limits.timeoutMs - limits.graceMs)
      .returning(['id', 'last_heartbeat_at'])
      .execute();
    await appendEvents(trx, now, [
      ...suspect.map((node) => ({
        actor: 'system',
        kind: 'node.suspect',
        subjectType: 'node',
        subjectId: node.id,
        data: { last_heartbeat_at: node.last_heartbeat_at },
      })),
      ...dead.map((node) => ({
        actor: 'system',
        kind: 'node.dead',
        subjectType: 'node',
        subjectId: node.id,
        data: { last_heartbeat_at: node.last_heartbeat_at },
      })),
    ]);
    return { suspect: suspect.length, dead: dead.length };
  });
}

/**
 * Returns the unfinished work of dead nodes to the pool, most important first, at most
 * `maxPerPass` allocations per pass: a brake, so a dead rack does not start a repair storm.
 * Verified copies stay: a node that comes back still has them.
 */
export async function reclaimFromDeadNodes(db: Db, now: number, maxPerPass: number): Promise<number> {
  return db.transaction().execute(async (trx) => {
    const { ended } = await endAllocations(
      trx,
      {
        pickedBy: (eb) =>
          eb
            .selectFrom('allocations as a')
            .innerJoin('nodes', 'nodes.id', 'a.node_id')
            .innerJoin('assets', 'assets.id', 'a.asset_id')
            .select('a.id')
            .where('a.state', '=', 'active')
            .where('nodes.status', '=', 'dead')
            .orderBy('assets.priority', 'desc')
            .orderBy('a.id')
            .limit(maxPerPass),
      },
      {
        state: 'reclaimed',
        reason: 'node dead',
        actor: 'system',
        event: (row) => ({ kind: 'allocation.reclaimed', data: { asset_id: row.asset_id, node_id: row.node_id } }),
      },
      now,
    );
    return ended.length;
  });
}

/** Each strike halves what a node is given; a completed copy makes one good. */
export async function addStrikes(db: Db, nodeIds: number[], count: number): Promise<void> {
  if (nodeIds.length === 0) return;
  await db
    .updateTable('nodes')
    .set({ strikes: sql`case when strikes + ${count} < 0 then 0 else strikes + ${count} end` })
    .where('id', 'in', [...new Set(nodeIds)])
    .execute();
}
