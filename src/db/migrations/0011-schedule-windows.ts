import { sql, type Kysely } from 'kysely';
import { nextWindowsOf, specOf } from '../../schedules/windows.js';
import type { ScheduleRow } from '../../schedules/schedules.table.js';

/**
 * Frozen: each schedule keeps its next windows (`next_windows`, JSON), written when its window
 * moves, so that listing schedules never searches cron occurrences on the event loop.
 */
export async function up(db: Kysely<unknown>): Promise<void> {
  await db.schema
    .alterTable('schedules')
    .addColumn('next_windows', 'text', (c) => c.notNull().defaultTo('[]'))
    .execute();
  const now = Date.now();
  const { rows } = await sql<ScheduleRow>`select * from schedules where status in ('scheduled', 'running')`.execute(db);
  for (const row of rows) {
    const windows = nextWindowsOf(specOf(row), row.status, row.window_start === null ? null : Number(row.window_start), now);
    await sql`update schedules set next_windows = ${windows} where id = ${row.id}`.execute(db);
  }
}
