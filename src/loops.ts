import { expireDueAllocations } from './allocations/allocations.service.js';
import { failurePolicyFrom } from './allocations/failure-policy.js';
import { applyPriorityPolicy } from './assets/priority.service.js';
import { syncCatalogs } from './catalog/catalog-sync.js';
import type { AppContext } from './http/context.js';
import type { LoopDefinition } from './lib/loop.js';
import { expireRentals } from './rentals/rentals.service.js';
import { runDueTasks } from './rentals/tasks.service.js';
import { moveRentalsOffDeadWorkers, probeWorkers } from './rentals/workers.service.js';
import { fireSchedules } from './schedules/schedule-firing.service.js';
import { markSilentNodes, reclaimFromDeadNodes } from './nodes/liveness.service.js';
import { expireOrphanedTransfers } from './transfers/transfer-expiry.js';
import { proofDepsOf } from './audits/audits.routes.js';
import { expireAudits, runProofs } from './audits/proof.service.js';

export const EXPIRY_LOOP = 'expire-allocations';
export const PRIORITY_LOOP = 'update-priorities';
export const LIVENESS_LOOP = 'mark-silent-nodes';
export const RECLAIM_LOOP = 'reclaim-dead-nodes';
export const IMPORTS_LOOP = 'run-imports';
export const CATALOG_SYNC_LOOP = 'sync-catalogs';
export const TASKS_LOOP = 'run-tasks';
export const WORKER_CHECK_LOOP = 'check-workers';
export const RENTAL_EXPIRY_LOOP = 'expire-rentals';
export const SCHEDULES_LOOP = 'fire-schedules';
export const TRANSFER_EXPIRY_LOOP = 'expire-transfers';
export const PROOFS_LOOP = 'prove-copies';
export const AUDIT_EXPIRY_LOOP = 'expire-audits';
/** Spot checks and audits are started every 10 s, AUDITS_PER_MINUTE / 6 at a time. */
const PROOFS_PASS_MS = 10_000;

/** Every background loop of `dispatcher serve`, with its interval. Each pass runs on one instance. */
export function defineLoops(ctx: AppContext): LoopDefinition[] {
  const proofs = proofDepsOf(ctx);
  return [
    {
      name: PROOFS_LOOP,
      intervalMs: PROOFS_PASS_MS,
      tick: (now) => runProofs(ctx.db, ctx.dialect, proofs, PROOFS_PASS_MS, now),
    },
    {
      name: AUDIT_EXPIRY_LOOP,
      // A tenth of the deadline: a miss is recorded at most 10 % late.
      intervalMs: Math.max(1000, Math.floor(ctx.config.auditDeadlineMs / 10)),
      tick: (now) => expireAudits(ctx.db, proofs, now),
    },
    {
      name: EXPIRY_LOOP,
      // Leases are hours long; half a minute of lateness is noise, and the pass is one indexed UPDATE.
      intervalMs: 30_000,
      tick: (now) => expireDueAllocations(ctx.db, failurePolicyFrom(ctx.config), now),
    },
    {
      name: LIVENESS_LOOP,
      // A tenth of the timeout: a silent node is noticed at most 10 % late.
      intervalMs: Math.max(1000, Math.floor(ctx.config.nodeTimeoutMs / 10)),
      tick: (now) => markSilentNodes(ctx.db, now, { timeoutMs: ctx.config.nodeTimeoutMs, graceMs: ctx.config.nodeDeadGraceMs }),
    },
    {
      name: RECLAIM_LOOP,
      // Once a minute, so RECLAIM_MAX_PER_MINUTE is exactly the brake.
      intervalMs: 60_000,
      tick: (now) => reclaimFromDeadNodes(ctx.db, now, ctx.config.reclaimMaxPerMinute),
    },
    {
      name: PRIORITY_LOOP,
      intervalMs: ctx.config.autoUpdateIntervalMs,
      tick: (now) => applyPriorityPolicy(ctx.db, ctx.dialect, { policy: ctx.config.priorityPolicy, agingMs: ctx.config.priorityAgingMs }, now),
    },
    {
      name: IMPORTS_LOOP,
      // Starts queued imports and resumes those of a dead instance (its lease, IMPORT_LEASE_MS, lapsed);
      // a pass only claims jobs, which then run in the background on the instance that claimed them.
      intervalMs: 30_000,
      tick: (now) => ctx.imports.runDue(now),
    },
    // Periodic re-sync of the configured catalogs, when CATALOG_SYNC_INTERVAL is set.
    ...(ctx.config.catalogSyncIntervalMs === undefined
      ? []
      : [{ name: CATALOG_SYNC_LOOP, intervalMs: ctx.config.catalogSyncIntervalMs, tick: (now: number) => syncCatalogs(ctx, now) }]),
    {
      name: TASKS_LOOP,
      // Cleanup after a release returns the worker to the pool within seconds.
      intervalMs: 5_000,
      tick: (now) => runDueTasks(ctx.db, ctx, now),
    },
    {
      name: WORKER_CHECK_LOOP,
      intervalMs: ctx.config.workerProbeIntervalMs,
      tick: async (now) => ({ probes: await probeWorkers(ctx.db, ctx, now), migrations: await moveRentalsOffDeadWorkers(ctx.db, ctx, ctx.clock.now()) }),
    },
    {
      name: RENTAL_EXPIRY_LOOP,
      intervalMs: 30_000,
      tick: (now) => expireRentals(ctx.db, ctx, now),
    },
    {
      name: SCHEDULES_LOOP,
      // Window boundaries fire within 15 s; a node window is enforced at the exact boundary by /allocate itself.
      intervalMs: 15_000,
      tick: (now) => fireSchedules(ctx.db, ctx, now),
    },
    {
      name: TRANSFER_EXPIRY_LOOP,
      // Only transfers whose relay stopped with its instance: a running relay ends its own on time.
      intervalMs: 60_000,
      tick: (now) => expireOrphanedTransfers(ctx.db, now),
    },
  ];
}
