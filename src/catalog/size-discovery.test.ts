import { describe, expect, it } from 'vitest';
import { dialects } from '../../test/databases.js';
import { catalogConfig, createTestIo, useCatalogTestbed } from '../../test/import-io.js';
import { importCkan } from './ckan.import.js';
import { probeSize } from './size-discovery.js';

describe.each(dialects)('size discovery on %s', (dialect) => {
  const testbed = useCatalogTestbed(dialect);

  const resource = (id: string, path: string, size: number | null = null) => ({ id, url: `${testbed.portal.url}/host/${path}`, name: id, size });

  it('finds unknown sizes by HEAD, redirect or ranged GET; marks 404/410 without dropping; keeps them on re-import', async () => {
    testbed.portal.setPackages('sizes', [
      {
        name: 'files',
        organization: { name: 'lab' },
        resources: [
          resource('head', 'files/a.nc?size=1234'),
          resource('redirected', 'redirect/b.nc?size=2048'),
          resource('no-head', 'no-head/c.nc?size=777'),
          resource('gone', 'gone/d.nc'),
          resource('no-length', 'no-length/e.nc'),
          resource('known', 'files/f.nc?size=5', 99),
        ],
      },
    ]);
    const io = createTestIo();
    const summary = await importCkan(testbed.database.handle.db, catalogConfig(), io, `${testbed.portal.url}/sizes`, { discoverSizes: true });
    expect(summary.sizes).toEqual({ checked: 5, discovered: 3, gone: 1, unknown: 1 });
    expect(io.lines.at(-1)).toMatch(/^sizes: 5 of 5 files checked, \d+ files\/s$/);
    const rows = await testbed.database.handle.db.selectFrom('assets').select(['id', 'size_bytes', 'source_error', 'state']).orderBy('id').execute();
    expect(rows).toEqual([
      { id: 'gone', size_bytes: null, source_error: 'HTTP 410 when its size was checked', state: 'pending' },
      { id: 'head', size_bytes: 1234, source_error: null, state: 'pending' },
      { id: 'known', size_bytes: 99, source_error: null, state: 'pending' },
      { id: 'no-head', size_bytes: 777, source_error: null, state: 'pending' },
      { id: 'no-length', size_bytes: null, source_error: null, state: 'pending' },
      { id: 'redirected', size_bytes: 2048, source_error: null, state: 'pending' },
    ]);
    const again = await importCkan(
      testbed.database.handle.db,
      catalogConfig(),
      createTestIo(Date.parse('2026-01-02T00:00:00Z')),
      `${testbed.portal.url}/sizes`,
      {},
    );
    expect(again).toMatchObject({ unchanged: 6, updated: 0 });
    const head = await testbed.database.handle.db.selectFrom('assets').select('size_bytes').where('id', '=', 'head').executeTakeFirstOrThrow();
    expect(head.size_bytes).toBe(1234);
    const event = await testbed.database.handle.db.selectFrom('events').selectAll().where('kind', '=', 'catalog.sizes_discovered').executeTakeFirstOrThrow();
    expect(JSON.parse(event.data ?? '{}')).toMatchObject({ discovered: 3, gone: 1 });
  });

  it('leaves the size unknown when the file does not answer within the timeout, or not at all', async () => {
    expect(await probeSize(`${testbed.portal.url}/host/hang/x.nc`, 200)).toEqual({ kind: 'unknown', reason: 'no answer within 200 ms' });
    expect((await probeSize('http://127.0.0.1:9/nothing', 200)).kind).toBe('unknown');
  });
});
