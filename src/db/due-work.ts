import type { Expression, ExpressionBuilder, Kysely, Selectable, SelectType, SqlBool, UpdateObject } from 'kysely';
import type { Db } from './database.js';
import type { Dialect } from './dialect.js';
import type { Database } from './schema.js';

/*
 * Due work claimed with a lease: the one protocol behind outbox tasks, import jobs, transfers and
 * audits. A row waits in one state until it falls due; a claim moves it to
 * another state with a lease deadline (and its holder, where the table records one) and counts an
 * attempt; its holder renews the lease while work goes on, then releases the row (due again, maybe
 * later: a retry) or ends it. A claim whose deadline passed is due again: its holder is presumed
 * dead, and whoever claims it next takes it over. Every statement is one conditional UPDATE, so
 * of several instances exactly one wins each row, and a writer that lost its claim gets no row.
 */

/** Kysely's type of a column as read. */
type Read<Table extends keyof Database, Column> = Column extends keyof Database[Table] ? SelectType<Database[Table][Column]> : never;

/** The tables that can hold due work: an integer `id`, a text `state`, and `attempts` (claims so far). */
export type DueWorkTable = {
  [T in keyof Database]: [Read<T, 'id'>, Read<T, 'state'>, Read<T, 'attempts'>] extends [number, string, number] ? T : never;
}[keyof Database];

/** The columns of `Table` whose values are of type `Value`. */
type ColumnOf<Table extends keyof Database, Value> = {
  [C in keyof Database[Table] & string]: SelectType<Database[Table][C]> extends Value ? C : never;
}[keyof Database[Table] & string];

type Owner = string | number;
type Row<T extends DueWorkTable> = Selectable<Database[T]>;

/** Where one kind of due work lives: its table, its two states, and its lease columns. */
export interface DueWork<T extends DueWorkTable> {
  table: T;
  /** The state of a row waiting for its turn. */
  waiting: Read<T, 'state'>;
  /** The state of a claimed row. */
  claimed: Read<T, 'state'>;
  /** When a waiting row falls due; without it, a waiting row is due at once. */
  dueAt?: ColumnOf<T, number>;
  /** Until when a claim holds without a renewal; null while the row is not claimed. */
  leaseUntil: ColumnOf<T, number | null>;
  /** Who holds the claim. Without it a claim is held by whoever took the row, and a lapsed claim's old holder is not fenced off. */
  owner?: ColumnOf<T, Owner | null>;
  /** Which due rows are claimed first (ascending). */
  orderBy: ColumnOf<T, number>;
  /**
   * The condition of a partial index over the rows not ended yet, repeated in the search for due
   * rows: SQLite's planner uses a partial index only for a query that repeats its condition.
   */
  among?: Expression<SqlBool>;
}

/** Columns a caller sets beside the helper's own, in the same statement. */
export type ClaimSet<T extends DueWorkTable> = UpdateObject<Database, T> | ((eb: ExpressionBuilder<Database, T>) => UpdateObject<Database, T>);

/** A lease of `leaseMs` from `now`, with `set` written beside it. */
export interface LeaseRequest<T extends DueWorkTable> {
  now: number;
  leaseMs: number;
  set?: ClaimSet<T>;
}

export interface ClaimRequest<T extends DueWorkTable> extends LeaseRequest<T> {
  /** Who claims; required when the table records an owner. */
  owner?: Owner;
}

/** A claim as its holder names it: the row (or rows), and the holder where the table records one. */
export interface Held {
  id: number | readonly number[];
  owner?: Owner;
}

// The table is a type parameter here, so the statements are built on an untyped view of the
// database and of its columns' names; `DueWork`'s types are what checks them.
type Loose = Record<string, Record<string, Owner | null>>;
type LooseBuilder = ExpressionBuilder<Loose, string>;
interface Columns {
  among?: Expression<SqlBool>;
  table: string;
  waiting: string;
  claimed: string;
  dueAt?: string;
  leaseUntil: string;
  owner?: string;
  orderBy: string;
}
const loose = (db: Db) => db as unknown as Kysely<Loose>;
const columnsOf = <T extends DueWorkTable>(work: DueWork<T>) => work as unknown as Columns;
const looseSet = <T extends DueWorkTable>(set: ClaimSet<T>) => set as unknown as UpdateObject<Loose, string>;

/** Due: waiting and its time has come, or claimed with the lease lapsed. */
function isDue(eb: LooseBuilder, work: Columns, now: number) {
  const waiting = work.dueAt === undefined ? eb('state', '=', work.waiting) : eb.and([eb('state', '=', work.waiting), eb(work.dueAt, '<=', now)]);
  return eb.or([waiting, eb.and([eb('state', '=', work.claimed), eb(work.leaseUntil, '<', now)])]);
}

/** The claim's own columns: claimed, one more attempt, the lease deadline and the holder. */
function claimValues(eb: LooseBuilder, work: Columns, request: { now: number; leaseMs: number; owner?: Owner }) {
  if (work.owner !== undefined && request.owner === undefined) throw new Error(`A claim on ${work.table} names its owner.`);
  return {
    state: work.claimed,
    attempts: eb('attempts', '+', 1),
    [work.leaseUntil]: request.now + request.leaseMs,
    ...(work.owner === undefined ? {} : { [work.owner]: request.owner }),
  };
}

