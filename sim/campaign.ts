import { createFakeClock } from '../src/clock.js';
import type { DatabaseHandle } from '../src/db/database.js';
import type { CampaignConfig, CampaignEvent } from './campaign-config.js';
import { giveBack, reportCopy, sendHeartbeat, startAgent, startJob, stopAgent, type SimJob } from './agents.js';
import { controlPlaneConfig, createControlPlane, importCatalog, registerJoinedNodes, runDueLoops, type ControlPlane } from './control-plane.js';
import { checkStarvation } from './starvation.js';
import { createSampler, type Sampler } from './sampler.js';
import { createSourceFetch } from './sources.js';
import { addTo, createTally, type Tally } from './tally.js';
import { exponential } from './random.js';
import { AGENT_RESERVE_BYTES, addNodes, buildWorld, dailyFactor, downloadRate, dropCopy, dropJob, holdersOf, type SimNode, type World } from './world.js';

const HOUR = 3_600_000;
const DAY = 24 * HOUR;

export interface CampaignRun {
  config: CampaignConfig;
  world: World;
  plane: ControlPlane;
  tally: Tally;
  sampler: Sampler;
  wall: { setupMs: number; runMs: number; perDayMs: number[]; agentsMs: number; asksMs: number };
}

/** Runs a whole campaign against the control plane on `handle` (a migrated, empty database). */
export async function runCampaign(handle: DatabaseHandle, config: CampaignConfig, log: (line: string) => void = () => undefined): Promise<CampaignRun> {
  const setupStarted = performance.now();
  const clock = createFakeClock();
  const start = clock.now();
  const world = buildWorld(config, start);
  const stepMs = config.stepSeconds * 1000;
  const plane = createControlPlane(handle, controlPlaneConfig(config.controlPlane), clock, createSourceFetch(world, clock), world.random.fork(), stepMs);
  const tally = createTally();
  await importCatalog(plane, world.assets, start);
  const tokens = new Map<number, number>();
  await registerJoinedNodes(plane, world, tokens, start);
  const sampler = await createSampler(plane, world, config, tally);
  const churn = world.random.fork();
  for (const node of world.nodes) initialSession(config, node, churn, start);
  const wall = { setupMs: performance.now() - setupStarted, runMs: 0, perDayMs: [] as number[], agentsMs: 0, asksMs: 0 };
  log(`set up ${world.nodes.length} nodes, ${world.assets.length} assets in ${(wall.setupMs / 1000).toFixed(1)} s`);

  const end = start + config.days * DAY;
  const events = [...config.events].sort((a, b) => a.hour - b.hour);
  let dayStarted = performance.now();
  let nextSampleAt = start;
  for (let now = start; now <= end; now += stepMs) {
    clock.set(now);
    while (events.length > 0 && start + (events[0] as CampaignEvent).hour * HOUR <= now) {
      await applyEvent(plane, world, config, tally, sampler, events.shift() as CampaignEvent, churn, now);
      await registerJoinedNodes(plane, world, tokens, now);
    }
    const agentsStarted = performance.now();
    await moveNodes(plane, world, config, tally, churn, now);
    await advanceDownloads(plane, world, config, tally, sampler, stepMs, now);
    const asksStarted = performance.now();
    wall.agentsMs += asksStarted - agentsStarted;
    await askForWork(plane, world, config, tally, now);
    wall.asksMs += performance.now() - asksStarted;
    await runDueLoops(plane, now);
    if (now >= nextSampleAt) {
      await sampler.sample(now);
      nextSampleAt += config.sampleHours * HOUR;
    }
    if ((now - start) % DAY === 0 && now > start) {
      wall.perDayMs.push(performance.now() - dayStarted);
      dayStarted = performance.now();
      log(`day ${(now - start) / DAY}: ${(wall.perDayMs.at(-1)! / 1000).toFixed(1)} s wall, ${sampler.lastLine()}`);
    }
  }
  wall.runMs = wall.perDayMs.reduce((sum, ms) => sum + ms, 0) + (performance.now() - dayStarted);
  await sampler.finish(end);
  return { config, world, plane, tally, sampler, wall };
}

function initialSession(config: CampaignConfig, node: SimNode, random: World['random'], now: number): void {
  const { onHours, offHours } = config.nodeModel;
  node.online = false;
  // Starts online with the share of time a node spends online; its first change comes at a random point of that session.
  const onlineAtStart = random.next() < onHours / (onHours + offHours);
  node.nextToggleAt = onlineAtStart ? node.joinsAt : node.joinsAt + exponential(random, offHours * HOUR);
  if (node.joinsAt > now) node.nextToggleAt = node.joinsAt;
}

async function applyEvent(
  plane: ControlPlane,
  world: World,
  config: CampaignConfig,
  tally: Tally,
  sampler: Sampler,
  event: CampaignEvent,
  random: World['random'],
  now: number,
): Promise<void> {
  if (event.kind === 'mass_failure') {
    await sampler.markFailure(now);
    const living = world.nodes.filter((node) => !node.dead && node.joinsAt <= now);
    const doomed = living.filter(() => random.next() < event.share);
    for (const node of doomed) kill(node, tally);
    sampler.pruneRecoverable(now);
  } else if (event.kind === 'volunteer_wave') {
    for (const node of addNodes(world, config, event.nodes, now, random.fork())) initialSession(config, node, random, now);
  } else {
    const byAssets = world.hosts.map((_, index) => index);
    const counts = new Map<number, number>();
    for (const asset of world.assets) counts.set(asset.host, (counts.get(asset.host) ?? 0) + 1);
    byAssets.sort((a, b) => (counts.get(b) ?? 0) - (counts.get(a) ?? 0));
    for (const index of byAssets.slice(0, event.hosts)) world.hosts[index]!.darkFrom = now;
  }
  void plane;
}

