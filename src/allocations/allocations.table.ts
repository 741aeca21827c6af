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
  /** The Merkle root (BitTorrent v2 pieces root) the holder reported with its copy. */
  merkle_root: string | null;
  /** Of a completed copy: what is proven of it (migration 0016); null for other allocations. */
  proof: CopyProof | null;
  /** When the copy was proven: its spot check passed, or copies of other holders agreed. */
  proven_at: number | null;
  /** Retention audits failed or missed in a row. */
  audit_failures: Generated<number>;
  /** When the copy's next retention audit falls due; null while it is not counted. */
  next_audit_at: number | null;
  /** The node's operator when granted, with DISTINCT_OPERATORS (migration 0017); null: the node counts as its own operator. */
  operator_id: number | null;
}

/**
 * `pending`: waits for its spot check against the source, and holds its place meanwhile.
 * `unproven`: no spot check was possible (the source is gone or serves no ranges); it counts once
 * copies of other holders agree with it. `proven`: it counts. `suspect`: it missed or failed its
 * last retention audit; it counts until AUDIT_FAILURES_TO_LOSE of them in a row. `vetting`: proven,
 * but its node is new (VETTING_AUDITS): it counts once the node is vetted.
 */
export const COPY_PROOFS = ['pending', 'unproven', 'proven', 'suspect', 'vetting'] as const;
export type CopyProof = (typeof COPY_PROOFS)[number];
/** The proofs of a copy that takes part in the count (and in the quorum over checksums). */
export const COUNTABLE_PROOFS: readonly CopyProof[] = ['proven', 'suspect'];
/** The proofs of a copy that retention audits check: counted ones, and those waiting for their node's vetting. */
export const AUDITED_PROOFS: readonly CopyProof[] = [...COUNTABLE_PROOFS, 'vetting'];

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
