import type { Generated, Selectable } from 'kysely';

export const RENTAL_STATES = ['provisioning', 'active', 'migrating', 'ended', 'failed'] as const;
export type RentalState = (typeof RENTAL_STATES)[number];

/** States in which a rental holds its worker: no one else may be given it. */
export const WORKER_HOLDING_RENTAL_STATES: RentalState[] = ['provisioning', 'active', 'migrating'];

/** States of a rental handed over to its renter: it can be released, extended, expired or moved. */
export const HANDED_OVER_RENTAL_STATES: RentalState[] = ['active', 'migrating'];

export interface RentalsTable {
  id: Generated<number>;
  user_id: number;
  node_id: number;
  state: RentalState;
  batch: string;
  account: string;
  password_hash: string;
  leased_from: number;
  leased_until: number;
  created_at: number;
  ended_at: number | null;
  end_reason: string | null;
  /** JSON array of {from_node, to_node, at}. */
  migrations: Generated<string>;
  /** The reserve schedule that created it, if any. */
  schedule_id: Generated<number | null>;
}

export type RentalRow = Selectable<RentalsTable>;
