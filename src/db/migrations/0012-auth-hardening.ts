import type { Kysely } from 'kysely';

/**
 * Frozen: revocable credentials.
 * - `users.token_version`: every JWT carries it; bumping it (a password change, `dispatcher user
 *   revoke-tokens`) refuses every token issued before.
 * - `enrollment_tokens.max_uses` (null: unlimited) and `revoked_at` (null: not revoked). Tokens
 *   issued before keep their expiry, which may be none: list them and revoke what is not wanted.
 */
export async function up(db: Kysely<unknown>): Promise<void> {
  await db.schema
    .alterTable('users')
    .addColumn('token_version', 'integer', (c) => c.notNull().defaultTo(0))
    .execute();
  await db.schema.alterTable('enrollment_tokens').addColumn('max_uses', 'integer').execute();
  await db.schema.alterTable('enrollment_tokens').addColumn('revoked_at', 'bigint').execute();
}
