import type { Generated, Selectable } from 'kysely';

/** `gone`: the source vanished and no copy exists; `unreachable`: it vanished, copies exist, no more can be made. */
export type AssetState = 'pending' | 'rescued' | 'gone' | 'unreachable';

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
  first_seen_at: number;
  last_seen_at: number;
  removed_from_source_at: number | null;
  priority_changed_at: number;
  /** Distinct nodes that found the source answering 404/410. */
  source_errors: Generated<number>;
  source_error: string | null;
  source_error_at: number | null;
}

export type AssetRow = Selectable<AssetsTable>;
