import type { LoopResult } from './loops.js';
import type { DatabaseKind, Suite } from './options.js';

/** One line of the side-by-side table: one suite, one configuration, one measured window. */
export interface MeasuredRow {
  suite: Suite;
  /** What each call was, e.g. "POST /allocate" or "one-item claim SQL". */
  subject: string;
  /** Undefined for the Fastify hello world, which uses no database. */
  database?: DatabaseKind;
  /** Server processes (HTTP suites only). */
  instances?: number;
  /** Database connections the work had, as text ("16", "10 per instance", "1 shared"). */
  connections: string;
  result: LoopResult;
  /** Peak RSS of each server process during warm-up + window (HTTP suites only). */
  serverRssMb?: number[];
  check: RowCheck;
}

/** What was checked after the run; undefined fields were not checkable for that suite. */
export interface RowCheck {
  /** Items handed out twice (or past replicas_target): must be 0. */
  duplicates?: number;
  /** Dispatcher only: assets whose holders counter disagrees with copies + active allocations. */
  holdersMismatch?: number;
  /** Items the clients received over the whole run, and what the database holds for them. */
  handedOut?: number;
  stored?: number;
}

/** Counts ids seen more than once, without keeping a list of the repeats. */
export class RepeatCounter {
  private readonly seen = new Set<string>();
  repeats = 0;

  add(id: string): void {
    if (this.seen.has(id)) this.repeats += 1;
    else this.seen.add(id);
  }
}
