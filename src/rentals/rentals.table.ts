import type { Generated, Selectable } from 'kysely';

export type RentalState = 'provisioning' | 'active' | 'migrating' | 'ended' | 'failed';

/** States in which a rental holds its worker. */
export const LIVE_RENTAL_STATES: RentalState[] = ['provisioning', 'active', 'migrating'];

/** States of a rental handed to its renter: it can be released, extended, expired or moved. */
export const ACTIVE_RENTAL_STATES: RentalState[] = ['active', 'migrating'];

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
