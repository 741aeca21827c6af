import type { Db } from '../db/database.js';
import type { Role, UserRow } from './users.table.js';

export async function findUserByUsername(db: Db, username: string): Promise<UserRow | undefined> {
  return db.selectFrom('users').selectAll().where('username', '=', username).executeTakeFirst();
}

/** Inserts a user; returns undefined when the username is already taken. */
export async function insertUser(db: Db, user: { username: string; passwordHash: string; role: Role; now: number }): Promise<UserRow | undefined> {
  return db
    .insertInto('users')
    .values({ username: user.username, password_hash: user.passwordHash, role: user.role, created_at: user.now })
    .onConflict((conflict) => conflict.column('username').doNothing())
    .returningAll()
    .executeTakeFirst();
}

/** What authenticating a token needs to know of its user. */
export async function findTokenHolder(db: Db, id: number): Promise<{ id: number; username: string; role: Role; tokenVersion: number } | undefined> {
  const row = await db.selectFrom('users').select(['id', 'username', 'role', 'token_version']).where('id', '=', id).executeTakeFirst();
  return row && { id: row.id, username: row.username, role: row.role, tokenVersion: row.token_version };
}

/** Sets a new password and role; the tokens issued under the old password stop working. */
export async function updateUserPassword(db: Db, id: number, passwordHash: string, role: Role): Promise<void> {
  await db
    .updateTable('users')
    .set((eb) => ({ password_hash: passwordHash, role, token_version: eb('token_version', '+', 1) }))
    .where('id', '=', id)
    .execute();
}

/** Refuses every token issued to the user so far; returns the user's id, or undefined when there is no such user. */
export async function bumpTokenVersion(db: Db, username: string): Promise<number | undefined> {
  const row = await db
    .updateTable('users')
    .set((eb) => ({ token_version: eb('token_version', '+', 1) }))
    .where('username', '=', username)
    .returning('id')
    .executeTakeFirst();
  return row?.id;
}
