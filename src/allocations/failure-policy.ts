import type { Config } from '../config.js';
import { backoffDelay } from '../lib/backoff.js';

/**
 * Why a node gave an allocation back. The agent says which; a client that says nothing gets
 * `source_gone` for a 404/410, `source_busy` for a 429 and `other` otherwise.
 */
export const RELEASE_CAUSES = [
  'stopping',
  'source_gone',
  'source_busy',
  'source_unreachable',
  'source_error',
  'size_mismatch',
  'checksum_mismatch',
  'oversize',
  'disk_full',
  'refused_destination',
  'other',
] as const;
export type ReleaseCause = (typeof RELEASE_CAUSES)[number];

export interface FailurePolicy {
  /** First cooldown of a failed node-asset pair; each further failure of the pair doubles it. */
  cooldownMs: number;
  cooldownMaxMs: number;
  /** Distinct nodes whose mismatches make an asset suspect. */
  mismatchConfirmations: number;
  pauseDefaultMs: number;
  pauseMaxMs: number;
}

export function failurePolicyFrom(config: Config): FailurePolicy {
  return {
    cooldownMs: config.retryCooldownMs,
    cooldownMaxMs: config.retryCooldownMaxMs,
    mismatchConfirmations: config.mismatchConfirmations,
    pauseDefaultMs: config.sourcePauseDefaultMs,
    pauseMaxMs: config.sourcePauseMaxMs,
  };
}

export interface Verdict {
  /** The node's own fault: a strike, and the allocation ends `failed`. */
  strike: boolean;
  /** The pair waits before the node may get the asset again. */
  cooldown: boolean;
  /** Counts towards making the asset `suspect`: the catalogued size or checksum looks wrong. */
  mismatch: boolean;
  /** The source asked the whole fleet to wait. */
  pauseHost: boolean;
}

const NOTHING: Verdict = { strike: false, cooldown: false, mismatch: false, pauseHost: false };

/**
 * What a failure costs, by whose fault it is. A mismatch against a value the catalog states is the
 * node's fault until other nodes see the same (then the asset is suspect and the strikes are taken
 * back); an unreachable, failing or busy source is nobody's fault. Every failure but a clean stop
 * or a gone source keeps the pair apart for a while, so no node retries one asset in a loop.
 */
export function judgeFailure(cause: ReleaseCause, asset: { size_bytes: number | null; sha256: string | null }): Verdict {
  switch (cause) {
    case 'stopping':
    case 'source_gone':
      return NOTHING;
    case 'source_busy':
      return { ...NOTHING, pauseHost: true };
    case 'size_mismatch':
    case 'oversize':
      return asset.size_bytes === null ? { ...NOTHING, cooldown: true } : { strike: true, cooldown: true, mismatch: true, pauseHost: false };
    case 'checksum_mismatch':
      return asset.sha256 === null ? { ...NOTHING, cooldown: true } : { strike: true, cooldown: true, mismatch: true, pauseHost: false };
    default:
      return { ...NOTHING, cooldown: true };
  }
}

/** The cooldown after a pair's `failures`-th failure: the first one, doubled each time, capped. */
export function cooldownAfter(failures: number, policy: Pick<FailurePolicy, 'cooldownMs' | 'cooldownMaxMs'>): number {
  return backoffDelay(failures - 1, policy.cooldownMs, policy.cooldownMaxMs);
}

/** How long a busy source pauses its host: its Retry-After, or the default, never past the cap. */
export function pauseFor(retryAfterSeconds: number | undefined, policy: Pick<FailurePolicy, 'pauseDefaultMs' | 'pauseMaxMs'>): number {
  const asked = retryAfterSeconds === undefined ? policy.pauseDefaultMs : retryAfterSeconds * 1000;
  return Math.min(policy.pauseMaxMs, Math.max(1000, asked));
}

/** The cause a client left unsaid, from the source's status. */
export function causeOf(cause: ReleaseCause | undefined, sourceStatus: number | undefined): ReleaseCause {
  if (cause !== undefined) return cause;
  if (sourceStatus === 404 || sourceStatus === 410) return 'source_gone';
  if (sourceStatus === 429) return 'source_busy';
  return 'other';
}

/** The prefixes of `end_reason` that record a mismatch (as `<cause>: <detail>`). */
export const MISMATCH_REASONS = ['size_mismatch', 'checksum_mismatch', 'oversize'] as const;
