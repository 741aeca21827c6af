import type { Generated, Selectable } from 'kysely';

export interface EventsTable {
  id: Generated<number>;
  at: number;
  actor: string;
  kind: string;
  subject_type: string;
  subject_id: string;
  /** JSON object with the change's details, or null. */
  data: string | null;
}

export type EventRow = Selectable<EventsTable>;
