import type { Db } from '../db/database.js';
import type { Role, UserRow } from './users.table.js';

export async function findUserByUsername(db: Db, username: string): Promise<UserRow | undefined> {
  return db.selectFrom('users').selectAll().where('username', '=', username).executeTakeFirst();
}

/** Inserts a user; returns undefined when the username is already taken. */
export async function insertUser(
  db: Db,
  user: { username: string; passwordHash: string; role: Role; now: number },
): Promise<UserRow | undefined> {
  return db
    .insertInto('users')
    .values({ username: user.username, password_hash: user.passwordHash, role: user.role, created_at: user.now })
    .onConflict((conflict) => conflict.column('username').doNothing())
    .returningAll()
    .executeTakeFirst();
}

export async function updateUserPassword(db: Db, id: number, passwordHash: string, role: Role): Promise<void> {
  await db.updateTable('users').set({ password_hash: passwordHash, role }).where('id', '=', id).execute();
}

/** Reads a setting, creating it from `create()` if absent; concurrent starters all get the first value stored. */
export async function readOrCreateSetting(db: Db, key: string, create: () => string): Promise<string> {
  await db
    .insertInto('settings')
    .values({ key, value: create() })
    .onConflict((conflict) => conflict.column('key').doNothing())
    .execute();
  const row = await db.selectFrom('settings').select('value').where('key', '=', key).executeTakeFirstOrThrow();
  return row.value;
}
