import { beforeEach, describe, expect, it } from 'vitest';
import { dialects } from '../../test/databases.js';
import { generatePackages } from '../../test/fake-portal.js';
import { catalogConfig, createTestIo, useCatalogTestbed } from '../../test/import-io.js';
import { parseRetryAfter } from './catalog-http.js';
import { importCkan } from './ckan.import.js';

describe.each(dialects)('CKAN import faults on %s', (dialect) => {
  const testbed = useCatalogTestbed(dialect);
  let name: string;
  let counter = 0;

  beforeEach(async () => {
    // A fresh portal per test, so that no fault is left over from another test.
    name = `faulty-${(counter += 1)}`;
    testbed.portal.setPackages(name, generatePackages(5, 2));
  });

  const count = async () => (await testbed.database.handle.db.selectFrom('assets').select('id').execute()).length;
  const run = (io = createTestIo(), flags = { rows: 2 }) => importCkan(testbed.database.handle.db, catalogConfig(), io, `${testbed.portal.url}/${name}`, flags);
  const requestsTo = () => testbed.portal.requests.filter((request) => request.startsWith(`/${name}/`)).length;

  it('waits out a 429 with Retry-After: 0 and a 500, then goes on', async () => {
    testbed.portal.fault(name, 'rate-limited', 'server-error');
    const io = createTestIo();
    expect(await run(io)).toMatchObject({ resources: 10, new: 10 });
    expect(requestsTo()).toBe(3 + 2);
    // Retry-After: 0 is honoured; the 500 (the second attempt, without one) backs off 1 s × 2.
    expect(io.sleeps).toEqual(expect.arrayContaining([2000]));
    expect(io.sleeps).toContain(0);
  });

  it('gives up after the capped retries with the last problem, and flags nothing', async () => {
    testbed.portal.fault(name, 'server-error', 'server-error', 'server-error');
    await expect(run()).rejects.toThrow(/failed after 3 attempts; last: HTTP 500: .*Solr went away/);
    expect(await count()).toBe(0);
  });

  it('retries a request that gets no answer within the timeout', async () => {
    testbed.portal.fault(name, 'hang');
    expect(await run()).toMatchObject({ resources: 10 });
    testbed.portal.fault(name, 'hang', 'hang', 'hang');
    await expect(run()).rejects.toThrow(/no answer within 300 ms/);
  });

  it('explains a body that is not JSON', async () => {
    testbed.portal.fault(name, 'garbage');
    await expect(run()).rejects.toThrow(/answered HTTP 200 with a body that is not JSON \(text\/html\): <html><body>Maintenance/);
  });

  it('explains success:false with its __type and message', async () => {
    testbed.portal.fault(name, 'refused');
    await expect(run()).rejects.toThrow(/CKAN refused .* \(HTTP 403\): Authorization Error: Access denied: private dataset/);
  });

  it('explains the bare-string answer of a URL that is not a CKAN action API', async () => {
    await expect(importCkan(testbed.database.handle.db, catalogConfig(), createTestIo(), `${testbed.portal.url}/nothing-here`, {}))
      .rejects.toThrow(/HTTP 400 "Bad request: Action name not known: package_search": is this a CKAN portal/);
  });

  it('retries a short page, then fails with a clear message when it stays short', async () => {
    testbed.portal.fault(name, 'short');
    expect(await run()).toMatchObject({ datasets: 5, resources: 10, pages: 3 });
    await testbed.database.handle.db.deleteFrom('asset_links').execute();
    await testbed.database.handle.db.deleteFrom('assets').execute();
    testbed.portal.fault(name, 'short', 'short', 'short');
    await expect(run()).rejects.toThrow(/short page from .*start=0.*: 1 datasets where 2 were expected \(count 5\), after 3 attempts/);
    expect(await count()).toBe(0);
  });

  it('keeps the pages read before a failure, and flags nothing as removed', async () => {
    await run();
    testbed.portal.setPackages(name, generatePackages(4, 2));
    testbed.portal.fault(name, 'short', 'short', 'short');
    const io = createTestIo(Date.parse('2026-01-02T00:00:00Z'));
    await expect(importCkan(testbed.database.handle.db, catalogConfig(), io, `${testbed.portal.url}/${name}`, { rows: 2 })).rejects.toThrow(/short page/);
    expect(await testbed.database.handle.db.selectFrom('assets').select('id').where('removed_from_source_at', 'is not', null).execute()).toEqual([]);
  });
});

describe('Retry-After', () => {
  it('reads seconds and HTTP dates', () => {
    const now = Date.parse('2026-01-01T00:00:00Z');
    expect(parseRetryAfter('0', now)).toBe(0);
    expect(parseRetryAfter('7', now)).toBe(7000);
    expect(parseRetryAfter('Thu, 01 Jan 2026 00:00:30 GMT', now)).toBe(30_000);
    expect(parseRetryAfter(null, now)).toBeUndefined();
    expect(parseRetryAfter('soon', now)).toBeUndefined();
  });
});
