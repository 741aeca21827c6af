import { sql } from 'kysely';
import { toIso } from '../clock.js';
import type { Db } from '../db/database.js';
import type { EventRow } from './events.table.js';

export interface NewEvent {
  actor: string;
  kind: string;
  subjectType: string;
  subjectId: string | number;
  data?: Record<string, unknown>;
}

export interface EventView {
  id: number;
  at: string;
  actor: string;
  kind: string;
  subject_type: string;
  subject_id: string;
  data: Record<string, unknown> | null;
}

/** Appends events in one statement; call it inside the transaction that made the change. */
export async function appendEvents(db: Db, at: number, events: NewEvent[]): Promise<void> {
  if (events.length === 0) return;
  // 6 parameters per row; chunks stay below SQLite's and PostgreSQL's bound-parameter limits.
  for (let start = 0; start < events.length; start += 1000) {
    await db
      .insertInto('events')
      .values(
        events.slice(start, start + 1000).map((event) => ({
          at,
          actor: event.actor,
          kind: event.kind,
          subject_type: event.subjectType,
          subject_id: String(event.subjectId),
          data: event.data ? JSON.stringify(event.data) : null,
        })),
      )
      .execute();
  }
}

export interface EventFilter {
  kind?: string;
  subjectType?: string;
  subjectId?: string;
  /** Only events with an id below this one (the cursor of the previous page). */
  before?: number;
  limit: number;
}

/** Newest first. */
export async function listEvents(db: Db, filter: EventFilter): Promise<EventView[]> {
  let query = db.selectFrom('events').selectAll().orderBy('id', 'desc').limit(filter.limit);
  if (filter.kind) query = query.where('kind', '=', filter.kind);
  if (filter.subjectType) query = query.where('subject_type', '=', filter.subjectType);
  if (filter.subjectId) query = query.where('subject_id', '=', filter.subjectId);
  if (filter.before !== undefined) query = query.where('id', '<', filter.before);
  return (await query.execute()).map(toEventView);
}

/**
 * An asset's whole trail, newest first: the events about the asset itself and those about any of
 * its allocations (granted, completed, released, expired, reclaimed, failed), which name the
 * allocation as their subject.
 */
export async function listAssetHistory(db: Db, assetId: string, limit: number): Promise<EventView[]> {
  const rows = await db
    .selectFrom('events')
    .selectAll()
    .where((eb) =>
      eb.or([
        eb.and([eb('subject_type', '=', 'asset'), eb('subject_id', '=', assetId)]),
        eb.and([
          eb('subject_type', '=', 'allocation'),
          eb(
            'subject_id',
            'in',
            eb
              .selectFrom('allocations')
              .select(sql<string>`cast(id as text)`.as('id'))
              .where('asset_id', '=', assetId),
          ),
        ]),
      ]),
    )
    .orderBy('id', 'desc')
    .limit(limit)
    .execute();
  return rows.map(toEventView);
}

function toEventView(row: EventRow): EventView {
  return {
    id: row.id,
    at: toIso(row.at),
    actor: row.actor,
    kind: row.kind,
    subject_type: row.subject_type,
    subject_id: row.subject_id,
    data: row.data === null ? null : (JSON.parse(row.data) as Record<string, unknown>),
  };
}
