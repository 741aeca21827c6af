import { sql, type Kysely } from 'kysely';
import { nextWindowsOf, specOf } from '../../schedules/windows.js';
import type { ScheduleRow } from '../../schedules/schedules.table.js';

/** The number of windows stored, as CHECKED_WINDOWS was when this migration was written. */
const STORED_WINDOWS = 50;

/**
 * Frozen: each reserve schedule keeps its next 50 windows (`reserve_windows`, JSON), written with
 * next_windows when its window moves, so that checking a reservation reads the other reserve
 * schedules' windows instead of searching each one's cron. Null for other schedules.
 */
export async function up(db: Kysely<unknown>): Promise<void> {
  await db.schema.alterTable('schedules').addColumn('reserve_windows', 'text').execute();
  const now = Date.now();
  const { rows } = await sql<ScheduleRow>`select * from schedules where reserve_count is not null`.execute(db);
  for (const row of rows) {
    const windows = nextWindowsOf(specOf(row), row.status, row.window_start === null ? null : Number(row.window_start), now, STORED_WINDOWS);
    await sql`update schedules set reserve_windows = ${windows} where id = ${row.id}`.execute(db);
  }
}
