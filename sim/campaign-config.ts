import fs from 'node:fs';

/** A log-normal distribution: its median and the sigma of its logarithm. */
export interface LogNormalSpec {
  median: number;
  sigma: number;
}

/** A world event at a simulated hour. */
export type CampaignEvent =
  | { kind: 'mass_failure'; hour: number; share: number }
  | { kind: 'volunteer_wave'; hour: number; nodes: number }
  | { kind: 'portal_dark'; hour: number; hosts: number };

/** Everything a campaign is made of; sim/README.md documents each key. */
export interface CampaignConfig {
  seed: number;
  nodes: number;
  assets: number;
  days: number;
  /** Simulated seconds per step: downloads advance, nodes act and the control plane's loops run once per step at most. */
  stepSeconds: number;
  /** Every this many simulated hours the figures are sampled. */
  sampleHours: number;
  /** The control plane's settings, as environment variables (parsed by src/config.ts's loadConfig). */
  controlPlane: Record<string, string>;
  /** Priority classes the report is broken down by, as [min, max] inclusive. */
  priorityClasses: [number, number][];
  nodeModel: {
    diskGb: LogNormalSpec;
    bandwidthMbS: LogNormalSpec;
    /** Downloads at once (AGENT_CONCURRENCY). */
    concurrency: number;
    /** Seconds a node waits before asking again after an empty answer (the agent's AGENT_POLL_SECONDS). */
    pollSeconds: number;
    /** Seconds between two heartbeats of an online node (the control plane asks NODE_TIMEOUT_SECONDS / 5). */
    heartbeatSeconds: number;
    /** Mean hours of an online session and of an offline gap (exponential). */
    onHours: number;
    offHours: number;
    /** 0..1: how much more likely a node is to be online at its local afternoon than at night. */
    dailyAmplitude: number;
    /** Share of sessions that end with a clean stop (work given back, `offline`) rather than a crash. */
    cleanStopShare: number;
    /** Share of nodes that die for good at a uniformly random time of the campaign (disk and copies gone). */
    dieShare: number;
    /** Share of nodes that claim copies they never downloaded and answer audits wrong. */
    liarShare: number;
    /** Share of nodes whose copies vanish from disk (reported missing at restart and in audits). */
    deleterShare: number;
    /** A deleter's chance per copy per day of losing it. */
    deleteRatePerDay: number;
    /** Share of operators with a single node; the others own 2..maxNodesPerOperator. */
    singleNodeOperatorShare: number;
    maxNodesPerOperator: number;
    /** Values of the spread tag (region) nodes draw from. */
    regions: string[];
  };
  assetModel: {
    sizeMb: LogNormalSpec;
    /** Share of assets catalogued without a size. */
    unknownSizeShare: number;
    /** Weights of priorities 1..10. */
    priorityWeights: number[];
    /** Source hosts (portals) and how unevenly assets spread over them (Zipf exponent). */
    hosts: number;
    hostZipf: number;
    /** Each source's chance per day of vanishing (404 from then on). */
    vanishPerDay: number;
    /** Share of hosts that answer slowly, and their rate per download. */
    slowHostShare: number;
    slowHostMbS: number;
    /** Share of assets whose catalogued size is wrong. */
    misSizedShare: number;
  };
  events: CampaignEvent[];
}

export const DEFAULT_CONFIG_FILE = new URL('./campaign.json', import.meta.url);

/** The campaign file's settings, with the command line's on top. Unknown keys are refused: a typo must not pass silently. */
export function loadCampaignConfig(file: string | URL, overrides: Partial<Pick<CampaignConfig, 'seed' | 'nodes' | 'assets' | 'days'>> = {}): CampaignConfig {
  const parsed = JSON.parse(fs.readFileSync(file, 'utf8')) as Record<string, unknown>;
  const config = fromJson(parsed);
  return { ...config, ...Object.fromEntries(Object.entries(overrides).filter(([, value]) => value !== undefined)) };
}

const TOP_KEYS = [
  'seed',
  'nodes',
  'assets',
  'days',
  'step_seconds',
  'sample_hours',
  'control_plane',
  'priority_classes',
  'node_model',
  'asset_model',
  'events',
];

/** The campaign file is snake_case JSON; the code reads camelCase. */
export function fromJson(json: Record<string, unknown>): CampaignConfig {
  const unknown = Object.keys(json).filter((key) => !TOP_KEYS.includes(key) && !key.startsWith('_'));
  if (unknown.length > 0) throw new Error(`Unknown campaign keys: ${unknown.join(', ')}`);
  const camel = (value: unknown): unknown => {
    if (Array.isArray(value)) return value.map(camel);
    if (value === null || typeof value !== 'object') return value;
    return Object.fromEntries(
      Object.entries(value as Record<string, unknown>)
        .filter(([key]) => !key.startsWith('_'))
        .map(([key, inner]) => [key.replace(/_([a-z])/g, (_, letter: string) => letter.toUpperCase()), camel(inner)]),
    );
  };
  const { controlPlane: _ignored, ...rest } = camel(json) as CampaignConfig;
  return { ...rest, controlPlane: (json.control_plane ?? {}) as Record<string, string> } as CampaignConfig;
}
