import { afterEach, describe, expect, it } from 'vitest';
import { databaseEnv, runCli } from '../../test/cli-runner.js';
import { createTestDatabase, dialects, type TestDatabase } from '../../test/databases.js';
import { migrateToLatest } from './migrate.js';
import { migrations } from './migrations/index.js';

describe.each(dialects)('migrations on %s', (dialect) => {
  let database: TestDatabase;
  afterEach(async () => {
    await database.drop();
  });

  it('apply once when several instances start together', async () => {
    database = await createTestDatabase(dialect, { migrate: false });
    // Three processes, as three instances starting at once would be.
    const runs = await Promise.all([1, 2, 3].map(() => runCli(['migrate'], databaseEnv(database))));
    for (const run of runs) expect(run, run.stderr).toMatchObject({ code: 0 });
    const applied = runs.map((run) => run.stdout.trim()).sort();
    expect(applied).toEqual([`Applied: ${Object.keys(migrations).join(', ')}`, 'Schema already up to date.', 'Schema already up to date.']);
    expect(await migrateToLatest(database.open())).toEqual([]);
    const tables = await database.handle.db.introspection.getTables();
    expect(tables.map((table) => table.name)).toEqual(expect.arrayContaining(['assets', 'allocations', 'nodes', 'users', 'events', 'loops']));
  });
});
