import crypto from 'node:crypto';
import type { CampaignConfig } from './campaign-config.js';
import { createRandom, exponential, logNormal, weightedIndex, zipfWeights, type Random } from './random.js';

// The outside world of a campaign: volunteers' nodes and the portals' sources. Modelled freely;
// nothing here decides what the control plane does.

const MIB = 1024 * 1024;
const GIB = 1024 * MIB;
const HOUR = 3_600_000;
const DAY = 24 * HOUR;
/** What the agent never fills (AGENT_RESERVE_GB's default). */
export const AGENT_RESERVE_BYTES = GIB;

export type NodeKind = 'honest' | 'liar' | 'deleter';

export interface Job {
  assetId: string;
  /** The bytes the download will actually take (the source's real size). */
  bytes: number;
  /** What the control plane set aside: the catalogued size, or its estimate for an unknown one. */
  reserved: number;
  bytesDone: number;
  fromPeers: boolean;
}

export interface SimNode {
  index: number;
  name: string;
  operator: number;
  region: string;
  kind: NodeKind;
  diskBytes: number;
  bandwidthBps: number;
  /** Hours of local time added to the campaign clock (its daily pattern). */
  phaseHours: number;
  /** When it joins (a wave of volunteers joins later), and when it dies for good (null: never). */
  joinsAt: number;
  diesAt: number | null;
  id: number | null;
  online: boolean;
  dead: boolean;
  nextToggleAt: number;
  nextAskAt: number;
  nextHeartbeatAt: number;
  /** Copies on its disk: asset id → bytes. */
  copies: Map<string, number>;
  /** Copies that vanished from its disk since its agent last looked. */
  vanished: Set<string>;
  jobs: Map<string, Job>;
}

export interface SimAsset {
  id: string;
  priority: number;
  bytes: number;
  /** What the catalog says: null when unknown, else the size (wrong for a mis-sized asset). */
  catalogBytes: number | null;
  host: number;
  url: string;
  /** When its source starts answering 404 (Infinity: never). */
  vanishesAt: number;
}

export interface SimHost {
  name: string;
  slow: boolean;
  darkFrom: number;
}

export interface World {
  random: Random;
  /** The campaign's first moment (epoch ms). */
  start: number;
  nodes: SimNode[];
  assets: SimAsset[];
  assetsById: Map<string, SimAsset>;
  hosts: SimHost[];
  /** Operators' user names, by index. */
  operators: string[];
}

/** Asset ids carry their first priority (`p07-000123`), so figures stay per class while priorities age. */
export function assetIdOf(priority: number, index: number): string {
  return `p${String(priority).padStart(2, '0')}-${String(index).padStart(7, '0')}`;
}

export function firstPriorityOf(assetId: string): number {
  return Number(assetId.slice(1, 3));
}

/** Draws the whole world from the seed: nodes, operators, hosts and assets. */
export function buildWorld(config: CampaignConfig, start: number): World {
  const random = createRandom(config.seed);
  presence.copies.clear();
  presence.jobs.clear();
  const hosts = buildHosts(config, random.fork());
  const assets = buildAssets(config, hosts, random.fork(), start);
  const world: World = { random, start, nodes: [], assets, assetsById: new Map(assets.map((asset) => [asset.id, asset])), hosts, operators: [] };
  addNodes(world, config, config.nodes, start, random.fork());
  return world;
}

function buildHosts(config: CampaignConfig, random: Random): SimHost[] {
  const model = config.assetModel;
  return Array.from({ length: model.hosts }, (_, index) => ({
    name: `h${String(index).padStart(4, '0')}.portal.example`,
    slow: random.next() < model.slowHostShare,
    darkFrom: Infinity,
  }));
}

function buildAssets(config: CampaignConfig, hosts: SimHost[], random: Random, start: number): SimAsset[] {
  const model = config.assetModel;
  const hostWeights = zipfWeights(hosts.length, model.hostZipf);
  return Array.from({ length: config.assets }, (_, index) => {
    const priority = weightedIndex(random, model.priorityWeights) + 1;
    const bytes = Math.max(1024, Math.round(logNormal(random, model.sizeMb.median, model.sizeMb.sigma) * MIB));
    const unknown = random.next() < model.unknownSizeShare;
    const misSized = !unknown && random.next() < model.misSizedShare;
    const host = weightedIndex(random, hostWeights);
    const id = assetIdOf(priority, index);
    const vanishesAt = model.vanishPerDay > 0 ? start + exponential(random, DAY / model.vanishPerDay) : Infinity;
    return {
      id,
      priority,
      bytes,
      catalogBytes: unknown ? null : misSized ? Math.round(bytes * (0.5 + random.next())) : bytes,
      host,
      url: `https://${(hosts[host] as SimHost).name}/${id}.dat`,
      vanishesAt,
    };
  });
}

