import { describe, expect, it } from 'vitest';
import { dialects } from '../../test/databases.js';
import { generatePackages } from '../../test/fake-portal.js';
import { catalogConfig, createTestIo, useCatalogTestbed } from '../../test/import-io.js';
import { importCkan } from './ckan.import.js';

const DAY = 86_400_000;

describe.each(dialects)('CKAN import on %s', (dialect) => {
  const testbed = useCatalogTestbed(dialect);

  const assets = () => testbed.database.handle.db.selectFrom('assets').selectAll().orderBy('id').execute();
  const run = (name: string, flags = {}, io = createTestIo(), config = catalogConfig()) =>
    importCkan(testbed.database.handle.db, config, io, `${testbed.portal.url}/${name}`, flags);

  it('maps the recorded Birmingham portal: 54 resources, sizes unknown, MD5 hashes not taken as sha256', async () => {
    const summary = await run('birmingham');
    expect(summary).toMatchObject({ pages: 1, datasets: 10, resources: 54, new: 54, updated: 0, removed: 0, duplicates: 0 });
    const rows = await assets();
    expect(rows).toHaveLength(54);
    expect(rows.every((row) => row.size_bytes === null && row.sha256 === null)).toBe(true);
    expect(rows.every((row) => row.organization === 'birmingham-city-council' && row.source === `${testbed.portal.url}/birmingham`)).toBe(true);
    const april = rows.find((row) => row.id === 'b4a15ade-11b1-4c98-88a0-8cd8408212ac');
    expect(april).toMatchObject({ name: 'Purchase Card transactions - April 2014', format: 'XLS', priority: 5, replicas_target: 1, state: 'pending' });
    expect(april?.url).toMatch(/purchasecardtransactionsapril2014\.xls$/);
    const event = await testbed.database.handle.db.selectFrom('events').selectAll().where('kind', '=', 'catalog.imported').executeTakeFirstOrThrow();
    expect(JSON.parse(event.data ?? '{}')).toMatchObject({ new: 54, updated: 0, unchanged: 0, removed: 0, resources: 54 });
  });

  it('imports a portal whose metadata carries NUL characters and lone surrogates, the same on both databases, counting what it removed', async () => {
    const [first, second] = generatePackages(2, 2) as {
      name: string;
      organization: { name: string };
      resources: { id: string; name: string; url: string; format: string }[];
    }[];
    first!.resources[0]!.name = 'sea\u0000surface \ud800temperature';
    first!.organization.name = 'noaa\u0000';
    first!.resources[1]!.id = 'res-\u0007-bell';
    second!.resources[0]!.url = 'https://files.example.org/a\u0000b.nc';
    testbed.portal.setPackages('hostile', [first!, second!]);
    const io = createTestIo();
    const summary = await run('hostile', {}, io);
    expect(summary).toMatchObject({ resources: 4, new: 2, stripped: 2, refused: 2 });
    const rows = await assets();
    expect(rows.map((row) => [row.id, row.name, row.organization])).toEqual([
      ['res-0-0', 'seasurface temperature', 'noaa'],
      ['res-1-1', 'file-1.nc', 'org-1'],
    ]);
    expect(io.lines.join('\n')).toMatch(/2 value\(s\) had NUL characters or lone surrogates removed, 2 resource\(s\) with control characters/);
  });

  it('maps the recorded EnviDat portal with sizes in bytes, and demo.ckan.org', async () => {
    await run('envidat');
    const rows = await assets();
    expect(rows).toHaveLength(5);
    expect(rows.find((row) => row.id === '99c43a7e-36eb-411c-8242-edbfde8b5b01')).toMatchObject({
      size_bytes: 10_004_794_304,
      name: 'SNOWPACK_simulations.zip',
      format: 'ZIP',
      organization: 'cryos',
    });
    expect(rows.every((row) => row.size_bytes !== null && row.size_bytes > 0)).toBe(true);
    const demo = await run('demo');
    expect(demo).toMatchObject({ resources: 3, new: 3 });
  });

  it('re-imports idempotently: the second run changes nothing', async () => {
    await run('birmingham');
    const before = await assets();
    const io = createTestIo(Date.parse('2026-01-01T00:00:00Z') + DAY);
    const again = await run('birmingham', {}, io);
    expect(again).toMatchObject({ new: 0, updated: 0, unchanged: 54, removed: 0 });
    const after = await assets();
    expect(after.map(({ last_seen_at: _seen, ...row }) => row)).toEqual(before.map(({ last_seen_at: _seen, ...row }) => row));
    expect(after.every((row) => row.last_seen_at === io.now())).toBe(true);
  });

  it('pages by start until the count, with rows, priority from recent views, and --org as fq', async () => {
    testbed.portal.setPackages('generated', generatePackages(25, 2));
    const io = createTestIo();
    const summary = await run('generated', { rows: 10 }, io);
    expect(summary).toMatchObject({ pages: 3, datasets: 25, resources: 50, new: 50 });
    const searches = testbed.portal.requests.filter((request) => request.startsWith('/generated/')).map((request) => new URL(request, 'http://x').searchParams);
    expect(searches.map((params) => params.get('start'))).toEqual(['0', '10', '20']);
    expect(searches.every((params) => params.get('rows') === '10')).toBe(true);
    expect(io.lines).toHaveLength(3);
    expect(io.lines[2]).toMatch(/^page 3: 25 of 25 datasets, 50 resources, \d+ resources\/s$/);
    const rows = await assets();
    expect(rows.find((row) => row.id === 'res-0-0')).toMatchObject({ priority: 5, size_bytes: 1000, dataset: 'dataset-000000', organization: 'org-0' });
    expect(rows.find((row) => row.id === 'res-24-1')?.priority).toBe(7); // 24 recent views
    expect(rows.find((row) => row.id === 'res-0-1')?.sha256).toMatch(/^[0-9a-f]{64}$/);

    testbed.portal.requests.length = 0;
    await run('generated', { org: 'org-3', fq: 'res_format:NetCDF' });
    const fq = new URL(testbed.portal.requests[0] as string, 'http://x').searchParams.get('fq');
    expect(fq).toBe('res_format:NetCDF AND organization:org-3');
  });

  it('imports every dataset of a portal whose rows_max is below the default --rows, saying so once', async () => {
    testbed.portal.setPackages('capped', generatePackages(250, 2), { rowsMax: 100 });
    const io = createTestIo();
    const summary = await run('capped', {}, io);
    expect(summary).toMatchObject({ pages: 3, datasets: 250, resources: 500, new: 500 });
    const searches = testbed.portal.requests.filter((request) => request.startsWith('/capped/')).map((request) => new URL(request, 'http://x').searchParams);
    expect(searches.map((params) => [params.get('start'), params.get('rows')])).toEqual([
      ['0', '1000'],
      ['100', '100'],
      ['200', '100'],
    ]);
    expect(io.lines.filter((line) => /at most/.test(line))).toEqual([
      `${testbed.portal.url}/capped returns at most 100 datasets per page; continuing with --rows 100`,
    ]);
    expect(io.lines.at(-1)).toMatch(/^page 3: 250 of 250 datasets, 500 resources/);
    expect(await assets()).toHaveLength(500);
  });

  it('flags a vanished resource removed_from_source, raises its priority once, and clears the flag when it returns', async () => {
    const packages = generatePackages(3, 2) as { resources: object[] }[];
    testbed.portal.setPackages('shrinking', packages);
    await run('shrinking');
    const gone = packages[1]?.resources.pop();
    const later = Date.parse('2026-01-01T00:00:00Z') + DAY;
    const second = await run('shrinking', {}, createTestIo(later));
    expect(second).toMatchObject({ removed: 1, unchanged: 5, new: 0 });
    const flagged = await testbed.database.handle.db.selectFrom('assets').selectAll().where('id', '=', 'res-1-1').executeTakeFirstOrThrow();
    expect(flagged).toMatchObject({ removed_from_source_at: later, priority: 7, priority_changed_at: later });
    const event = await testbed.database.handle.db.selectFrom('events').selectAll().where('kind', '=', 'catalog.removed_from_source').executeTakeFirstOrThrow();
    expect(JSON.parse(event.data ?? '{}')).toMatchObject({ count: 1, asset_ids: ['res-1-1'] });
    // Still gone: flagged once, not raised again.
    expect(await run('shrinking', {}, createTestIo(later + DAY))).toMatchObject({ removed: 0 });
    expect((await testbed.database.handle.db.selectFrom('assets').select('priority').where('id', '=', 'res-1-1').executeTakeFirstOrThrow()).priority).toBe(7);
    // A filtered run sees part of the portal only: it flags nothing.
    packages[0]?.resources.pop();
    expect(await run('shrinking', { q: 'dataset' }, createTestIo(later + 2 * DAY))).toMatchObject({ removed: 0 });
    packages[1]?.resources.push(gone as object);
    await run('shrinking', {}, createTestIo(later + 3 * DAY));
    const back = await testbed.database.handle.db.selectFrom('assets').selectAll().where('id', '=', 'res-1-1').executeTakeFirstOrThrow();
    expect(back.removed_from_source_at).toBeNull();
    expect(await testbed.database.handle.db.selectFrom('assets').select('id').where('removed_from_source_at', 'is not', null).execute()).toEqual([
      { id: 'res-0-1' },
    ]);
  });

  it('makes one asset of one URL published by two resources, linked to both datasets', async () => {
    const packages = generatePackages(2, 2) as { resources: { url: string }[] }[];
    (packages[1]?.resources[0] as { url: string }).url = (packages[0]?.resources[0] as { url: string }).url;
    testbed.portal.setPackages('twice', packages);
    const summary = await run('twice', { rows: 1 });
    expect(summary).toMatchObject({ resources: 4, new: 3, duplicates: 1 });
    expect((await assets()).map((row) => row.id)).toEqual(['res-0-0', 'res-0-1', 'res-1-1']);
    const links = await testbed.database.handle.db.selectFrom('asset_links').selectAll().where('asset_id', '=', 'res-0-0').orderBy('resource_id').execute();
    expect(links.map((link) => [link.resource_id, link.dataset])).toEqual([
      ['res-0-0', 'dataset-000000'],
      ['res-1-0', 'dataset-000001'],
    ]);
    // Re-importing keeps the first id and does not flag the shared asset as removed.
    expect(await run('twice', {}, createTestIo(Date.parse('2026-01-02T00:00:00Z')))).toMatchObject({ new: 0, duplicates: 1, removed: 0 });
  });
});
