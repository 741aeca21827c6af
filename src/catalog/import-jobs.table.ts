import type { Generated, Selectable } from 'kysely';

export const IMPORT_KINDS = ['ckan', 'datagov', 'dcat'] as const;
export type ImportKind = (typeof IMPORT_KINDS)[number];
export const IMPORT_STATES = ['queued', 'running', 'succeeded', 'failed', 'cancelled'] as const;
export type ImportState = (typeof IMPORT_STATES)[number];

/** One catalog import run as a background job; counters add up over every attempt. */
export interface ImportsTable {
  id: Generated<number>;
  kind: ImportKind;
  /** The normalized portal or data.json URL: what the assets record as their source. */
  source: string;
  /** JSON: the request's options (q, fq, org, rows, per_page, api_key, discover_sizes). */
  params: string;
  state: ImportState;
  created_by: string;
  created_at: number;
  /** First claim; a resumed run sweeps from here. */
  started_at: number | null;
  finished_at: number | null;
  /** Last page written or lease renewed. */
  progress_at: number | null;
  /** The instance running it, and until when its claim holds without a renewal. */
  lease_owner: string | null;
  lease_expires_at: number | null;
  attempts: Generated<number>;
  /** Where reading resumes: the last completed page's `next`; null before the first page and after the last. */
  cursor: string | null;
  pages_done: Generated<number>;
  datasets_seen: Generated<number>;
  datasets_total: number | null;
  resources_seen: Generated<number>;
  assets_created: Generated<number>;
  assets_updated: Generated<number>;
  assets_unchanged: Generated<number>;
  duplicates: Generated<number>;
  removed: number | null;
  /** Every page read and the source swept; only size discovery may remain. */
  pages_finished_at: number | null;
  /** JSON DiscoverySummary, once sizes were discovered. */
  sizes: string | null;
  errors: Generated<number>;
  last_error: string | null;
}

export type ImportRow = Selectable<ImportsTable>;
