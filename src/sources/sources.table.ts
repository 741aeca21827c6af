/** A source host the fleet must leave alone for a while (it answered 429, or 503 with Retry-After). */
export interface SourceHostsTable {
  host: string;
  /** No new allocation of an asset on this host before this time. */
  paused_until: number;
  pause_reason: string | null;
  updated_at: number;
}
