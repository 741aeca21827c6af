import type { Generated, Selectable } from 'kysely';

/**
 * `superseded`: a copy or claim of what the source published before a new URL or checksum (kept, no
 * longer counted). `lost`: a copy its holder reported missing or corrupt, or that served bytes other
 * than the copy's (no longer counted; repair makes another).
 */
export const ALLOCATION_STATES = ['active', 'completed', 'released', 'expired', 'reclaimed', 'failed', 'superseded', 'lost'] as const;
export type AllocationState = (typeof ALLOCATION_STATES)[number];

export interface AllocationsTable {
  id: Generated<number>;
  asset_id: string;
  node_id: number;
  state: AllocationState;
  /** Bytes set aside on the node: the asset's size, or the configured estimate when unknown. */
  reserved_bytes: number;
  created_at: number;
  expires_at: number;
  ended_at: number | null;
  end_reason: string | null;
  bytes: number | null;
  sha256: string | null;
  uri: string | null;
  /** 1 when this completed allocation counts as a verified copy. */
  verified: number;
  /** Bytes downloaded so far, from the node's heartbeats. */
  bytes_done: number | null;
  progress_at: number | null;
  /** The asset's source host when granted: what the per-host cap counts. */
  source_host: string | null;
  /** When the holder last showed the copy is there and intact (a check at start, a scrub, a served transfer). */
  proved_at: number | null;
}

/** A node-asset pair that failed: not granted to that node again before `retry_at`. */
export interface RetryCooldownsTable {
  node_id: number;
  asset_id: string;
  /** Failures of this pair so far: each doubles the cooldown. */
  failures: number;
  retry_at: number;
  reason: string | null;
  updated_at: number;
}

export type AllocationRow = Selectable<AllocationsTable>;
