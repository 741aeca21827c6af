import { expireDueAllocations } from './allocations/allocations.service.js';
import { applyPriorityPolicy } from './assets/priority.service.js';
import type { AppContext } from './http/context.js';
import type { LoopDefinition } from './lib/loop.js';

export const EXPIRY_LOOP = 'expire-allocations';
export const PRIORITY_LOOP = 'update-priorities';

/** Every background loop of `dispatcher serve`, with its interval. Each pass runs on one instance. */
export function defineLoops(ctx: AppContext): LoopDefinition[] {
  return [
    {
      name: EXPIRY_LOOP,
      // Leases are hours long; half a minute of lateness is noise, and the pass is one indexed UPDATE.
      intervalMs: 30_000,
      tick: (now) => expireDueAllocations(ctx.db, now),
    },
    {
      name: PRIORITY_LOOP,
      intervalMs: ctx.config.autoUpdateIntervalMs,
      tick: (now) =>
        applyPriorityPolicy(ctx.db, ctx.dialect, { policy: ctx.config.priorityPolicy, agingMs: ctx.config.priorityAgingMs }, now),
    },
  ];
}
