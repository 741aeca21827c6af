import type { Generated, Selectable } from 'kysely';

export type Role = 'admin' | 'user';

export interface UsersTable {
  id: Generated<number>;
  username: string;
  password_hash: string;
  role: Role;
  created_at: number;
}

export interface SettingsTable {
  key: string;
  value: string;
}

export type UserRow = Selectable<UsersTable>;
