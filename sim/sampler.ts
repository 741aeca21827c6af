import { sql } from 'kysely';
import type { CampaignConfig } from './campaign-config.js';
import type { ControlPlane } from './control-plane.js';
import type { Tally } from './tally.js';
import { firstPriorityOf, presence, sourceStatus, type World } from './world.js';

const HOUR = 3_600_000;

/** One sample of the campaign: what the control plane counts, and what is true on the nodes' disks. */
export interface Sample {
  hour: number;
  /** Per priority class (config order): share of its assets at target, as the control plane counts copies. */
  atTarget: number[];
  nodesOnline: number;
  nodesByStatus: Record<string, number>;
  /** Assets that had reached their target and are below it again (the control plane's count). */
  repairQueue: number;
  /** Assets the control plane counts at target whose copies on living disks are fewer. */
  hiddenDeficit: number;
  /** Copies waiting for their spot check. */
  pendingProofs: number;
  /** Assets with at least their target of copies on living disks. */
  trulyAtTarget: number;
  /** After the mass failure: recoverable assets (at target before it) back at target on living disks, and as counted. */
  recovered: number | null;
  recoveredCounted: number | null;
}

export interface Sampler {
  samples: Sample[];
  /** The mass failure: when, and the recoverable assets that were at target just before it. */
  failure: { at: number; atTarget: number; recoverable: number } | null;
  sample(now: number): Promise<void>;
  markFailure(now: number): Promise<void>;
  pruneRecoverable(now: number): void;
  isRepair(assetId: string): boolean;
  /** Recoverable assets not back at target on living disks. */
  unrecovered(): string[];
  lastLine(): string;
  finish(now: number): Promise<void>;
  targets: Map<string, number>;
}

export async function createSampler(plane: ControlPlane, world: World, config: CampaignConfig, tally: Tally): Promise<Sampler> {
  const rows = await plane.db.selectFrom('assets').select(['id', 'replicas_target']).execute();
  const targets = new Map(rows.map((row) => [row.id, Number(row.replicas_target)]));
  const classOf = (assetId: string) => config.priorityClasses.findIndex(([min, max]) => firstPriorityOf(assetId) >= min && firstPriorityOf(assetId) <= max);
  const classSizes = config.priorityClasses.map(() => 0);
  for (const asset of world.assets) {
    const index = classOf(asset.id);
    if (index >= 0) classSizes[index]! += 1;
  }
  const everAtTarget = new Set<string>();
  let recoverable: Set<string> | null = null;
  const start = world.start;

  const atTargetNow = async () =>
    new Set(
      (
        await plane.db
          .selectFrom('assets')
          .select('id')
          .where(sql<boolean>`copies >= replicas_target`)
          .execute()
      ).map((row) => row.id),
    );
  const trulyAt = (assetId: string) => (presence.copies.get(assetId)?.size ?? 0) >= (targets.get(assetId) ?? 1);

  const sampler: Sampler = {
    samples: [],
    failure: null,
    targets,
    async sample(now) {
      const atTarget = await atTargetNow();
      const perClass = config.priorityClasses.map(() => 0);
      let hiddenDeficit = 0;
      for (const id of atTarget) {
        everAtTarget.add(id);
        const index = classOf(id);
        if (index >= 0) perClass[index]! += 1;
        if (!trulyAt(id)) hiddenDeficit += 1;
      }
      let trulyAtTarget = 0;
      for (const id of presence.copies.keys()) if (trulyAt(id)) trulyAtTarget += 1;
      const statuses = await plane.db
        .selectFrom('nodes')
        .select(['status', sql<number>`count(*)`.as('count')])
        .groupBy('status')
        .execute();
      const pending = await plane.db
        .selectFrom('allocations')
        .select(sql<number>`count(*)`.as('count'))
        .where('state', '=', 'completed')
        .where('proof', '=', 'pending')
        .executeTakeFirstOrThrow();
      let recovered: number | null = null;
      let recoveredCounted: number | null = null;
      if (recoverable) {
        recovered = 0;
        recoveredCounted = 0;
        for (const id of recoverable) {
          if (trulyAt(id)) recovered += 1;
          if (atTarget.has(id)) recoveredCounted += 1;
        }
      }
      sampler.samples.push({
        hour: (now - start) / HOUR,
        atTarget: perClass.map((count, index) => (classSizes[index] ? count / (classSizes[index] as number) : 0)),
        nodesOnline: world.nodes.filter((node) => node.online).length,
        nodesByStatus: Object.fromEntries(statuses.map((row) => [row.status, Number(row.count)])),
        repairQueue: everAtTarget.size - atTarget.size,
        hiddenDeficit,
        pendingProofs: Number(pending.count),
        trulyAtTarget,
        recovered,
        recoveredCounted,
      });
    },
    async markFailure(now) {
      const atTarget = await atTargetNow();
      // Recoverable: a copy survives somewhere, or the source still serves it; pruneRecoverable judges that once the failure struck.
      recoverable = atTarget;
      sampler.failure = { at: now, atTarget: atTarget.size, recoverable: 0 };
    },
    pruneRecoverable(now) {
      if (!recoverable || !sampler.failure) return;
      for (const id of [...recoverable]) {
        const asset = world.assetsById.get(id);
        const copies = presence.copies.get(id)?.size ?? 0;
        if (copies === 0 && (!asset || sourceStatus(world, asset, now) !== 200)) recoverable.delete(id);
      }
      sampler.failure.recoverable = recoverable.size;
    },
    unrecovered() {
      return [...(recoverable ?? [])].filter((id) => !trulyAt(id));
    },
    isRepair(assetId) {
      return recoverable?.has(assetId) ?? false;
    },
    lastLine() {
      const last = sampler.samples.at(-1);
      if (!last) return '';
      const shares = last.atTarget.map((share) => `${(share * 100).toFixed(1)}%`).join('/');
      return `at target ${shares}, online ${last.nodesOnline}, pending proofs ${last.pendingProofs}, repair queue ${last.repairQueue}, grants ${tally.grants}`;
    },
    async finish(now) {
      await sampler.sample(now);
    },
  };
  return sampler;
}