/** A node gone for good: its disk and copies with it; the control plane learns it only from its silence. */
function kill(node: SimNode, tally: Tally): void {
  for (const job of [...node.jobs.values()]) {
    tally.wasted(job.bytesDone, 'node_died');
    dropJob(node, job.assetId);
  }
  for (const assetId of [...node.copies.keys()]) dropCopy(node, assetId);
  node.vanished.clear();
  node.online = false;
  node.dead = true;
}

/** Sessions begin and end; some nodes die; deleters lose copies. */
async function moveNodes(plane: ControlPlane, world: World, config: CampaignConfig, tally: Tally, random: World['random'], now: number): Promise<void> {
  const model = config.nodeModel;
  const loseChance = (model.deleteRatePerDay * config.stepSeconds * 1000) / DAY;
  for (const node of world.nodes) {
    if (node.dead || node.id === null) continue;
    if (node.diesAt !== null && node.diesAt <= now) {
      kill(node, tally);
      continue;
    }
    if (node.kind === 'deleter' && node.copies.size > 0) {
      for (const assetId of [...node.copies.keys()]) {
        if (random.next() < loseChance) {
          dropCopy(node, assetId);
          node.vanished.add(assetId);
        }
      }
    }
    if (node.nextToggleAt > now) continue;
    const factor = dailyFactor(config, node, now);
    if (node.online) {
      node.online = false;
      if (random.next() < model.cleanStopShare) await stopAgent(plane, node, tally, now);
      for (const job of [...node.jobs.values()]) {
        tally.wasted(job.bytesDone, 'crash');
        dropJob(node, job.assetId);
      }
      node.nextToggleAt = now + exponential(random, (model.offHours * HOUR) / factor);
    } else {
      node.online = true;
      await startAgent(plane, node, tally, now);
      await sendHeartbeat(plane, node, tally, now);
      node.nextHeartbeatAt = now + model.heartbeatSeconds * 1000;
      node.nextAskAt = now;
      node.nextToggleAt = now + exponential(random, model.onHours * HOUR * factor);
    }
  }
}

/** Each online node's downloads advance at its share of its bandwidth; finished and failed ones are reported; heartbeats go out. */
async function advanceDownloads(
  plane: ControlPlane,
  world: World,
  config: CampaignConfig,
  tally: Tally,
  sampler: Sampler,
  stepMs: number,
  now: number,
): Promise<void> {
  for (const node of world.nodes) {
    if (!node.online) continue;
    for (const job of [...node.jobs.values()] as SimJob[]) {
      const asset = world.assetsById.get(job.assetId)!;
      const limit = job.fate ? job.fate.afterBytes : job.bytes;
      const moved = Math.min(limit - job.bytesDone, (downloadRate(world, config, node, asset) * stepMs) / 1000);
      job.bytesDone += moved;
      if (node.kind !== 'liar') {
        tally.bytesDownloaded += moved;
        if (sampler.isRepair(job.assetId)) tally.repairBytes += moved;
      }
      if (job.bytesDone < limit) continue;
      if (job.fate) await giveBack(plane, node, job, job.fate, tally, now);
      else await reportCopy(plane, world, node, job, tally, now);
    }
    if (node.nextHeartbeatAt <= now) {
      await sendHeartbeat(plane, node, tally, now);
      node.nextHeartbeatAt = now + config.nodeModel.heartbeatSeconds * 1000;
    }
  }
}

/** Nodes with a free slot ask /allocate (through the route's group-commit batcher), as the agent does. */
async function askForWork(plane: ControlPlane, world: World, config: CampaignConfig, tally: Tally, now: number): Promise<void> {
  const model = config.nodeModel;
  const asking = world.nodes.filter((node) => node.online && node.jobs.size < model.concurrency && node.nextAskAt <= now);
  const minute = Math.floor(now / 60_000);
  const outcomes = await Promise.all(
    asking.map((node) => {
      const used = [...node.copies.values()].reduce((sum, bytes) => sum + bytes, 0) + [...node.jobs.values()].reduce((sum, job) => sum + job.bytesDone, 0);
      return plane.batcher.allocate({
        nodeId: node.id as number,
        freeBytes: Math.max(0, Math.floor(node.diskBytes - used - AGENT_RESERVE_BYTES)),
        maxAssets: model.concurrency - node.jobs.size,
        minPriority: 1,
        actor: `node:${node.name}`,
      });
    }),
  );
  tally.requests += asking.length;
  addTo(tally.requestsPerMinute, minute, asking.length);
  const secondCopies: { priority: number; node: SimNode }[] = [];
  asking.forEach((node, index) => {
    const { granted, refusal } = outcomes[index]!;
    if (refusal) tally.refusals[refusal] = (tally.refusals[refusal] ?? 0) + 1;
    if (granted.length === 0) {
      node.nextAskAt = now + model.pollSeconds * 1000;
      return;
    }
    for (const asset of granted) {
      const pair = `${node.index}:${asset.id}`;
      tally.pairGrants.set(pair, (tally.pairGrants.get(pair) ?? 0) + 1);
      if (holdersOf(asset.id, node) > 0 && asset.priority < 8) secondCopies.push({ priority: asset.priority, node });
      startJob(world, node, asset, now);
    }
    tally.grants += granted.length;
    addTo(tally.grantsPerMinute, minute, granted.length);
  });
  if (secondCopies.length > 0) await checkStarvation(plane, world, tally, secondCopies, now);
}
