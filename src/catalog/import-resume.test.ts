import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { dialects } from '../../test/databases.js';
import { generatePackages } from '../../test/fake-portal.js';
import { importServerConfig, useCatalogTestbed } from '../../test/import-io.js';
import { startTestServer, type ApiClient, type TestServer } from '../../test/server.js';
import type { Config } from '../config.js';
import { IMPORTS_LOOP } from '../loops.js';
import { IMPORT_LEASE_MS } from './import-runner.js';
import { createImportJob } from './import-jobs.service.js';

const HOUR = 3_600_000;

describe.each(dialects)('import jobs resume on %s', (dialect) => {
  const testbed = useCatalogTestbed(dialect);
  const servers: TestServer[] = [];
  let name: string;
  let counter = 0;

  beforeEach(() => {
    // A fresh portal per test: 10 datasets of one resource, read 2 at a time (5 pages).
    name = `resume-${(counter += 1)}`;
    testbed.portal.setPackages(name, generatePackages(10, 1));
  });
  afterEach(async () => {
    for (const server of servers.splice(0)) await server.stop();
  });

  const start = async (overrides: Partial<Config> = {}, clock?: TestServer['clock']) => {
    const server = await startTestServer(testbed.database, importServerConfig(overrides), clock);
    servers.push(server);
    return server;
  };
  const portalUrl = () => `${testbed.portal.url}/${name}`;
  const job = async (server: TestServer, id: number) => (await server.api.get(`/imports/${id}`, server.adminToken)).body;
  /** The `start` offsets the portal was asked for, in order. */
  const offsets = () =>
    testbed.portal.requests.filter((request) => request.startsWith(`/${name}/`)).map((request) => new URL(request, 'http://x').searchParams.get('start'));
  /** Awaits API answers (no timers) until the job has written `pages` pages and the portal saw `requests` requests. */
  async function untilProgress(api: ApiClient, token: string, id: number, pages: number, requests: number): Promise<void> {
    for (let attempt = 0; attempt < 2000; attempt += 1) {
      if ((await api.get(`/imports/${id}`, token)).body.pages_done === pages && offsets().length === requests) return;
    }
    throw new Error(`import ${id} did not reach ${pages} pages and ${requests} requests`);
  }

  it('continues a failed import after its last completed page, and sweeps what neither attempt saw', async () => {
    const server = await start();
    const first = await server.api.post('/imports', { source: 'ckan', url: portalUrl(), rows: 2 }, server.adminToken);
    await server.ctx.imports.idle();
    expect(await job(server, first.body.id)).toMatchObject({ state: 'succeeded', assets_created: 10 });

    // dataset-000009 vanishes; the next import fails on page 3, then the portal recovers.
    testbed.portal.setPackages(name, generatePackages(10, 1).slice(0, 9));
    testbed.portal.requests.length = 0;
    testbed.portal.fault(name, 'pass', 'pass', 'server-error');
    server.clock.advance(HOUR);
    const second = await server.api.post('/imports', { source: 'ckan', url: portalUrl(), rows: 2 }, server.adminToken);
    await server.ctx.imports.idle();
    const failed = await job(server, second.body.id);
    expect(failed).toMatchObject({ state: 'failed', pages_done: 2, resources_seen: 4, assets_unchanged: 4, errors: 1, removed_from_source: null });
    expect(failed.last_error).toMatch(/start=4.*HTTP 500/);

    server.clock.advance(HOUR);
    const resumed = await server.api.post(`/imports/${second.body.id}/resume`, {}, server.adminToken);
    expect(resumed.status).toBe(202);
    expect(resumed.body).toMatchObject({ state: 'running', attempts: 2, finished_at: null });
    await server.ctx.imports.idle();
    expect(offsets()).toEqual(['0', '2', '4', '4', '6', '8']);
    expect(await job(server, second.body.id)).toMatchObject({
      state: 'succeeded',
      attempts: 2,
      pages_done: 5,
      datasets_seen: 9,
      resources_seen: 9,
      assets_unchanged: 9,
      removed_from_source: 1,
      errors: 1,
      started_at: new Date(server.clock.now() - HOUR).toISOString(),
    });
    // Only the vanished dataset is flagged: the pages read before the failure count as seen.
    const removed = await testbed.database.handle.db.selectFrom('assets').select('id').where('removed_from_source_at', 'is not', null).execute();
    expect(removed).toEqual([{ id: 'res-9-0' }]);
  });

  it('takes over a running import whose instance died, from its last completed page', async () => {
    // The first instance hangs on page 3 (a long timeout keeps it there): as good as dead.
    const doomed = await start({ catalogTimeoutMs: 600_000 });
    const survivor = await start({}, doomed.clock);
    testbed.portal.fault(name, 'pass', 'pass', 'hang');
    const started = await doomed.api.post('/imports', { source: 'ckan', url: portalUrl(), rows: 2 }, doomed.adminToken);
    await untilProgress(survivor.api, survivor.adminToken, started.body.id, 2, 3);

    const reconcile = () => survivor.loops.find((loop) => loop.name === IMPORTS_LOOP)!.runOnce();
    // Its lease still holds: the reconciler leaves it alone.
    expect(await reconcile()).toBe(true);
    expect(await job(survivor, started.body.id)).toMatchObject({ state: 'running', attempts: 1 });

    doomed.clock.advance(IMPORT_LEASE_MS + 1);
    expect(await reconcile()).toBe(true);
    await survivor.ctx.imports.idle();
    expect(offsets()).toEqual(['0', '2', '4', '4', '6', '8']);
    expect(await job(survivor, started.body.id)).toMatchObject({
      state: 'succeeded',
      attempts: 2,
      pages_done: 5,
      resources_seen: 10,
      assets_created: 10,
      errors: 0,
    });

    // The dead instance's late writes change nothing: it no longer holds the job.
    await doomed.stop();
    expect(await job(survivor, started.body.id)).toMatchObject({ state: 'succeeded', attempts: 2, pages_done: 5 });
  });

  it('gives a running import back when its server stops, for the next one to resume', async () => {
    const stopping = await start({ catalogTimeoutMs: 600_000 });
    testbed.portal.fault(name, 'pass', 'pass', 'hang');
    const started = await stopping.api.post('/imports', { source: 'ckan', url: portalUrl(), rows: 2 }, stopping.adminToken);
    await untilProgress(stopping.api, stopping.adminToken, started.body.id, 2, 3);
    await stopping.stop();
    const row = await testbed.database.handle.db.selectFrom('imports').selectAll().executeTakeFirstOrThrow();
    expect(row).toMatchObject({ state: 'queued', cursor: '4', pages_done: 2, lease_owner: null });

    const next = await start({}, stopping.clock);
    expect(await next.loops.find((loop) => loop.name === IMPORTS_LOOP)!.runOnce()).toBe(true);
    await next.ctx.imports.idle();
    expect(offsets()).toEqual(['0', '2', '4', '4', '6', '8']);
    expect(await job(next, started.body.id)).toMatchObject({ state: 'succeeded', attempts: 2, pages_done: 5, assets_created: 10 });
  });

  it('starts queued imports from the reconciler', async () => {
    const server = await start();
    // Queued without being started, as when the instance that took the request was full.
    const queued = await createImportJob(
      testbed.database.handle.db,
      server.ctx.dialect,
      server.config,
      { source: 'ckan', url: portalUrl() },
      'user:admin',
      server.clock.now(),
    );
    expect(await job(server, queued.id)).toMatchObject({ state: 'queued', attempts: 0, started_at: null });
    expect(await server.ctx.imports.runDue(server.clock.now())).toEqual([queued.id]);
    await server.ctx.imports.idle();
    expect(await job(server, queued.id)).toMatchObject({ state: 'succeeded', resources_seen: 10 });
    expect(await server.ctx.imports.runDue(server.clock.now())).toEqual([]);
  });
});
