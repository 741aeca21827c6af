import type { Db } from '../db/database.js';
import { AppError } from '../errors.js';
import { appendEvents } from '../events/events.repository.js';
import { DUMMY_PASSWORD_HASH, hashPassword, PASSWORD_COST, verifyPassword, type PasswordCost } from '../lib/secrets.js';
import type { JwtIssuer } from './jwt.js';
import { bumpTokenVersion, findUserByUsername, insertUser, updateUserPassword } from './users.repository.js';
import type { Role } from './users.table.js';

export async function signUp(
  db: Db,
  input: { username: string; password: string; role?: Role; actor: string; now: number },
  passwordCost: PasswordCost = PASSWORD_COST,
): Promise<{ id: number; username: string; role: Role }> {
  const role = input.role ?? 'user';
  const passwordHash = await hashPassword(input.password, passwordCost);
  return db.transaction().execute(async (trx) => {
    const user = await insertUser(trx, { username: input.username, passwordHash, role, now: input.now });
    if (!user) throw new AppError('USERNAME_TAKEN', `The username "${input.username}" is already taken.`);
    await appendEvents(trx, input.now, [
      { actor: input.actor, kind: 'user.created', subjectType: 'user', subjectId: user.id, data: { username: user.username, role } },
    ]);
    return { id: user.id, username: user.username, role };
  });
}

export async function logIn(db: Db, jwt: JwtIssuer, input: { username: string; password: string; now: number }): Promise<string> {
  const user = await findUserByUsername(db, input.username);
  // Hash even for unknown users so the response time does not reveal which usernames exist.
  const valid = await verifyPassword(input.password, user?.password_hash ?? DUMMY_PASSWORD_HASH);
  if (!user || !valid) throw new AppError('INVALID_CREDENTIALS', 'Wrong username or password.');
  return jwt.issue({ userId: user.id, username: user.username, role: user.role, tokenVersion: user.token_version }, input.now);
}

/**
 * Makes sure `username` exists as an admin with this password: creates it, or resets the password
 * and role of an existing account (DISPATCHER_ADMIN_PASSWORD and `dispatcher user add --admin`).
 * A reset revokes the account's tokens.
 */
export async function ensureAdmin(
  db: Db,
  input: { username: string; password: string; actor: string; now: number },
  passwordCost: PasswordCost = PASSWORD_COST,
): Promise<'created' | 'updated' | 'unchanged'> {
  const existing = await findUserByUsername(db, input.username);
  if (!existing) {
    try {
      await signUp(db, { ...input, role: 'admin' }, passwordCost);
      return 'created';
    } catch (error) {
      // Another instance created it at the same moment: fall through and check it.
      if (!(error instanceof AppError && error.code === 'USERNAME_TAKEN')) throw error;
    }
  }
  const user = existing ?? (await findUserByUsername(db, input.username));
  if (!user) throw new Error(`admin user ${input.username} vanished during start-up`);
  if (user.role === 'admin' && (await verifyPassword(input.password, user.password_hash))) return 'unchanged';
  await updateUserPassword(db, user.id, await hashPassword(input.password, passwordCost), 'admin');
  await appendEvents(db, input.now, [
    { actor: input.actor, kind: 'user.admin_reset', subjectType: 'user', subjectId: user.id, data: { username: user.username } },
  ]);
  return 'updated';
}

/**
 * `dispatcher user revoke-tokens`: every token issued to the user so far is refused, on every
 * instance within the few seconds its user cache keeps an entry (`http/auth.ts`).
 */
export async function revokeUserTokens(db: Db, input: { username: string; actor: string; now: number }): Promise<void> {
  await db.transaction().execute(async (trx) => {
    const id = await bumpTokenVersion(trx, input.username);
    if (id === undefined) throw new AppError('USER_NOT_FOUND', `No user is named "${input.username}".`);
    await appendEvents(trx, input.now, [
      { actor: input.actor, kind: 'user.tokens_revoked', subjectType: 'user', subjectId: id, data: { username: input.username } },
    ]);
  });
}
