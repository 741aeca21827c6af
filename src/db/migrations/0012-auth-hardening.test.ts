import { sql } from 'kysely';
import { afterEach, describe, expect, it } from 'vitest';
import { createDatabaseBefore, dialects, type TestDatabase } from '../../../test/databases.js';

describe.each(dialects)('migration 0012-auth-hardening on %s', (dialect) => {
  let database: TestDatabase;
  afterEach(async () => {
    await database.drop();
  });

  it('keeps existing users and enrollment tokens working: version 0, unlimited, not revoked', async () => {
    const before = await createDatabaseBefore(dialect, '0012-auth-hardening');
    database = before.database;
    const db = before.db;
    await sql`insert into users (username, password_hash, role, created_at) values ('old-admin', 'scrypt$x', 'admin', 1)`.execute(db);
    await sql`insert into enrollment_tokens (token_hash, note, created_at, expires_at, uses) values ('old-hash', 'old', 1, null, 4)`.execute(db);
    await before.up();
    const user = await database.handle.db.selectFrom('users').select(['username', 'token_version']).executeTakeFirstOrThrow();
    expect(user).toEqual({ username: 'old-admin', token_version: 0 });
    const token = await database.handle.db.selectFrom('enrollment_tokens').select(['uses', 'max_uses', 'revoked_at', 'expires_at']).executeTakeFirstOrThrow();
    expect(token).toEqual({ uses: 4, max_uses: null, revoked_at: null, expires_at: null });
  });
});
