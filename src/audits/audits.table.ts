import type { Generated, Selectable } from 'kysely';

/**
 * `spot_check`: a new copy's bytes against the source's, before the copy counts. `retention`: a
 * counted copy, at random, to show it is still there.
 */
export const AUDIT_KINDS = ['spot_check', 'retention'] as const;
export type AuditKind = (typeof AUDIT_KINDS)[number];

/**
 * `ranges`: the holder hashes byte ranges of its copy with a fresh nonce, and the control plane
 * compares with the same ranges of the source. `block`: the holder returns one 16 KiB block with
 * its Merkle path, checked against the asset's agreed root.
 */
export const AUDIT_METHODS = ['ranges', 'block'] as const;
export type AuditMethod = (typeof AUDIT_METHODS)[number];

/**
 * `queued`: waits until `due_at` for an instance to prepare it (read the source's ranges).
 * `preparing`: an instance holds it, under `lease_until`. `open`: asked of the holder, which answers
 * before `lease_until`. It ends `passed`, `failed` (a wrong answer, or the copy is gone), `missed`
 * (no answer in time) or `cancelled` (the copy ended otherwise, or could not be checked this way).
 */
export const AUDIT_STATES = ['queued', 'preparing', 'open', 'passed', 'failed', 'missed', 'cancelled'] as const;
export type AuditState = (typeof AUDIT_STATES)[number];
export type AuditVerdict = 'passed' | 'failed' | 'missed';
/** The states of an audit not ended yet: the backlog of the proof passes and of the holders (the partial index `audits_unfinished`). */
export const UNFINISHED_AUDIT_STATES = ['queued', 'preparing', 'open'] as const satisfies readonly AuditState[];

/** A challenge to one holder about its copy of one asset: the lease of an audit. */
export interface AuditsTable {
  id: Generated<number>;
  allocation_id: number;
  asset_id: string;
  node_id: number;
  kind: AuditKind;
  method: AuditMethod;
  state: AuditState;
  /** Hex: what the holder hashes before each range, fresh for each audit. */
  nonce: string | null;
  /** JSON list of [offset, length] (method ranges). */
  ranges: string | null;
  /** JSON list of the expected hex hashes, one per range, from the source's bytes (method ranges). */
  expected: string | null;
  /** The block asked for (method block). */
  block: number | null;
  attempts: Generated<number>;
  created_at: number;
  due_at: number;
  lease_until: number | null;
  ended_at: number | null;
  detail: string | null;
}

export type AuditRow = Selectable<AuditsTable>;
