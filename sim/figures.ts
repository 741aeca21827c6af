import { sql } from 'kysely';
import type { CampaignRun } from './campaign.js';
import { firstPriorityOf, presence, sourceStatus } from './world.js';

export interface PriorityClassFigures {
  min_priority: number;
  max_priority: number;
  assets: number;
  hours_to_50: number | null;
  hours_to_90: number | null;
  hours_to_100: number | null;
  at_target_at_end: number;
}

/** The figures of a campaign, as written to --json (sim/README.md explains each). */
export interface Figures {
  database: string;
  seed: number;
  nodes: number;
  assets: number;
  days: number;
  priority_classes: PriorityClassFigures[];
  assets_lost: number;
  assets_gone_per_control_plane: number;
  bytes_downloaded: number;
  bytes_kept: number;
  bytes_wasted: number;
  waste_ratio: number;
  waste_by_reason: Record<string, number>;
  peak_allocations_per_second: number;
  peak_requests_per_second: number;
  grants: number;
  requests: number;
  completions: number;
  largest_operator_share: number;
  mass_failure: {
    hour: number;
    assets_at_target_before: number;
    recoverable: number;
    repair_bytes: number;
    hours_to_99: number | null;
    hours_to_100: number | null;
    hours_to_100_as_counted: number | null;
    lowest_recovered_share: number;
    /** Up to 10 recoverable assets not back at target at the end, with what the control plane says of them. */
    not_recovered: {
      id: string;
      copies_on_living_disks: number;
      target: number;
      source: number;
      state: string;
      copies: number;
      holders: number;
      source_host: string | null;
    }[];
  } | null;
  retries: { pairs_granted_twice: number; pairs_granted_3_or_more: number; most_grants_of_one_pair: number };
  starvation_steps: number;
  starvation_example: string | null;
  releases: Record<string, number>;
  refused_completions: Record<string, number>;
  refusals: Record<string, number>;
  audits: Record<string, number>;
  copies_reported_missing: number;
  wall_seconds: {
    setup: number;
    run: number;
    per_simulated_day: number;
    agents: number;
    allocate: number;
    loops: Record<string, number>;
    calls: Record<string, number>;
  };
  headline: Record<string, unknown>;
}

const round = (value: number, digits = 2) => Math.round(value * 10 ** digits) / 10 ** digits;

