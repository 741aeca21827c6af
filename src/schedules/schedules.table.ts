import type { Generated, Selectable } from 'kysely';

export const SCHEDULE_STATUSES = ['scheduled', 'running', 'completed', 'cancelled'] as const;
export type ScheduleStatus = (typeof SCHEDULE_STATUSES)[number];

export type ScheduleAction = { kind: 'reserve'; count: number } | { kind: 'node-window'; node: string };

export interface SchedulesTable {
  id: Generated<number>;
  owner_id: number;
  name: string;
  start_time: number;
  end_time: number;
  status: ScheduleStatus;
  active: number;
  cron_start: string | null;
  cron_stop: string | null;
  timezone: string | null;
  /** JSON ScheduleAction, or null. */
  action: string | null;
  node_id: number | null;
  reserve_count: number | null;
  /** Reserve: SHA-512 crypt hash of the password of the rentals it creates. */
  password_hash: string | null;
  window_start: number | null;
  window_end: number | null;
  /** JSON [{start, end}]: the current window and the next ones (nextWindowsOf), kept as the window moves. */
  next_windows: Generated<string>;
  /**
   * Reserve schedules: JSON [{start, end}], the next CHECKED_WINDOWS windows from the same one,
   * written with next_windows, read by the capacity and quota checks (migration 0014). Null for
   * other schedules.
   */
  reserve_windows: string | null;
  last_fired_at: number | null;
  created_at: number;
  updated_at: number;
}

export type ScheduleRow = Selectable<SchedulesTable>;