/** The claim's columns cleared: no lease, no holder. */
function unclaimedValues(work: Columns, state: string) {
  return { state, [work.leaseUntil]: null, ...(work.owner === undefined ? {} : { [work.owner]: null }) };
}

function claimStatement<T extends DueWorkTable>(db: Db, work: Columns, request: ClaimRequest<T>) {
  const claim = loose(db)
    .updateTable(work.table)
    .set((eb) => claimValues(eb, work, request));
  return request.set === undefined ? claim : claim.set(looseSet(request.set));
}

/** An UPDATE of the rows this claim still holds. */
function updateHeldRows(db: Db, work: Columns, held: Held) {
  let query = loose(db)
    .updateTable(work.table)
    .where('id', typeof held.id === 'number' ? '=' : 'in', held.id);
  if (work.owner !== undefined) {
    if (held.owner === undefined) throw new Error(`A claim on ${work.table} names its owner.`);
    query = query.where(work.owner, '=', held.owner);
  }
  return query.where('state', '=', work.claimed);
}

function selectDue(db: Db, work: Columns, now: number, limit: number) {
  return loose(db)
    .selectFrom(work.table)
    .select('id')
    .where((eb) => (work.among === undefined ? isDue(eb, work, now) : eb.and([work.among, isDue(eb, work, now)])))
    .orderBy(work.orderBy)
    .limit(limit);
}

/** The ids of up to `limit` due rows, first first, without claiming them (each is then claimed with `claimRow`). */
export async function findDueIds<T extends DueWorkTable>(db: Db, work: DueWork<T>, now: number, limit: number): Promise<number[]> {
  const rows = await selectDue(db, columnsOf(work), now, limit).execute();
  return rows.map((row) => row.id as number);
}

/**
 * Claims up to `limit` due rows in one UPDATE; two instances claiming at once get disjoint rows
 * (PostgreSQL skips rows another claim has locked; SQLite runs one writer at a time).
 */
export async function claimDue<T extends DueWorkTable>(
  db: Db,
  dialect: Dialect,
  work: DueWork<T>,
  request: ClaimRequest<T> & { limit: number },
): Promise<Row<T>[]> {
  const columns = columnsOf(work);
  let due = selectDue(db, columns, request.now, request.limit);
  if (dialect.hasRowLocks) due = due.forUpdate().skipLocked();
  return (await claimStatement(db, columns, request).where('id', 'in', due).returningAll().execute()) as Row<T>[];
}

/** Claims one row if it is due; undefined when it is not (another instance holds it, or it has ended). */
export async function claimRow<T extends DueWorkTable>(db: Db, work: DueWork<T>, id: number, request: ClaimRequest<T>): Promise<Row<T> | undefined> {
  const columns = columnsOf(work);
  const claim = claimStatement(db, columns, request)
    .where('id', '=', id)
    .where((eb) => isDue(eb, columns, request.now));
  return (await claim.returningAll().executeTakeFirst()) as Row<T> | undefined;
}

/** Writes `set` while the claim holds; false when it no longer does (taken over, cancelled, ended). */
export async function updateHeld<T extends DueWorkTable>(db: Db, work: DueWork<T>, held: Held, set: ClaimSet<T>): Promise<boolean> {
  const row = await updateHeldRows(db, columnsOf(work), held).set(looseSet(set)).returning('id').executeTakeFirst();
  return row !== undefined;
}

/** Extends the lease to `now + leaseMs` (with `set` beside); false when the claim no longer holds. */
export async function renewClaim<T extends DueWorkTable>(db: Db, work: DueWork<T>, held: Held, request: LeaseRequest<T>): Promise<boolean> {
  const columns = columnsOf(work);
  let renew = updateHeldRows(db, columns, held).set({ [columns.leaseUntil]: request.now + request.leaseMs });
  if (request.set !== undefined) renew = renew.set(looseSet(request.set));
  return (await renew.returning('id').executeTakeFirst()) !== undefined;
}

/** Gives the row back, waiting again: due at once, or at `dueAt` (a retry after a backoff). False when the claim no longer holds. */
export async function releaseClaim<T extends DueWorkTable>(
  db: Db,
  work: DueWork<T>,
  held: Held,
  options: { dueAt?: number; set?: ClaimSet<T> } = {},
): Promise<boolean> {
  const columns = columnsOf(work);
  if (options.dueAt !== undefined && columns.dueAt === undefined) throw new Error(`Rows of ${columns.table} have no due time to move.`);
  const later = options.dueAt === undefined ? {} : { [columns.dueAt as string]: options.dueAt };
  let release = updateHeldRows(db, columns, held).set({ ...unclaimedValues(columns, columns.waiting), ...later });
  if (options.set !== undefined) release = release.set(looseSet(options.set));
  return (await release.returning('id').executeTakeFirst()) !== undefined;
}

/** Ends the claim in `state` (done, failed…): the rows it ended, none when the claim no longer held. */
export async function endClaim<T extends DueWorkTable>(db: Db, work: DueWork<T>, held: Held, state: Read<T, 'state'>, set?: ClaimSet<T>): Promise<Row<T>[]> {
  if (typeof held.id !== 'number' && held.id.length === 0) return [];
  const columns = columnsOf(work);
  let end = updateHeldRows(db, columns, held).set(unclaimedValues(columns, state as string));
  if (set !== undefined) end = end.set(looseSet(set));
  return (await end.returningAll().execute()) as Row<T>[];
}
