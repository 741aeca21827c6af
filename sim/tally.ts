/** What the campaign counts as it goes, besides what it reads back from the database. */
export interface Tally {
  bytesDownloaded: number;
  bytesWasted: number;
  wasteByReason: Record<string, number>;
  /** Bytes downloaded from the mass failure on, for assets that were at target just before it. */
  repairBytes: number;
  requests: number;
  grants: number;
  /** Grants and /allocate requests per simulated minute: the load the control plane serves. */
  grantsPerMinute: Map<number, number>;
  requestsPerMinute: Map<number, number>;
  /** Grants per node-asset pair (its count of 2 or more is a retry). */
  pairGrants: Map<string, number>;
  completions: number;
  countedAtOnce: number;
  refusedCompletions: Record<string, number>;
  releases: Record<string, number>;
  refusals: Record<string, number>;
  audits: Record<string, number>;
  heartbeats: number;
  reportedMissing: number;
  /** Steps in which a lower-priority asset got a further copy while one of priority ≥ 8 had none and could have been given. */
  starvationSteps: number;
  starvationExample: string | null;
  /** Wall milliseconds per kind of call, for the report's "where the time goes". */
  wallMs: Record<string, number>;
  wasted(bytes: number, reason: string): void;
  time(kind: string, startedAt: number): void;
}

export function createTally(): Tally {
  const tally: Tally = {
    bytesDownloaded: 0,
    bytesWasted: 0,
    wasteByReason: {},
    repairBytes: 0,
    requests: 0,
    grants: 0,
    grantsPerMinute: new Map(),
    requestsPerMinute: new Map(),
    pairGrants: new Map(),
    completions: 0,
    countedAtOnce: 0,
    refusedCompletions: {},
    releases: {},
    refusals: {},
    audits: {},
    heartbeats: 0,
    reportedMissing: 0,
    starvationSteps: 0,
    starvationExample: null,
    wallMs: {},
    time(kind, startedAt) {
      tally.wallMs[kind] = (tally.wallMs[kind] ?? 0) + performance.now() - startedAt;
    },
    wasted(bytes, reason) {
      if (bytes <= 0) return;
      tally.bytesWasted += bytes;
      tally.wasteByReason[reason] = (tally.wasteByReason[reason] ?? 0) + bytes;
    },
  };
  return tally;
}

export function addTo(map: Map<number, number>, key: number, count: number): void {
  map.set(key, (map.get(key) ?? 0) + count);
}
