import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { dialects } from '../../test/databases.js';
import { generateDataJson } from '../../test/fake-portal.js';
import { catalogConfig, createTestIo, useCatalogTestbed } from '../../test/import-io.js';
import { importDcat } from './dcat.import.js';

describe.each(dialects)('DCAT data.json import on %s', (dialect) => {
  const testbed = useCatalogTestbed(dialect);
  let scratch: string;

  beforeEach(async () => {
    scratch = fs.mkdtempSync(path.join(os.tmpdir(), 'dispatcher-dcat-'));
  });
  afterEach(async () => {
    fs.rmSync(scratch, { recursive: true, force: true });
  });

  const run = (location: string, io = createTestIo()) => importDcat(testbed.database.handle.db, catalogConfig(), io, location);

  it('imports a data.json file, re-imports it unchanged, and flags a vanished distribution', async () => {
    const file = path.join(scratch, 'data.json');
    const catalog = generateDataJson(4, 2) as { dataset: { distribution: object[] }[] };
    // The same file listed by two datasets: one asset.
    catalog.dataset[3]?.distribution.push({ downloadURL: 'https://files.example.gov/dcat/0/0.zip' });
    fs.writeFileSync(file, JSON.stringify(catalog));
    expect(await run(file)).toMatchObject({ pages: 1, datasets: 4, resources: 9, new: 8, duplicates: 1 });
    const rows = await testbed.database.handle.db.selectFrom('assets').selectAll().orderBy('url').execute();
    expect(rows[0]).toMatchObject({
      url: 'https://files.example.gov/dcat/0/0.zip',
      size_bytes: 4096,
      format: 'ZIP',
      organization: 'Agency 0',
      dataset: 'https://agency.example.gov/id/0',
      source: file,
      name: '0.zip',
    });
    expect(rows[1]?.size_bytes).toBeNull();
    expect(await run(file, createTestIo(Date.parse('2026-01-02T00:00:00Z')))).toMatchObject({ new: 0, updated: 0, unchanged: 8, removed: 0 });
    catalog.dataset[2]?.distribution.pop();
    fs.writeFileSync(file, JSON.stringify(catalog));
    expect(await run(file, createTestIo(Date.parse('2026-01-03T00:00:00Z')))).toMatchObject({ removed: 1 });
  });

  it('reads a data.json from a URL, and refuses what is not a DCAT catalog', async () => {
    testbed.portal.setDataJson('agency', generateDataJson(3, 1));
    expect(await run(`${testbed.portal.url}/agency/data.json`)).toMatchObject({ resources: 3, new: 3, datasets: 3 });
    const notJson = path.join(scratch, 'broken.json');
    fs.writeFileSync(notJson, '{"dataset": [');
    await expect(run(notJson)).rejects.toThrow(/broken\.json is not valid JSON/);
    fs.writeFileSync(notJson, '{"datasets": []}');
    await expect(run(notJson)).rejects.toThrow(/is not a DCAT-US catalog \(no "dataset" list\)/);
  });
});