/** Adds `count` volunteers (with their operators) joining at `joinsAt`. */
export function addNodes(world: World, config: CampaignConfig, count: number, joinsAt: number, random: Random): SimNode[] {
  const model = config.nodeModel;
  const campaignMs = config.days * DAY;
  const added: SimNode[] = [];
  while (added.length < count) {
    const operator = world.operators.length;
    world.operators.push(`operator-${operator}`);
    const owned = random.next() < model.singleNodeOperatorShare ? 1 : 2 + Math.floor(random.next() * Math.max(1, model.maxNodesPerOperator - 1));
    const kindDraw = random.next();
    const kind: NodeKind = kindDraw < model.liarShare ? 'liar' : kindDraw < model.liarShare + model.deleterShare ? 'deleter' : 'honest';
    for (let each = 0; each < owned && added.length < count; each += 1) {
      const index = world.nodes.length;
      const node: SimNode = {
        index,
        name: `node-${index}`,
        operator,
        region: model.regions[Math.floor(random.next() * model.regions.length)] ?? 'none',
        kind,
        diskBytes: Math.round(logNormal(random, model.diskGb.median, model.diskGb.sigma) * GIB),
        bandwidthBps: Math.max(64 * 1024, logNormal(random, model.bandwidthMbS.median, model.bandwidthMbS.sigma) * MIB),
        phaseHours: random.next() * 24,
        joinsAt,
        diesAt: random.next() < model.dieShare ? joinsAt + random.next() * Math.max(0, world.start + campaignMs - joinsAt) : null,
        id: null,
        online: false,
        dead: false,
        nextToggleAt: joinsAt,
        nextAskAt: joinsAt,
        nextHeartbeatAt: joinsAt,
        copies: new Map(),
        vanished: new Set(),
        jobs: new Map(),
      };
      world.nodes.push(node);
      added.push(node);
    }
  }
  return added;
}

/** What the source serves now: its bytes, or the status a download sees instead. */
export function sourceStatus(world: World, asset: SimAsset, now: number): 200 | 404 | 503 {
  if (now >= asset.vanishesAt) return 404;
  if (now >= (world.hosts[asset.host] as SimHost).darkFrom) return 503;
  return 200;
}

/** The rate one download from this asset's source gets on a node, in bytes per second. */
export function downloadRate(world: World, config: CampaignConfig, node: SimNode, asset: SimAsset): number {
  const share = node.bandwidthBps / Math.max(1, node.jobs.size);
  return (world.hosts[asset.host] as SimHost).slow ? Math.min(share, config.assetModel.slowHostMbS * MIB) : share;
}

const patterns = new Map<string, Buffer>();

/** The asset's bytes: a 32-byte pattern of its own, repeated, so any range can be made without storing files. */
export function contentOf(assetId: string, offset: number, length: number): Buffer {
  let pattern = patterns.get(assetId);
  if (!pattern) {
    pattern = crypto.createHash('sha256').update(`content:${assetId}`).digest();
    if (patterns.size > 100_000) patterns.clear();
    patterns.set(assetId, pattern);
  }
  const shift = offset % pattern.length;
  const rotated = Buffer.concat([pattern.subarray(shift), pattern.subarray(0, shift)]);
  return Buffer.alloc(length).fill(rotated);
}

/** The checksum of an asset's whole content, as an honest agent computes it (a stand-in: no file is hashed). */
export function checksumOf(assetId: string): string {
  return crypto.createHash('sha256').update(`sha256:${assetId}`).digest('hex');
}

/** How likely a node is to be online at this hour of its day, relative to its mean. */
export function dailyFactor(config: CampaignConfig, node: SimNode, now: number): number {
  const hour = (now / HOUR + node.phaseHours) % 24;
  return 1 + config.nodeModel.dailyAmplitude * Math.sin(((hour - 8) / 24) * 2 * Math.PI);
}

/** Who holds what, kept beside each node's own maps so lookups by asset are cheap. */
export interface Presence {
  copies: Map<string, Set<SimNode>>;
  jobs: Map<string, Set<SimNode>>;
}

export const presence: Presence = { copies: new Map(), jobs: new Map() };

function addTo(index: Map<string, Set<SimNode>>, assetId: string, node: SimNode): void {
  let set = index.get(assetId);
  if (!set) index.set(assetId, (set = new Set()));
  set.add(node);
}

function removeFrom(index: Map<string, Set<SimNode>>, assetId: string, node: SimNode): void {
  const set = index.get(assetId);
  if (!set) return;
  set.delete(node);
  if (set.size === 0) index.delete(assetId);
}

export function addJob(node: SimNode, job: Job): void {
  node.jobs.set(job.assetId, job);
  addTo(presence.jobs, job.assetId, node);
}

export function dropJob(node: SimNode, assetId: string): void {
  node.jobs.delete(assetId);
  removeFrom(presence.jobs, assetId, node);
}

export function addCopy(node: SimNode, assetId: string, bytes: number): void {
  node.copies.set(assetId, bytes);
  addTo(presence.copies, assetId, node);
}

export function dropCopy(node: SimNode, assetId: string): void {
  node.copies.delete(assetId);
  removeFrom(presence.copies, assetId, node);
}

/** Nodes (other than `except`) holding a copy or a download of the asset. */
export function holdersOf(assetId: string, except?: SimNode): number {
  let count = 0;
  for (const node of presence.copies.get(assetId) ?? []) if (node !== except) count += 1;
  for (const node of presence.jobs.get(assetId) ?? []) if (node !== except) count += 1;
  return count;
}

/** Whether a node other than `except` is online with a copy (a repair from copies can be served). */
export function copyOnline(assetId: string, except: SimNode): boolean {
  for (const node of presence.copies.get(assetId) ?? []) if (node !== except && node.online) return true;
  return false;
}
