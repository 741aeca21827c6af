import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { dialects } from '../../test/databases.js';
import { generatePackages, generateRecords } from '../../test/fake-portal.js';
import { importServerConfig, useCatalogTestbed } from '../../test/import-io.js';
import { startTestServer, type TestServer } from '../../test/server.js';

const HOUR = 3_600_000;

describe.each(dialects)('import jobs over HTTP on %s', (dialect) => {
  const testbed = useCatalogTestbed(dialect);
  let server: TestServer;
  let name: string;
  let counter = 0;

  beforeEach(async () => {
    // A fresh portal per test, so that no fault is left over from another test.
    name = `jobs-${(counter += 1)}`;
    testbed.portal.setPackages(name, generatePackages(25, 2));
    server = await startTestServer(testbed.database, importServerConfig());
  });
  afterEach(async () => {
    await server.stop();
  });

  const portalUrl = () => `${testbed.portal.url}/${name}`;
  const post = (body: unknown, token = server.adminToken) => server.api.post('/imports', body, token);
  const job = async (id: number) => (await server.api.get(`/imports/${id}`, server.adminToken)).body;
  const count = async (table: 'imports' | 'assets') => (await testbed.database.handle.db.selectFrom(table).select('id').execute()).length;

  it('runs a CKAN import in the background and reports its pages, counts and times', async () => {
    const started = await post({ source: 'ckan', url: `${portalUrl()}/api/3/action/package_search`, rows: 10 });
    expect(started.status).toBe(202);
    expect(started.body).toMatchObject({ source: 'ckan', url: portalUrl(), options: { rows: 10 }, state: 'running', created_by: 'user:admin', attempts: 1 });
    await server.ctx.imports.idle();

    const now = new Date(server.clock.now()).toISOString();
    expect(await job(started.body.id)).toMatchObject({
      state: 'succeeded',
      pages_done: 3,
      datasets_seen: 25,
      datasets_total: 25,
      resources_seen: 50,
      assets_created: 50,
      assets_updated: 0,
      assets_unchanged: 0,
      duplicates: 0,
      removed_from_source: 0,
      sizes: null,
      errors: 0,
      last_error: null,
      created_at: now,
      started_at: now,
      finished_at: now,
    });
    expect(await count('assets')).toBe(50);
    const imported = await server.api.get(`/events?kind=catalog.imported`, server.adminToken);
    expect(imported.body.items[0].data).toMatchObject({ import_id: started.body.id, new: 50 });
    expect(
      (await server.api.get(`/events?subject_type=import&subject_id=${started.body.id}`, server.adminToken)).body.items.map(
        (event: { kind: string }) => event.kind,
      ),
    ).toEqual(['import.succeeded', 'import.queued']);

    // Once finished, the source can be imported again: a re-sync that changes nothing.
    server.clock.advance(HOUR);
    const again = await post({ source: 'ckan', url: portalUrl(), org: 'org-1' });
    expect(again.status).toBe(202);
    await server.ctx.imports.idle();
    expect(await job(again.body.id)).toMatchObject({ state: 'succeeded', pages_done: 1, assets_created: 0, assets_unchanged: 8, options: { org: 'org-1' } });
    const list = await server.api.get('/imports', server.adminToken);
    expect(list.status).toBe(200);
    expect(list.body.items.map((item: { id: number }) => item.id)).toEqual([again.body.id, started.body.id]);
    const page = await server.api.get(`/imports?limit=1&state=succeeded`, server.adminToken);
    expect(page.body).toMatchObject({ items: [{ id: again.body.id }], next_cursor: again.body.id });
    expect((await server.api.get(`/imports?cursor=${again.body.id}`, server.adminToken)).body.items.map((item: { id: number }) => item.id)).toEqual([
      started.body.id,
    ]);
  });

  it('imports data.gov with its key kept out of the job, and DCAT from a URL', async () => {
    testbed.portal.setRecords(`${name}-datagov`, generateRecords(3, 2));
    const datagov = await post({ source: 'datagov', url: `${portalUrl()}-datagov`, per_page: 1, api_key: 'secret-key' });
    expect(datagov.status).toBe(202);
    expect(datagov.body.options).toEqual({ per_page: 1, api_key_set: true });
    expect(JSON.stringify((await server.api.get('/imports', server.adminToken)).body)).not.toContain('secret-key');
    // Not in the database either: the instance that took the request keeps it in memory.
    const rows = await server.ctx.db.selectFrom('imports').select('params').execute();
    expect(JSON.stringify(rows)).not.toContain('secret-key');
    testbed.portal.setDataJson(name, { dataset: [{ identifier: 'x', distribution: [{ downloadURL: 'https://files.example.gov/x.csv' }] }] });
    const dcat = await post({ source: 'dcat', url: `${portalUrl()}/data.json` });
    expect(dcat.status).toBe(202);
    await server.ctx.imports.idle();
    expect(await job(datagov.body.id)).toMatchObject({ state: 'succeeded', pages_done: 3, datasets_seen: 3, datasets_total: null, resources_seen: 6 });
    expect(await job(dcat.body.id)).toMatchObject({ state: 'succeeded', pages_done: 1, assets_created: 1, url: `${portalUrl()}/data.json` });
    const headers = testbed.portal.headers.filter((_, index) => testbed.portal.requests[index]?.startsWith(`/${name}-datagov/`));
    expect(headers.every((header) => header['x-api-key'] === 'secret-key')).toBe(true);
  });

  it('discovers unknown sizes after the pages when asked, and reports them', async () => {
    testbed.portal.setPackages(name, generatePackages(3, 1, `${testbed.portal.url}/host/files`, true));
    const started = await post({ source: 'ckan', url: portalUrl(), discover_sizes: true });
    expect(started.body.options).toEqual({ discover_sizes: true });
    await server.ctx.imports.idle();
    expect(await job(started.body.id)).toMatchObject({ state: 'succeeded', assets_created: 3, sizes: { checked: 3, discovered: 3, gone: 0, unknown: 0 } });
    const sizes = await testbed.database.handle.db.selectFrom('assets').select('size_bytes').orderBy('id').execute();
    expect(sizes.map((row) => row.size_bytes)).toEqual([1000, 2000, 3000]);
  });

  it('refuses bad input with 422, non-admins with 403, unknown ids with 404, and creates nothing', async () => {
    const refusals: [unknown, RegExp][] = [
      [{ source: 'socrata', url: portalUrl() }, /source must be equal to one of the allowed values/],
      [{ source: 'ckan', url: 'not a url' }, /url must match pattern/],
      [{ source: 'ckan', url: 'ftp://example.org/catalog' }, /url must match pattern/],
      [{ source: 'ckan', url: 'file:///etc/passwd' }, /url must match pattern/],
      [{ source: 'dcat', url: '/etc/data.json' }, /url must match pattern/],
      [{ source: 'ckan' }, /a ckan import needs a url/],
      [{ source: 'datagov', fq: 'res_format:CSV', rows: 5 }, /fq, rows are not options of datagov imports/],
      [{ source: 'ckan', url: portalUrl(), rows: 5000 }, /rows must be <= 1000/],
      [{ source: 'ckan', url: portalUrl(), discover_sizes: 'yes' }, /discover_sizes must be boolean/],
      [{ url: portalUrl() }, /source is required/],
    ];
    for (const [body, detail] of refusals) {
      const response = await post(body);
      expect(response.status, JSON.stringify(body)).toBe(422);
      expect(response.body).toMatchObject({ code: 'VALIDATION_ERROR' });
      expect(response.body.detail).toMatch(detail);
    }
    await server.api.post('/auth/signup', { username: 'someone', password: 'password-1' });
    const user = (await server.api.post('/auth/login', { username: 'someone', password: 'password-1' })).body.token;
    expect((await post({ source: 'ckan', url: portalUrl() }, user)).status).toBe(403);
    expect((await server.api.get('/imports', user)).status).toBe(403);
    expect((await server.api.get('/imports/1', user)).status).toBe(403);
    expect((await server.api.request('POST', '/imports', { body: { source: 'ckan', url: portalUrl() } })).status).toBe(401);
    expect(await count('imports')).toBe(0);
    const missing = await server.api.get('/imports/424242', server.adminToken);
    expect(missing.status).toBe(404);
    expect(missing.body).toMatchObject({ code: 'IMPORT_NOT_FOUND', detail: 'No import 424242.' });
    expect((await server.api.get('/imports/abc', server.adminToken)).status).toBe(422);
    expect((await server.api.post('/imports/424242/cancel', {}, server.adminToken)).status).toBe(404);
    expect((await server.api.post('/imports/424242/resume', {}, server.adminToken)).status).toBe(404);
  });

  it('records a failing portal as a failed job with the detail, and keeps serving', async () => {
    testbed.portal.fault(name, 'pass', 'server-error');
    const started = await post({ source: 'ckan', url: portalUrl(), rows: 10 });
    await server.ctx.imports.idle();
    const failed = await job(started.body.id);
    expect(failed).toMatchObject({ state: 'failed', pages_done: 1, resources_seen: 20, assets_created: 20, errors: 1, removed_from_source: null });
    expect(failed.last_error).toMatch(/start=10.* failed after 1 attempts; last: HTTP 500: .*Solr went away/);
    expect(failed.finished_at).toBe(new Date(server.clock.now()).toISOString());
    const events = await server.api.get(`/events?kind=import.failed`, server.adminToken);
    expect(events.body.items[0]).toMatchObject({ subject_id: String(started.body.id), data: { detail: failed.last_error } });

    // Not a CKAN portal at all; then a data.json that is not JSON.
    const nothing = await post({ source: 'ckan', url: `${testbed.portal.url}/nothing-here` });
    testbed.portal.fault(name, 'garbage');
    const garbage = await post({ source: 'dcat', url: `${portalUrl()}/data.json` });
    await server.ctx.imports.idle();
    expect((await job(nothing.body.id)).last_error).toMatch(/Action name not known: package_search": is this a CKAN portal/);
    expect((await job(garbage.body.id)).last_error).toMatch(/body that is not JSON \(text\/html\)/);
    expect((await server.api.get('/health')).status).toBe(200);
  });

  it('runs one import per source at a time (409), and cancels a running one', async () => {
    const slow = await startTestServer(testbed.database, importServerConfig({ catalogTimeoutMs: 60_000 }), server.clock);
    try {
      testbed.portal.fault(name, 'hang');
      const first = await slow.api.post('/imports', { source: 'ckan', url: portalUrl() }, slow.adminToken);
      expect(first.body.state).toBe('running');
      // The same portal however written, through either instance.
      for (const [api, token] of [
        [slow.api, slow.adminToken],
        [server.api, server.adminToken],
      ] as const) {
        const second = await api.post('/imports', { source: 'ckan', url: `${portalUrl()}/`, q: 'other' }, token);
        expect(second.status).toBe(409);
        expect(second.body).toMatchObject({ code: 'IMPORT_ALREADY_RUNNING', import_id: first.body.id });
        expect(second.body.detail).toContain(`import ${first.body.id} is running for ${portalUrl()}`);
      }
      const cancelled = await slow.api.post(`/imports/${first.body.id}/cancel`, {}, slow.adminToken);
      expect(cancelled.status).toBe(200);
      expect(cancelled.body).toMatchObject({ state: 'cancelled', finished_at: new Date(server.clock.now()).toISOString() });
      await slow.ctx.imports.idle();
      expect(await job(first.body.id)).toMatchObject({ state: 'cancelled', pages_done: 0, errors: 0, last_error: null });
      const again = await server.api.post(`/imports/${first.body.id}/cancel`, {}, server.adminToken);
      expect(again.status).toBe(409);
      expect(again.body.code).toBe('IMPORT_STATE_CONFLICT');
      const next = await post({ source: 'ckan', url: portalUrl() });
      expect(next.status).toBe(202);
      await server.ctx.imports.idle();
      expect(await job(next.body.id)).toMatchObject({ state: 'succeeded', resources_seen: 50 });
      // A finished job cannot be resumed.
      expect((await server.api.post(`/imports/${next.body.id}/resume`, {}, server.adminToken)).status).toBe(409);
    } finally {
      await slow.stop();
    }
  });
});
