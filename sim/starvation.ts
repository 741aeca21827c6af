import { coolingDown } from '../src/allocations/retry-cooldowns.repository.js';
import { activeByHost } from '../src/sources/sources.repository.js';
import type { ControlPlane } from './control-plane.js';
import type { Tally } from './tally.js';
import type { SimJob } from './agents.js';
import { AGENT_RESERVE_BYTES, type SimNode, type World } from './world.js';

/** The priority the promise is about: no asset this important waits for a first copy while a lesser one gets a further one. */
export const HIGH_PRIORITY = 8;

/**
 * Called when a step granted further copies of assets below HIGH_PRIORITY: counts the step as a
 * starvation if an asset of HIGH_PRIORITY or more still has no holder although one of those nodes
 * could have taken it (its size fits the node's disk, its host is below the cap and not paused,
 * the pair is not cooling down, the node's operator holds no copy of it).
 */
export async function checkStarvation(
  plane: ControlPlane,
  world: World,
  tally: Tally,
  granted: { priority: number; node: SimNode }[],
  now: number,
): Promise<void> {
  const waiting = await plane.db
    .selectFrom('assets')
    .select(['id', 'size_bytes', 'source_host'])
    .where('state', '=', 'pending')
    .where('holders', '=', 0)
    .where('priority', '>=', HIGH_PRIORITY)
    .where(({ or, eb, selectFrom }) =>
      or([eb('source_host', 'is', null), eb('source_host', 'not in', selectFrom('source_hosts').select('host').where('paused_until', '>', now))]),
    )
    .orderBy('priority', 'desc')
    .orderBy('first_seen_at')
    .limit(20)
    .execute();
  if (waiting.length === 0) return;
  const cap = plane.config.sourceHostMaxActive;
  // The control plane's own count: it includes the work of crashed nodes not yet reclaimed.
  const hostActive =
    cap > 0
      ? await activeByHost(
          plane.db,
          waiting.flatMap((asset) => (asset.source_host === null ? [] : [asset.source_host])),
        )
      : new Map<string, number>();
  const nodes = [...new Set(granted.map((entry) => entry.node))];
  const cooling = await coolingDown(
    plane.db,
    waiting.map((asset) => asset.id),
    nodes.map((node) => node.id as number),
    now,
  );
  for (const asset of waiting) {
    if (cap > 0 && asset.source_host !== null && (hostActive.get(asset.source_host) ?? 0) >= cap) continue;
    const taker = nodes.find((node) => {
      const reserved = [...(node.jobs.values() as Iterable<SimJob>)].reduce((sum, job) => sum + job.reserved, 0);
      const free = node.diskBytes - [...node.copies.values()].reduce((sum, bytes) => sum + bytes, 0) - reserved - AGENT_RESERVE_BYTES;
      const size = asset.size_bytes ?? plane.config.unknownSizeEstimateBytes;
      return size <= free && !cooling.get(asset.id)?.has(node.id as number);
    });
    if (!taker) continue;
    tally.starvationSteps += 1;
    tally.starvationExample ??= `at ${new Date(now).toISOString()}: ${asset.id} (priority ≥ ${HIGH_PRIORITY}, no holder, source host ${asset.source_host}) waited while ${granted.length} further copies of lower priorities were granted, e.g. to ${taker.name}`;
    return;
  }
}
