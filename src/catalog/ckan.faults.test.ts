import net, { type AddressInfo } from 'node:net';
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
  const run = (io = createTestIo(), flags: { rows?: number } = { rows: 2 }) =>
    importCkan(testbed.database.handle.db, catalogConfig(), io, `${testbed.portal.url}/${name}`, flags);
  const requestsTo = () => testbed.portal.requests.filter((request) => request.startsWith(`/${name}/`)).length;

  it('waits out a 429 with Retry-After: 0 and a 500, then goes on, saying why before each retry', async () => {
    testbed.portal.fault(name, 'rate-limited', 'server-error');
    const io = createTestIo();
    expect(await run(io)).toMatchObject({ resources: 10, new: 10 });
    expect(requestsTo()).toBe(3 + 2);
    // Retry-After: 0 is honoured; the 500 (the second attempt, without one) backs off 1 s × 2.
    expect(io.sleeps).toEqual(expect.arrayContaining([2000]));
    expect(io.sleeps).toContain(0);
    const host = new URL(testbed.portal.url).host;
    expect(io.lines.filter((line) => !line.startsWith('page '))).toEqual([
      expect.stringMatching(new RegExp(`^${host}: HTTP 429: .*slow down.*, waiting 0 ms \\(Retry-After\\), then retry 1 of 2$`)),
      expect.stringMatching(new RegExp(`^${host}: HTTP 500: .*Solr went away.*, waiting 2 s, then retry 2 of 2$`)),
    ]);
  });

  it('says at once that a dead port refuses connections, before waiting to retry', async () => {
    const closed = await new Promise<number>((resolve) => {
      const server = net.createServer().listen(0, '127.0.0.1', () => {
        const { port } = server.address() as AddressInfo;
        server.close(() => resolve(port));
      });
    });
    const io = createTestIo();
    const dead = importCkan(testbed.database.handle.db, catalogConfig(), io, `http://127.0.0.1:${closed}`, {});
    await expect(dead).rejects.toThrow(/failed after 3 attempts; last: connection refused/);
    const retries = io.timeline.filter((entry) => !/^sleep \d(\.\d+)?$/.test(entry)); // pacing sleeps of < 10 ms left out
    expect(retries).toEqual([
      `127.0.0.1:${closed}: connection refused, waiting 1 s, then retry 1 of 2`,
      'sleep 1000',
      `127.0.0.1:${closed}: connection refused, waiting 2 s, then retry 2 of 2`,
      'sleep 2000',
    ]);
  });

  it('waits out a Retry-After of 42 minutes with a line every minute, and caps a longer one at CATALOG_MAX_RETRY_WAIT_SECONDS', async () => {
    const host = new URL(testbed.portal.url).host;
    testbed.portal.fault(name, 'retry-after:2520');
    const io = createTestIo();
    expect(await run(io)).toMatchObject({ resources: 10 });
    expect(io.sleeps.filter((ms) => ms >= 1000)).toEqual(Array.from({ length: 42 }, () => 60_000));
    const waits = io.lines.filter((line) => !line.startsWith('page '));
    expect(waits[0]).toMatch(new RegExp(`^${host}: HTTP 429: .*, waiting 42 min \\(Retry-After\\), then retry 1 of 2$`));
    expect(waits.slice(1)).toEqual(Array.from({ length: 41 }, (_, minute) => `waiting ${41 - minute} min more for ${host} (Retry-After)`));

    testbed.portal.fault(name, 'retry-after:7200');
    const capped = createTestIo();
    expect(await run(capped, { rows: 5 })).toMatchObject({ resources: 10 });
    expect(capped.sleeps.filter((ms) => ms >= 1000).reduce((sum, ms) => sum + ms, 0)).toBe(3_600_000);
    expect(capped.lines[0]).toMatch(/waiting 1 h \(Retry-After asked 2 h; CATALOG_MAX_RETRY_WAIT_SECONDS caps it\), then retry 1 of 2$/);
    expect(capped.lines).toContain(`waiting 59 min more for ${host} (Retry-After)`);
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
    await expect(importCkan(testbed.database.handle.db, catalogConfig(), createTestIo(), `${testbed.portal.url}/nothing-here`, {})).rejects.toThrow(
      /HTTP 400 "Bad request: Action name not known: package_search": is this a CKAN portal/,
    );
  });

  it('retries an empty page before the count is reached, then fails with a clear message when it stays empty', async () => {
    testbed.portal.fault(name, 'empty');
    const io = createTestIo();
    expect(await run(io)).toMatchObject({ datasets: 5, resources: 10, pages: 3 });
    expect(io.lines[0]).toBe(`${new URL(testbed.portal.url).host}: no datasets at start=0 of 5, then retry 1 of 2`);
    await testbed.database.handle.db.deleteFrom('asset_links').execute();
    await testbed.database.handle.db.deleteFrom('assets').execute();
    testbed.portal.fault(name, 'empty', 'empty', 'empty');
    await expect(run()).rejects.toThrow(/empty page from .*start=0.* before all 5 datasets were read, after 3 attempts/);
    expect(await count()).toBe(0);
  });

  it('loses nothing to one short page: reading goes on after the datasets that came', async () => {
    testbed.portal.fault(name, 'short');
    const io = createTestIo();
    expect(await run(io, { rows: 3 })).toMatchObject({ datasets: 5, resources: 10, new: 10 });
    const starts = testbed.portal.requests
      .filter((request) => request.startsWith(`/${name}/`))
      .map((request) => new URL(request, 'http://x').searchParams.get('start'));
    expect(starts).toEqual(['0', '2', '4']);
    expect(await count()).toBe(10);
  });

  it('keeps the pages read before a failure, and flags nothing as removed', async () => {
    await run();
    testbed.portal.setPackages(name, generatePackages(4, 2));
    testbed.portal.fault(name, 'pass', 'empty', 'empty', 'empty');
    const io = createTestIo(Date.parse('2026-01-02T00:00:00Z'));
    await expect(importCkan(testbed.database.handle.db, catalogConfig(), io, `${testbed.portal.url}/${name}`, { rows: 2 })).rejects.toThrow(/empty page/);
    expect(io.lines.filter((line) => line.startsWith('page '))).toHaveLength(1);
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

describe('a portal page past CATALOG_MAX_PAGE_BYTES', () => {
  it('is refused while it streams in, with or without a Content-Length, and the import says how to go on', async () => {
    const http = await import('node:http');
    let streamed = 0;
    const portal = http.createServer((request, response) => {
      if (request.url?.startsWith('/announced/')) {
        response.writeHead(200, { 'content-type': 'application/json', 'content-length': String(10 * 1024 * 1024) });
        return response.end();
      }
      // Without a length: a body that would never end.
      response.writeHead(200, { 'content-type': 'application/json' });
      const chunk = Buffer.alloc(16 * 1024, 0x20);
      const pump = () => {
        while (!response.destroyed) {
          streamed += chunk.length;
          if (!response.write(chunk)) return void response.once('drain', pump);
        }
      };
      response.on('close', () => response.destroy());
      pump();
    });
    await new Promise<void>((resolve) => portal.listen(0, '127.0.0.1', resolve));
    const base = `http://127.0.0.1:${(portal.address() as AddressInfo).port}`;
    const { createTestDatabase } = await import('../../test/databases.js');
    const database = await createTestDatabase('sqlite');
    try {
      const config = catalogConfig({ catalogMaxPageBytes: 64 * 1024 });
      await expect(importCkan(database.handle.db, config, createTestIo(), `${base}/endless`, {})).rejects.toThrow(
        /sent more than that: a page may be at most 65536 bytes \(CATALOG_MAX_PAGE_BYTES\)/,
      );
      await expect(importCkan(database.handle.db, config, createTestIo(), `${base}/announced`, {})).rejects.toThrow(/announces 10485760 bytes/);
      // Stopped near the limit, not at the end of the portal's patience.
      expect(streamed).toBeLessThan(64 * 1024 * 1024);
    } finally {
      portal.closeAllConnections();
      await new Promise((resolve) => portal.close(resolve));
      await database.drop();
    }
  });
});
