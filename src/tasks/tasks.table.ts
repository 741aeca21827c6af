import type { Generated, Selectable } from 'kysely';

export const TASK_KINDS = ['provision', 'deprovision'] as const;
export type TaskKind = (typeof TASK_KINDS)[number];
export const TASK_STATES = ['pending', 'running', 'done', 'failed'] as const;
export type TaskState = (typeof TASK_STATES)[number];

export interface TasksTable {
  id: Generated<number>;
  kind: TaskKind;
  state: TaskState;
  rental_id: number | null;
  node_id: number | null;
  /** JSON: the command's target and arguments, fixed when the task was queued. */
  payload: string;
  attempts: Generated<number>;
  max_attempts: number;
  run_after: number;
  locked_until: number | null;
  last_error: string | null;
  created_at: number;
  finished_at: number | null;
}

export type TaskRow = Selectable<TasksTable>;
