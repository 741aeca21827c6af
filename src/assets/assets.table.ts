import type { Generated, Selectable } from 'kysely';

/**
 * `gone`: the source vanished and no copy exists; `unreachable`: no longer given (an asset whose
 * source vanished with copies left stays pending or rescued, and is repaired from its copies); `suspect`: nodes found the catalogued size or checksum wrong, so it is not handed out
 * until an admin or a re-import with other values resolves it.
 */
export const ASSET_STATES = ['pending', 'rescued', 'gone', 'unreachable', 'suspect'] as const;
export type AssetState = (typeof ASSET_STATES)[number];

export interface AssetsTable {
  id: string;
  name: string;
  url: string;
  size_bytes: number | null;
  priority: number;
  replicas_target: number;
  state: AssetState;
  /** Verified copies. */
  copies: number;
  /** Verified copies plus active allocations: what invariant 1 bounds by replicas_target. */
  holders: number;
  source: string | null;
  dataset: string | null;
  organization: string | null;
  format: string | null;
  sha256: string | null;
  /** The Merkle root the counted copies agree on: what audits check blocks against. */
  merkle_root: string | null;
  first_seen_at: number;
  last_seen_at: number;
  removed_from_source_at: number | null;
  priority_changed_at: number;
  /** Distinct nodes that found the source answering 404/410. */
  source_errors: Generated<number>;
  source_error: string | null;
  source_error_at: number | null;
  /** The host the URL is fetched from (sourceHostOf), for the fleet-wide cap per host. */
  source_host: string | null;
  /** Failed attempts recorded against this asset: cooldowns are looked up only when there are any. */
  retry_failures: Generated<number>;
  /** Size or checksum mismatches reported after this time count towards `suspect`. */
  mismatches_since: Generated<number>;
}

export type AssetRow = Selectable<AssetsTable>;
