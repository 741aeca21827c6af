import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { createTestDatabase, dialects, type TestDatabase } from '../../test/databases.js';
import { replicaDefaultFrom } from '../assets/assets.service.js';
import { buildConfig } from '../config.js';
import { importCatalog, type ImportOptions } from './catalog.service.js';
import type { CatalogPage, CatalogResource } from './catalog.types.js';

const NOW = Date.parse('2026-01-01T00:00:00Z');

const resource = (id: string, url: string): CatalogResource => ({
  resourceId: id,
  url,
  name: id,
  format: null,
  sizeBytes: 1000,
  sha256: null,
  dataset: 'dataset',
  organization: null,
  keywords: [],
  priority: 5,
});

// Two pages; the first publishes one URL twice, so a rolled-back attempt must not leave its owner behind.
const PAGES: CatalogPage[] = [
  { resources: [resource('res-a', 'https://files.example.org/a'), resource('res-b', 'https://files.example.org/a')], datasets: 1, total: 2, next: '1' },
  { resources: [resource('res-c', 'https://files.example.org/c')], datasets: 1, total: 2, next: null },
];

async function* pages(): AsyncGenerator<CatalogPage> {
  yield* structuredClone(PAGES);
}

describe.each(dialects)('catalog writes that meet a lock conflict on %s', (dialect) => {
  let database: TestDatabase;
  beforeEach(async () => {
    database = await createTestDatabase(dialect);
  });
  afterEach(async () => {
    await database.drop();
  });

  // What each database throws when a transaction loses a lock: SQLite's busy timeout ran out, or a PostgreSQL deadlock.
  const conflict = () =>
    dialect === 'sqlite'
      ? Object.assign(new Error('database is locked'), { code: 'SQLITE_BUSY' })
      : Object.assign(new Error('deadlock detected'), { code: '40P01' });

  function options(overrides: Partial<ImportOptions> = {}) {
    const sleeps: number[] = [];
    const lines: string[] = [];
    const base: ImportOptions = {
      source: 'https://portal.example.org',
      actor: 'test',
      replicasFor: replicaDefaultFrom(buildConfig()),
      removedPriorityBoost: 2,
      priorityRules: [],
      sweep: {},
      lockRetries: 2,
      sleep: async (ms) => void sleeps.push(ms),
      report: (line) => void lines.push(line),
      ...overrides,
    };
    return { options: base, sleeps, lines };
  }

  /** Throws `error` from inside the first `times` transactions it is called in, then lets them commit. */
  const failing = (times: number, error: () => Error) => {
    let calls = 0;
    return async () => {
      calls += 1;
      if (calls <= times) throw error();
    };
  };

  it('writes a page again after a lock conflict, once it has backed off, and says so', async () => {
    const run = options({ afterPage: failing(1, conflict) });
    const summary = await importCatalog(database.handle.db, pages(), run.options, NOW);
    expect(summary).toMatchObject({ pages: 2, resources: 3, new: 2, duplicates: 1 });
    expect(run.sleeps).toEqual([1000]);
    expect(run.lines).toEqual([
      expect.stringMatching(/^database busy writing page 1 \((database is locked|deadlock detected)\), waiting 1 s, then retry 1 of 2$/),
    ]);
    const links = await database.handle.db.selectFrom('asset_links').select(['resource_id', 'asset_id']).orderBy('resource_id').execute();
    expect(links).toEqual([
      { resource_id: 'res-a', asset_id: 'res-a' },
      { resource_id: 'res-b', asset_id: 'res-a' },
      { resource_id: 'res-c', asset_id: 'res-c' },
    ]);
  });

  it('writes the end of the run again too: one catalog.imported event', async () => {
    const run = options({ afterRun: failing(1, conflict) });
    expect(await importCatalog(database.handle.db, pages(), run.options, NOW)).toMatchObject({ pages: 2, new: 2 });
    expect(run.lines).toEqual([expect.stringMatching(/^database busy writing the end of the run/)]);
    expect(await database.handle.db.selectFrom('events').select('id').where('kind', '=', 'catalog.imported').execute()).toHaveLength(1);
  });

  it('gives up after CATALOG_MAX_RETRIES conflicts in a row with the conflict itself, and never retries other errors', async () => {
    const busy = options({ afterPage: failing(3, conflict) });
    await expect(importCatalog(database.handle.db, pages(), busy.options, NOW)).rejects.toMatchObject({ code: conflict().code });
    expect(busy.sleeps).toEqual([1000, 2000]);
    expect(await database.handle.db.selectFrom('assets').select('id').execute()).toEqual([]);

    const broken = options({ afterPage: failing(1, () => new Error('not a lock conflict')) });
    await expect(importCatalog(database.handle.db, pages(), broken.options, NOW)).rejects.toThrow('not a lock conflict');
    expect(broken.sleeps).toEqual([]);
  });
});