export async function summarize(run: CampaignRun, database: string): Promise<Figures> {
  const { config, world, plane, tally, sampler, wall } = run;
  const samples = sampler.samples;
  const firstHour = (test: (share: number) => boolean, index: number) => samples.find((sample) => test(sample.atTarget[index] ?? 0))?.hour ?? null;
  const classes = config.priorityClasses.map(([min, max], index) => ({
    min_priority: min,
    max_priority: max,
    assets: world.assets.filter((asset) => asset.priority >= min && asset.priority <= max).length,
    hours_to_50: firstHour((share) => share >= 0.5, index),
    hours_to_90: firstHour((share) => share >= 0.9, index),
    hours_to_100: firstHour((share) => share >= 1, index),
    at_target_at_end: round(samples.at(-1)?.atTarget[index] ?? 0, 4),
  }));
  const end = world.start + config.days * 24 * 3_600_000;
  const lost = world.assets.filter((asset) => sourceStatus(world, asset, end) === 404 && (presence.copies.get(asset.id)?.size ?? 0) === 0).length;
  const gone = await plane.db
    .selectFrom('assets')
    .select(sql<number>`count(*)`.as('count'))
    .where('state', '=', 'gone')
    .executeTakeFirstOrThrow();
  const kept = await plane.db
    .selectFrom('allocations')
    .select(sql<number>`coalesce(sum(bytes), 0)`.as('bytes'))
    .where('state', '=', 'completed')
    .where('proof', 'in', ['proven', 'suspect'])
    .executeTakeFirstOrThrow();
  const byOperator = await plane.db
    .selectFrom('allocations')
    .innerJoin('nodes', 'nodes.id', 'allocations.node_id')
    .select([sql<number>`coalesce(nodes.operator_id, -nodes.id)`.as('operator'), sql<number>`count(*)`.as('copies')])
    .where('allocations.state', '=', 'completed')
    .where('allocations.proof', 'in', ['proven', 'suspect'])
    .groupBy(sql`coalesce(nodes.operator_id, -nodes.id)`)
    .execute();
  const totalCopies = byOperator.reduce((sum, row) => sum + Number(row.copies), 0);
  const largest = byOperator.reduce((most, row) => Math.max(most, Number(row.copies)), 0);
  const pairCounts = [...tally.pairGrants.values()];
  const peak = (perMinute: Map<number, number>) => round(Math.max(0, ...perMinute.values()) / 60, 2);
  const days = wall.perDayMs.length || 1;
  const failure = sampler.failure;
  const after = failure ? samples.filter((sample) => sample.hour * 3_600_000 + world.start > failure.at) : [];
  const firstAfter = (test: (sample: (typeof samples)[number]) => boolean) => {
    const found = after.find(test);
    return found && failure ? round(found.hour - (failure.at - world.start) / 3_600_000, 1) : null;
  };
  const stragglers = sampler.unrecovered().slice(0, 10);
  const stragglerRows =
    stragglers.length === 0
      ? []
      : await plane.db
          .selectFrom('assets')
          .select(['id', 'state', 'copies', 'holders', 'source_host', 'replicas_target'])
          .where('id', 'in', stragglers)
          .execute();
  const notRecovered = stragglerRows.map((row) => ({
    id: row.id,
    copies_on_living_disks: presence.copies.get(row.id)?.size ?? 0,
    target: Number(row.replicas_target),
    source: sourceStatus(world, world.assetsById.get(row.id)!, end),
    state: row.state,
    copies: Number(row.copies),
    holders: Number(row.holders),
    source_host: row.source_host,
  }));
  const figures: Figures = {
    database,
    seed: config.seed,
    nodes: world.nodes.length,
    assets: world.assets.length,
    days: config.days,
    priority_classes: classes,
    assets_lost: lost,
    assets_gone_per_control_plane: Number(gone.count),
    bytes_downloaded: Math.round(tally.bytesDownloaded),
    bytes_kept: Number(kept.bytes),
    bytes_wasted: Math.round(tally.bytesWasted),
    waste_ratio: tally.bytesDownloaded > 0 ? round(tally.bytesWasted / tally.bytesDownloaded, 4) : 0,
    waste_by_reason: Object.fromEntries(Object.entries(tally.wasteByReason).map(([reason, bytes]) => [reason, Math.round(bytes)])),
    peak_allocations_per_second: peak(tally.grantsPerMinute),
    peak_requests_per_second: peak(tally.requestsPerMinute),
    grants: tally.grants,
    requests: tally.requests,
    completions: tally.completions,
    largest_operator_share: totalCopies > 0 ? round(largest / totalCopies, 4) : 0,
    mass_failure: failure && {
      hour: (failure.at - world.start) / 3_600_000,
      assets_at_target_before: failure.atTarget,
      recoverable: failure.recoverable,
      repair_bytes: Math.round(tally.repairBytes),
      hours_to_99: firstAfter((sample) => (sample.recovered ?? 0) >= 0.99 * failure.recoverable),
      hours_to_100: firstAfter((sample) => (sample.recovered ?? 0) >= failure.recoverable),
      hours_to_100_as_counted: firstAfter((sample) => (sample.recoveredCounted ?? 0) >= failure.recoverable),
      not_recovered: notRecovered,
      lowest_recovered_share: round(Math.min(1, ...after.map((sample) => (sample.recovered ?? 0) / Math.max(1, failure.recoverable))), 4),
    },
    retries: {
      pairs_granted_twice: pairCounts.filter((count) => count === 2).length,
      pairs_granted_3_or_more: pairCounts.filter((count) => count >= 3).length,
      most_grants_of_one_pair: Math.max(0, ...pairCounts),
    },
    starvation_steps: tally.starvationSteps,
    starvation_example: tally.starvationExample,
    releases: tally.releases,
    refused_completions: tally.refusedCompletions,
    refusals: tally.refusals,
    audits: tally.audits,
    copies_reported_missing: tally.reportedMissing,
    wall_seconds: {
      setup: round(wall.setupMs / 1000, 1),
      run: round(wall.runMs / 1000, 1),
      per_simulated_day: round(wall.runMs / 1000 / days, 1),
      agents: round(wall.agentsMs / 1000, 1),
      allocate: round(wall.asksMs / 1000, 1),
      loops: Object.fromEntries(plane.loops.map((loop) => [loop.name, round(loop.wallMs / 1000, 1)])),
      calls: Object.fromEntries(Object.entries(tally.wallMs).map(([kind, ms]) => [kind, round(ms / 1000, 1)])),
    },
    headline: {},
  };
  void firstPriorityOf;
  figures.headline = {
    priority_classes: classes.map(
      (entry) => `${entry.min_priority}-${entry.max_priority}: 50% ${entry.hours_to_50}h, 90% ${entry.hours_to_90}h, 100% ${entry.hours_to_100}h`,
    ),
    assets_lost: lost,
    waste_ratio: figures.waste_ratio,
    peak_allocations_per_second: figures.peak_allocations_per_second,
    mass_failure_hours_to_100: figures.mass_failure?.hours_to_100 ?? null,
    wall_seconds_per_day: figures.wall_seconds.per_simulated_day,
  };
  return figures;
}
