import { sql } from 'kysely';
import { afterEach, describe, expect, it } from 'vitest';
import { createDatabaseBefore, dialects, type TestDatabase } from '../../../test/databases.js';

describe.each(dialects)('migration 0013-worker-identity on %s', (dialect) => {
  let database: TestDatabase;
  afterEach(async () => {
    await database.drop();
  });

  it('keeps existing nodes approved, has their host keys proven again, and lets one node prove a key', async () => {
    const before = await createDatabaseBefore(dialect, '0013-worker-identity');
    database = before.database;
    const db = before.db;
    // Two workers registered with one host key before keys had to be unique: the migration must not fail on them.
    for (const name of ['twin-a', 'twin-b']) {
      await sql`insert into nodes (name, hostname, ip, ssh_port, status, probe_failures, tags, created_at, ssh_host_key, ssh_user)
        values (${name}, ${name}, '127.0.0.1', 22, 'alive', 0, '{}', 1000, 'ssh-ed25519 AAAAshared', 'dispatcher')`.execute(db);
    }
    await before.up();

    const rows = await database.handle.db.selectFrom('nodes').select(['name', 'approved_at', 'host_key_verified_at']).orderBy('name').execute();
    expect(rows).toEqual([
      { name: 'twin-a', approved_at: 1000, host_key_verified_at: null },
      { name: 'twin-b', approved_at: 1000, host_key_verified_at: null },
    ]);
    await database.handle.db.updateTable('nodes').set({ host_key_verified_at: 2000 }).where('name', '=', 'twin-a').execute();
    await expect(database.handle.db.updateTable('nodes').set({ host_key_verified_at: 2000 }).where('name', '=', 'twin-b').execute()).rejects.toThrow(/unique/i);
  });
});
