import { afterEach, describe, expect, it } from 'vitest';
import { dialects } from '../../test/databases.js';
import { generateDataJson, generatePackages } from '../../test/fake-portal.js';
import { importServerConfig, useCatalogTestbed } from '../../test/import-io.js';
import { startTestServer, type TestServer } from '../../test/server.js';
import { CATALOG_SYNC_LOOP } from '../loops.js';
import { syncCatalogs } from './catalog-sync.js';

const HOUR = 3_600_000;

describe.each(dialects)('periodic catalog re-sync on %s', (dialect) => {
  const testbed = useCatalogTestbed(dialect);
  let server: TestServer;
  let counter = 0;

  afterEach(async () => {
    await server.stop();
  });

  const jobs = async () => (await server.api.get('/imports', server.adminToken)).body.items as Record<string, unknown>[];

  it('is off by default', async () => {
    server = await startTestServer(testbed.database, importServerConfig());
    expect(server.loops.map((loop) => loop.name)).not.toContain(CATALOG_SYNC_LOOP);
  });

  it('imports the configured sources once per CATALOG_SYNC_INTERVAL, skipping one still being imported', async () => {
    const name = `sync-${(counter += 1)}`;
    const packages = generatePackages(6, 2);
    testbed.portal.setPackages(name, packages);
    testbed.portal.setDataJson(name, generateDataJson(2, 1));
    const ckanUrl = `${testbed.portal.url}/${name}`;
    server = await startTestServer(
      testbed.database,
      importServerConfig({
        // Long enough that a hanging portal keeps its import running for the whole test.
        catalogTimeoutMs: 600_000,
        catalogSyncIntervalMs: 6 * HOUR,
        catalogSyncSources: [
          { source: 'ckan', url: ckanUrl, rows: 5 },
          { source: 'dcat', url: `${ckanUrl}/data.json` },
        ],
      }),
    );
    const loop = server.loops.find((candidate) => candidate.name === CATALOG_SYNC_LOOP)!;

    expect(await loop.runOnce()).toBe(true);
    await server.ctx.imports.idle();
    expect(await jobs()).toMatchObject([
      { source: 'dcat', state: 'succeeded', created_by: 'system', assets_created: 2 },
      { source: 'ckan', state: 'succeeded', created_by: 'system', assets_created: 12, pages_done: 2 },
    ]);
    // Once per interval, whichever instance asks.
    server.clock.advance(6 * HOUR - 1);
    expect(await loop.runOnce()).toBe(false);

    // Six hours on, a dataset has vanished from the portal: the re-sync flags it.
    packages.pop();
    server.clock.advance(1);
    expect(await loop.runOnce()).toBe(true);
    await server.ctx.imports.idle();
    const [dcat, ckan] = await jobs();
    expect(ckan).toMatchObject({ source: 'ckan', state: 'succeeded', assets_created: 0, assets_unchanged: 10, removed_from_source: 2 });
    expect(dcat).toMatchObject({ source: 'dcat', state: 'succeeded', assets_unchanged: 2, removed_from_source: 0 });

    // A portal that hangs keeps its import running; the next pass queues only the other source.
    testbed.portal.fault(name, 'hang');
    server.clock.advance(6 * HOUR);
    const hanging = await syncCatalogs(server.ctx, server.clock.now());
    expect(hanging).toEqual({ queued: [expect.any(Number), expect.any(Number)], busy: [] });
    // Awaited answers, no timers: until the data.json import is done (the CKAN one hangs).
    for (let attempt = 0; attempt < 2000 && (await jobs())[0]?.state !== 'succeeded'; attempt += 1);
    expect((await jobs())[0]).toMatchObject({ source: 'dcat', state: 'succeeded' });
    server.clock.advance(6 * HOUR);
    const pass = await syncCatalogs(server.ctx, server.clock.now());
    expect(pass.busy).toEqual([ckanUrl]);
    expect(pass.queued).toHaveLength(1);
    const running = (await jobs()).find((job) => job.source === 'ckan' && job.state === 'running');
    expect(running).toMatchObject({ url: ckanUrl, pages_done: 0 });
    expect((await server.api.post(`/imports/${running?.id}/cancel`, {}, server.adminToken)).status).toBe(200);
    await server.ctx.imports.idle();
  });
});
