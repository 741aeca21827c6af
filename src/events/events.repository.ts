import type { Db } from '../db/database.js';
import { toIso } from '../clock.js';

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
  const rows = await query.execute();
  return rows.map((row) => ({
    id: row.id,
    at: toIso(row.at),
    actor: row.actor,
    kind: row.kind,
    subject_type: row.subject_type,
    subject_id: row.subject_id,
    data: row.data === null ? null : (JSON.parse(row.data) as Record<string, unknown>),
  }));
}
