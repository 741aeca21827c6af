import type { Generated, Selectable } from 'kysely';

/** Why bytes of a copy are wanted. */
export const TRANSFER_PURPOSES = ['restore', 'repair', 'audit'] as const;
export type TransferPurpose = (typeof TRANSFER_PURPOSES)[number];

/**
 * `sending`: held by its node, which streams the range in chunks before `lease_until` (renewed by
 * each chunk). It ends `done` (every byte delivered), `failed` (the holder said it cannot, or sent
 * what was not asked), `expired` (no chunk in time) or `cancelled` (the requester went away).
 */
export const TRANSFER_STATES = ['sending', 'done', 'failed', 'expired', 'cancelled'] as const;
export type TransferState = (typeof TRANSFER_STATES)[number];
export type EndedTransferState = Exclude<TransferState, 'sending'>;

/** A lease of one node on sending a byte range of its copy of one asset. */
export interface TransfersTable {
  id: Generated<number>;
  asset_id: string;
  node_id: number;
  /** The completed allocation whose copy is read. */
  allocation_id: number;
  purpose: TransferPurpose;
  state: TransferState;
  /** The range asked for, in bytes of the copy: [range_start, range_end). */
  range_start: number;
  range_end: number;
  /** Bytes of the range delivered so far. */
  bytes_sent: number;
  /** The copy's size and checksum as counted when the transfer was created. */
  size_bytes: number;
  sha256: string;
  /** The instance whose requester receives the bytes, and the secret another instance forwards chunks with. */
  relay_url: string;
  relay_token: string;
  attempts: number;
  created_at: number;
  lease_until: number | null;
  ended_at: number | null;
  end_reason: string | null;
}

export type TransferRow = Selectable<TransfersTable>;
