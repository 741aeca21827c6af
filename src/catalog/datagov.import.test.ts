import { describe, expect, it } from 'vitest';
import { dialects } from '../../test/databases.js';
import { generateRecords } from '../../test/fake-portal.js';
import { catalogConfig, createTestIo, useCatalogTestbed } from '../../test/import-io.js';
import { importDatagov } from './datagov.import.js';
import { deriveDistributionId } from './datagov.source.js';

describe.each(dialects)('data.gov (new API) import on %s', (dialect) => {
  const testbed = useCatalogTestbed(dialect);

  const assets = () => testbed.database.handle.db.selectFrom('assets').selectAll().orderBy('url').execute();
  const run = (name: string, flags = {}, io = createTestIo()) =>
    importDatagov(testbed.database.handle.db, catalogConfig(), io, { url: `${testbed.portal.url}/${name}`, ...flags });

  it('maps the recorded snapshot documents: downloadURL, title, mediaType, derived stable ids', async () => {
    const summary = await run('datagov-snapshot', { apiKey: 'key-123' });
    expect(summary).toMatchObject({ pages: 1, datasets: 2, resources: 3, new: 3 });
    const rows = await assets();
    expect(rows.map((row) => [row.url, row.name, row.format, row.dataset, row.organization, row.size_bytes])).toEqual([
      ['https://example.gov/data/dataset-1.csv', 'Fixture Dataset 1 CSV', 'text/csv', 'fixture-dataset-1', 'fixture-org', null],
      ['https://example.gov/data/dataset-2.json', 'Fixture Dataset 2 JSON', 'application/json', 'fixture-dataset-2', 'fixture-org', null],
      [
        'https://example.gov/data/dataset-2.xlsx',
        'Fixture Dataset 2 Excel',
        expect.stringContaining('spreadsheetml'),
        'fixture-dataset-2',
        'fixture-org',
        null,
      ],
    ]);
    expect(rows[0]?.id).toBe(deriveDistributionId('test-identifier-9', 'https://example.gov/data/dataset-1.csv'));
    expect(testbed.portal.headers.at(-1)?.['x-api-key']).toBe('key-123');
    // The documentation example elides its distributions ("..."): nothing to import, no crash.
    expect(await run('datagov-doc')).toMatchObject({ datasets: 1, resources: 0 });
  });

  it('follows the after cursor until a page has none, idempotently, with byteSize and accessURL', async () => {
    testbed.portal.setRecords('cursor', generateRecords(25, 2));
    const first = await run('cursor', { perPage: 10, org: undefined });
    expect(first).toMatchObject({ pages: 3, datasets: 25, resources: 50, new: 50 });
    const searches = testbed.portal.requests.filter((request) => request.startsWith('/cursor/')).map((request) => new URL(request, 'http://x').searchParams);
    expect(searches.map((params) => params.get('after') === null)).toEqual([true, false, false]);
    expect(searches.every((params) => params.get('per_page') === '10')).toBe(true);
    const rows = await assets();
    expect(rows.find((row) => row.url.endsWith('ds-13/0.csv'))).toMatchObject({ size_bytes: 1000, organization: 'agency-1', priority: 6 });
    expect(rows.find((row) => row.url.endsWith('ds-3/1.html'))).toMatchObject({ size_bytes: null, name: 'Distribution 1' });
    expect(await run('cursor', { perPage: 10 }, createTestIo(Date.parse('2026-01-02T00:00:00Z')))).toMatchObject({
      new: 0,
      updated: 0,
      unchanged: 50,
      removed: 0,
    });
  });

  it("narrows by org_slug and flags only that organization's vanished distributions", async () => {
    const records = generateRecords(6, 1) as { organization: { slug: string } }[];
    testbed.portal.setRecords('orgs', records);
    await run('orgs');
    testbed.portal.setRecords(
      'orgs',
      records.filter((_, index) => index !== 1 && index !== 2),
    );
    const second = await run('orgs', { org: 'agency-1' }, createTestIo(Date.parse('2026-01-02T00:00:00Z')));
    expect(second).toMatchObject({ datasets: 1, removed: 1 });
    expect(new URL(testbed.portal.requests.at(-1) as string, 'http://x').searchParams.get('org_slug')).toBe('agency-1');
    const removed = await testbed.database.handle.db.selectFrom('assets').select(['url', 'priority']).where('removed_from_source_at', 'is not', null).execute();
    expect(removed).toEqual([{ url: 'https://files.example.gov/ds-1/0.csv', priority: 7 }]);
  });

  it('waits out 429 OVER_RATE_LIMIT, and reports it when it lasts', async () => {
    testbed.portal.setRecords('limited', generateRecords(3, 1));
    testbed.portal.fault('limited', 'over-rate-limit');
    expect(await run('limited')).toMatchObject({ resources: 3 });
    testbed.portal.fault('limited', 'over-rate-limit', 'over-rate-limit', 'over-rate-limit');
    await expect(run('limited')).rejects.toThrow(/failed after 3 attempts; last: HTTP 429: .*OVER_RATE_LIMIT/);
  });
});
