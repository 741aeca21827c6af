import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { databaseEnv, runCli } from './cli-runner.js';
import { createTestDatabase, dialects, type TestDatabase } from './databases.js';
import { generatePackages, startFakePortal, type FakePortal } from './fake-portal.js';

describe('dispatcher import (catalogs) help', () => {
  it('documents the catalog commands', async () => {
    const help = await runCli(['import', 'ckan', '--help'], {});
    expect(help.code).toBe(0);
    for (const text of ['Usage: dispatcher import ckan', '--org', '--rows', 'CATALOG_REQUESTS_PER_SECOND']) expect(help.stdout).toContain(text);
    const datagov = await runCli(['import', 'datagov', '--help'], {});
    for (const text of ['Usage: dispatcher import datagov', '--api-key', '--url', '--per-page']) expect(datagov.stdout).toContain(text);
    const dcat = await runCli(['import', 'dcat', '--help'], {});
    expect(dcat.stdout).toContain('Usage: dispatcher import dcat [options] <location>');
  });
});

describe.each(dialects)('dispatcher import ckan on %s', (dialect) => {
  let portal: FakePortal;
  let database: TestDatabase;

  beforeAll(async () => {
    portal = await startFakePortal();
    portal.setPackages('generated', generatePackages(30, 3));
  });
  afterAll(async () => {
    await portal.close();
  });
  beforeEach(async () => {
    database = await createTestDatabase(dialect);
  });
  afterEach(async () => {
    await database.drop();
  });

  it('imports a portal with progress on stderr and a summary on stdout, and refuses bad flags', async () => {
    const env = { ...databaseEnv(database), CATALOG_REQUESTS_PER_SECOND: '100' };
    const run = await runCli(['import', 'ckan', `${portal.url}/generated/`, '--rows', '10'], env);
    expect(run.code).toBe(0);
    expect(run.stderr.trim().split('\n')).toHaveLength(3);
    expect(run.stderr).toMatch(/page 3: 30 of 30 datasets, 90 resources/);
    expect(run.stdout).toMatch(/Imported 90 resources from 30 datasets \(3 pages\) of http:\/\/127\.0\.0\.1:\d+\/generated in [\d.]+ s: 90 new, 0 updated/);
    expect(await database.handle.db.selectFrom('assets').select('id').execute()).toHaveLength(90);

    const rows = await runCli(['import', 'ckan', `${portal.url}/generated`, '--rows', '5000'], env);
    expect(rows.code).not.toBe(0);
    expect(rows.stderr).toContain('1 to 1000');
    const refused = await runCli(['import', 'ckan', `${portal.url}/nothing`], env);
    expect(refused.code).not.toBe(0);
    expect(refused.stderr).toMatch(/^dispatcher: .*Action name not known/);
  });
});
