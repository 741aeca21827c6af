import type { Generated, Selectable } from 'kysely';

export type Role = 'admin' | 'user';

export interface UsersTable {
  id: Generated<number>;
  username: string;
  password_hash: string;
  role: Role;
  created_at: number;
  /** Carried in every JWT as `ver`; bumping it refuses every token issued before (migration 0012). */
  token_version: Generated<number>;
}

export type UserRow = Selectable<UsersTable>;
