export interface LeasePolicy {
  /** ALLOCATION_EXPIRY_HOURS: the longest lease, and the lease when the node's rate is unknown. */
  leaseMaxMs: number;
  leaseMinMs: number;
}

// Three times the expected transfer time: room for a slow patch without keeping a dead node's
// work for long. Progress in heartbeats renews the lease anyway.
const SAFETY_FACTOR = 3;

/**
 * How long a node may hold work of `bytes` bytes: from its measured rate, clamped between the
 * minimum and ALLOCATION_EXPIRY_HOURS; without a measured rate, the seeds' fixed expiry.
 */
export function leaseFor(bytes: number, rateBytesPerSecond: number | null, policy: LeasePolicy): number {
  if (rateBytesPerSecond === null || rateBytesPerSecond <= 0) return policy.leaseMaxMs;
  const expected = (bytes / rateBytesPerSecond) * 1000 * SAFETY_FACTOR;
  return Math.round(Math.min(policy.leaseMaxMs, Math.max(policy.leaseMinMs, expected)));
}
