import { describe, expect, it } from 'vitest';
import { dialects } from '../../test/databases.js';
import { generateDataJson, readFixturePackages } from '../../test/fake-portal.js';
import { catalogConfig, createTestIo, useCatalogTestbed } from '../../test/import-io.js';
import { updatePriorities } from '../assets/priority.service.js';
import { importCkan } from './ckan.import.js';
import { importDatagov } from './datagov.import.js';
import { importDcat } from './dcat.import.js';
import { parsePriorityRules } from './priority-rules.js';

const DAY = 86_400_000;
const HEATWAVES = '99c43a7e-36eb-411c-8242-edbfde8b5b01'; // cryos, tagged CLIMATE CHANGE, ZIP
const CANOPY_CSV = '0586e734-aa61-4616-8caa-ff51b3eb7219'; // functional-plant-ecology, tagged SOIL DROUGHT, CSV

/** Rules read the way start-up reads them; priority ≥ 8 wants 3 copies, others 1. */
const withRules = (rules: object[]) =>
  catalogConfig({
    catalogPriorityRules: parsePriorityRules(JSON.stringify(rules)),
    replicasByPriority: [
      [8, 3],
      [1, 1],
    ],
  });

describe.each(dialects)('initial priority from CATALOG_PRIORITY_RULES on %s', (dialect) => {
  const testbed = useCatalogTestbed(dialect);
  const db = () => testbed.database.handle.db;
  const priorities = async () =>
    Object.fromEntries(
      (await db().selectFrom('assets').select(['id', 'url', 'priority', 'replicas_target']).execute()).map((row) => [
        row.id,
        [row.priority, row.replicas_target],
      ]),
    );
  const byUrl = async () => Object.fromEntries((await db().selectFrom('assets').select(['url', 'priority']).execute()).map((row) => [row.url, row.priority]));

  it('sets priorities by organization, CKAN tag and format at a CKAN import, and replicas from them', async () => {
    const config = withRules([
      { organization: 'cryos', priority: 9 },
      { keyword: 'climate change', boost: 1 },
      { format: 'csv', priority: 3 },
      { keyword: 'drought', boost: 5 }, // whole tags only: "SOIL DROUGHT" is not "drought"
    ]);
    await importCkan(db(), config, createTestIo(), `${testbed.portal.url}/envidat`, {});
    const rows = await priorities();
    expect(rows[HEATWAVES]).toEqual([10, 3]); // 9, +1 for the tag
    expect(rows[CANOPY_CSV]).toEqual([3, 1]);
    expect(Object.values(rows).filter(([priority]) => priority === 3)).toHaveLength(4);
  });

  it('matches data.gov keywords and media types, and DCAT publishers and keywords', async () => {
    await importDatagov(
      db(),
      withRules([
        { keyword: 'federal', boost: 2 },
        { format: 'csv', priority: 7 },
      ]),
      createTestIo(),
      { url: `${testbed.portal.url}/datagov-snapshot` },
    );
    expect(await byUrl()).toEqual({
      'https://example.gov/data/dataset-1.csv': 9, // text/csv → 7, keyword federal +2
      'https://example.gov/data/dataset-2.json': 5,
      'https://example.gov/data/dataset-2.xlsx': 5,
    });
    const catalog = generateDataJson(2, 1) as { dataset: { keyword?: string[] }[] };
    catalog.dataset[0]!.keyword = ['Climate', 'ocean'];
    testbed.portal.setDataJson('agency', catalog);
    await importDcat(
      db(),
      withRules([
        { organization: 'agency 1', priority: 8 },
        { keyword: 'climate', boost: -2 },
      ]),
      createTestIo(),
      `${testbed.portal.url}/agency/data.json`,
    );
    const dcat = await byUrl();
    expect([dcat['https://files.example.gov/dcat/0/0.zip'], dcat['https://files.example.gov/dcat/1/0.zip']]).toEqual([3, 8]);
  });

  it("applies to new assets only: a re-sync with other rules keeps an admin's change and every existing priority", async () => {
    const packages = readFixturePackages('envidat.ch-package_search.json') as { resources: object[] }[];
    testbed.portal.setPackages('envidat-copy', packages);
    const portal = `${testbed.portal.url}/envidat-copy`;
    await importCkan(db(), withRules([{ organization: 'cryos', priority: 9 }]), createTestIo(), portal, {});
    await updatePriorities(db(), [{ assetId: HEATWAVES, priority: 4 }], 'user:admin', Date.parse('2026-01-01T12:00:00Z'));

    packages[1]!.resources.push({ id: 'new-csv', url: 'https://www.envidat.ch/new.csv', name: 'new.csv', format: 'CSV' });
    const rules = [
      { organization: 'cryos', priority: 10 },
      { format: 'csv', priority: 2 },
    ];
    expect(await importCkan(db(), withRules(rules), createTestIo(Date.parse('2026-01-01T00:00:00Z') + DAY), portal, {})).toMatchObject({
      new: 1,
      updated: 0,
      unchanged: 5,
    });
    const rows = await priorities();
    expect(rows[HEATWAVES]).toEqual([4, 3]); // the admin's 4 (and the first import's 3 copies) stay
    expect(rows[CANOPY_CSV]).toEqual([5, 1]); // imported before the CSV rule: unchanged
    expect(rows['new-csv']).toEqual([2, 1]);
  });
});
