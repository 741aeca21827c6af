import fs from 'node:fs';
import path from 'node:path';
import type { Browser, Page } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { browserAvailable, launchChromium, SCREENSHOT_DIRECTORY } from '../../test/browser.js';
import { createTestDatabase, dialects, type TestDatabase } from '../../test/databases.js';
import { generatePackages, startFakePortal, type FakePortal } from '../../test/fake-portal.js';
import { importServerConfig } from '../../test/import-io.js';
import { addWorkers, userToken } from '../../test/leasing.js';
import { ADMIN_PASSWORD, makeAssets, registerNode, startTestServer, type TestServer } from '../../test/server.js';
import type { SshWorker } from '../../test/ssh-worker.js';

const MIB = 1024 * 1024;
const HOUR = 3_600_000;

describe.skipIf(!browserAvailable).each(dialects)('the dashboard in Chromium on %s', (dialect) => {
  let database: TestDatabase;
  let server: TestServer;
  let portal: FakePortal;
  let browser: Browser;
  let alice: string;
  const workers: SshWorker[] = [];
  const pageErrors: string[] = [];

  beforeAll(async () => {
    database = await createTestDatabase(dialect);
    server = await startTestServer(database, importServerConfig({ loginRateLimitPerMinute: 10_000, workerProbeIntervalMs: 30_000, tokenTtlMs: 30 * 24 * HOUR }));
    const admin = server.adminToken;
    // 30 climate assets (priority 5), 5 ocean assets of one organization (priority 8), one removed from its source.
    await server.api.post(
      '/assets',
      [
        ...makeAssets(30, { size_mb: 1, sha256: 'a'.repeat(64) }, 'climate'),
        ...makeAssets(5, { priority: 8, size_mb: 1, sha256: 'a'.repeat(64), organization: 'noaa-gov', replicas_target: 2 }, 'ocean'),
        ...makeAssets(1, { priority: 3 }, 'removed'),
      ],
      admin,
    );
    await server.ctx.db.updateTable('assets').set({ removed_from_source_at: server.clock.now() }).where('id', '=', 'removed-1').execute();
    // Two rescue nodes: node-a completes two copies and holds three allocations.
    const nodeA = await registerNode(server, 'node-a', { tags: { region: 'eu' } });
    const nodeB = await registerNode(server, 'node-b', { tags: { region: 'us' } });
    for (const node of [nodeA, nodeB]) await server.api.post(`/api/nodes/${node.id}/heartbeat`, { free_bytes: 50 * 1024 * MIB, download_rate_bps: 4 * MIB }, node.token);
    await server.api.post('/allocate', { free_space_gb: 1, node_id: 'node-a', max_assets: 5 }, nodeA.token);
    for (const assetId of ['ocean-1', 'ocean-2']) await server.api.post('/complete', { asset_id: assetId, node_id: 'node-a', sha256: 'a'.repeat(64), bytes: MIB }, nodeA.token);
    // A worker rented by alice, and two schedules: one window, one recurring every night.
    await addWorkers(server, workers, 1);
    alice = await userToken(server, 'alice');
    expect((await server.api.post('/api/rent', { duration_hours: 6 }, alice)).status).toBe(200);
    const iso = (ms: number) => new Date(server.clock.now() + ms).toISOString();
    await server.api.post('/schedules', { name: 'Maintenance', start_time: iso(2 * HOUR), end_time: iso(4 * HOUR) }, admin);
    await server.api.post('/schedules', { name: 'Nightly', start_time: iso(0), end_time: iso(96 * HOUR), cron_start: '0 22 * * *', cron_stop: '0 6 * * *', timezone: 'Europe/Berlin' }, alice);
    // A finished catalog import (10 more assets).
    portal = await startFakePortal();
    portal.setPackages('ui', generatePackages(5, 2));
    expect((await server.api.post('/imports', { source: 'ckan', url: `${portal.url}/ui`, rows: 2 }, admin)).status).toBe(202);
    await server.ctx.imports.idle();

    fs.mkdirSync(SCREENSHOT_DIRECTORY, { recursive: true });
    browser = await launchChromium();
  });
  afterAll(async () => {
    await browser?.close();
    for (const worker of workers) await worker.stop();
    await server?.stop();
    await portal?.close();
    await database?.drop();
  });

  const shot = (page: Page, name: string) => page.screenshot({ path: path.join(SCREENSHOT_DIRECTORY, `${dialect}-${name}.png`), fullPage: true });

  async function logIn(username: string, password: string, viewport = { width: 1280, height: 900 }): Promise<Page> {
    const page = await browser.newPage({ viewport });
    page.on('pageerror', (error) => pageErrors.push(`${username}: ${error.message}`));
    await page.goto(`${server.url}/ui`);
    await page.getByLabel('Username').fill(username);
    await page.getByLabel('Password').fill(password);
    await page.getByRole('button', { name: 'Log in' }).click();
    await page.getByRole('heading', { level: 1, name: 'Overview' }).waitFor();
    return page;
  }

  const figure = (page: Page, name: string) => page.locator(`[data-figure="${name}"]`);

  it('serves the dashboard from the server itself, with a strict content security policy', async () => {
    for (const url of ['/ui', '/ui/', '/ui/app.js', '/ui/app.css']) {
      const response = await fetch(server.url + url);
      expect(response.status, url).toBe(200);
      expect(response.headers.get('content-security-policy')).toContain("default-src 'self'");
    }
    expect((await fetch(`${server.url}/ui/index.html`)).headers.get('content-type')).toMatch(/^text\/html/);
    expect((await fetch(`${server.url}/ui/..%2Fui.routes.ts`)).status).toBe(404);
    expect((await fetch(`${server.url}/ui/nothing.js`)).status).toBe(404);
  });

  it('logs an admin in and shows the overview with the API\'s numbers', async () => {
    const page = await logIn('admin', ADMIN_PASSWORD);
    const summary = (await server.api.get('/api/summary', server.adminToken)).body;
    expect(summary).toMatchObject({ assets_total: 46, active_allocations: 3, active_rentals: 1, nodes_by_status: { alive: 2 } });
    await expect.poll(() => figure(page, 'assets_total').textContent()).toBe(String(summary.assets_total));
    expect(await figure(page, 'active_allocations').textContent()).toBe(String(summary.active_allocations));
    expect(await figure(page, 'active_rentals').textContent()).toBe(String(summary.active_rentals));
    expect(await figure(page, 'nodes_alive').textContent()).toBe(String(summary.nodes_by_status.alive));
    expect(await figure(page, 'nodes_dead').textContent()).toBe(String(summary.nodes_by_status.dead));
    expect(await figure(page, 'nodes_offline').textContent()).toBe(String(summary.nodes_by_status.offline));
    expect(await figure(page, 'suspect').textContent()).toBe(String(summary.assets_by_state.suspect));
    expect(await figure(page, 'copies').textContent()).toBe(`${summary.copies.verified} / ${summary.copies.wanted}`);
    expect(await figure(page, 'bytes_rescued').textContent()).toBe('2.00 MiB');
    expect(await figure(page, 'removed_from_source').textContent()).toBe('1');
    expect(await figure(page, 'under_replicated').textContent()).toBe(String(summary.at_risk.under_replicated));
    const priorities = page.getByRole('img', { name: /^Assets by priority/ });
    expect(await priorities.getAttribute('aria-label')).toContain(`5 ${summary.assets_by_priority['5']}`);
    await page.getByRole('img', { name: /^Bytes rescued/ }).waitFor();
    await shot(page, 'overview');
    await page.setViewportSize({ width: 375, height: 800 });
    await shot(page, 'overview-phone');
    await page.close();
  });

  it('lets an admin drain a node, and the API shows it', async () => {
    const page = await logIn('admin', ADMIN_PASSWORD);
    await page.getByRole('link', { name: 'Nodes' }).click();
    await page.getByRole('table', { name: 'Nodes' }).waitFor();
    expect(await page.getByRole('row').count()).toBe(1 + 3);
    await page.getByRole('button', { name: 'Drain node-b' }).click();
    await page.getByRole('button', { name: 'Drain node-b' }).waitFor({ state: 'detached' });
    const nodes = (await server.api.get('/api/nodes', server.adminToken)).body as { name: string; draining: boolean }[];
    expect(nodes.find((node) => node.name === 'node-b')?.draining).toBe(true);
    expect(nodes.find((node) => node.name === 'node-a')?.draining).toBe(false);
    await shot(page, 'nodes');
    await page.close();
  });

  it('filters and pages through assets, and changes a priority that the API then reports', async () => {
    const page = await logIn('admin', ADMIN_PASSWORD);
    await page.getByRole('link', { name: 'Assets' }).click();
    const rows = page.getByRole('table', { name: 'Assets' }).locator('tbody tr');
    await expect.poll(() => rows.count()).toBe(25);
    await page.getByRole('button', { name: 'Next page' }).click();
    await expect.poll(() => rows.count()).toBe(46 - 25);
    await page.getByRole('button', { name: 'Previous page' }).click();
    await expect.poll(() => rows.count()).toBe(25);

    await page.getByLabel('Organization').fill('noaa-gov');
    await page.getByLabel('Priority from').selectOption('8');
    await page.getByRole('button', { name: 'Search' }).click();
    const filtered = (await server.api.get('/assets?organization=noaa-gov&min_priority=8', server.adminToken)).body.items as { id: string }[];
    expect(filtered).toHaveLength(5);
    await expect.poll(() => rows.count()).toBe(5);
    expect(await rows.locator('td:first-child').allTextContents()).toEqual(filtered.map((asset) => asset.id));
    await page.getByLabel('State').selectOption('rescued');
    await page.getByRole('button', { name: 'Search' }).click();
    await expect.poll(() => rows.count()).toBe(0);
    await page.getByText('Assets: no asset matches.').waitFor();
    await page.getByLabel('State').selectOption('');
    await page.getByLabel('Search').fill('ocean-1');
    await page.getByRole('button', { name: 'Search' }).click();
    await expect.poll(() => rows.count()).toBe(1);
    await shot(page, 'assets');

    await page.getByRole('link', { name: 'ocean-1' }).click();
    await page.getByRole('table', { name: 'Copies' }).waitFor();
    expect(await page.getByRole('table', { name: 'Copies' }).locator('tbody tr').count()).toBe(1);
    await page.getByLabel('New priority').selectOption('10');
    await page.getByRole('button', { name: 'Set priority' }).click();
    await expect.poll(() => figure(page, 'priority').textContent()).toBe('10');
    expect((await server.api.get('/assets/ocean-1', server.adminToken)).body.priority).toBe(10);
    await page.getByRole('table', { name: 'History' }).getByText('asset.priority_changed').waitFor();
    await shot(page, 'asset');
    await page.close();
  });

  it('shows rentals and schedule windows on a timeline, imports with progress, and the live event feed', async () => {
    const page = await logIn('admin', ADMIN_PASSWORD);
    await page.getByRole('link', { name: 'Rentals & schedules' }).click();
    await page.getByRole('img', { name: /^Rentals and upcoming schedule windows/ }).waitFor();
    expect(await page.getByRole('table', { name: 'Rentals, newest first' }).locator('tbody tr').count()).toBe(1);
    expect(await page.getByRole('table', { name: 'Schedules' }).locator('tbody tr').count()).toBe(2);
    expect(await page.locator('svg rect.window-schedule').count()).toBeGreaterThanOrEqual(2);
    await shot(page, 'rentals');

    await page.getByRole('link', { name: 'Imports' }).click();
    const job = page.getByRole('table', { name: 'Catalog imports, newest first' }).locator('tbody tr');
    await expect.poll(() => job.count()).toBe(1);
    await page.getByRole('progressbar', { name: '5 of 5 datasets' }).waitFor();
    expect(await job.textContent()).toContain('succeeded');
    await shot(page, 'imports');

    await page.getByRole('link', { name: 'Events' }).click();
    const feed = page.getByRole('list', { name: 'Latest events' });
    await feed.getByText('node.drained').waitFor();
    // The feed is polled: an event recorded now appears without a reload.
    await server.api.post('/api/nodes/node-a/drain', {}, server.adminToken);
    await expect.poll(() => feed.locator('li').filter({ hasText: 'node.drained' }).count(), { timeout: 15_000 }).toBe(2);
    await shot(page, 'events');
    await page.close();
  });

  it('shows a user no admin action, and the API refuses them anyway; the renter ends their own rental', async () => {
    const page = await logIn('alice', 'alice-password-1');
    await page.getByRole('button', { name: 'Log out' }).waitFor();
    expect(await page.getByRole('link', { name: 'Imports' }).isVisible()).toBe(false);
    expect(await page.getByRole('link', { name: 'Events' }).isVisible()).toBe(false);
    await shot(page, 'user-overview');

    await page.getByRole('link', { name: 'Nodes' }).click();
    await page.getByRole('table', { name: 'Nodes' }).waitFor();
    expect(await page.getByRole('row').count()).toBe(1 + 1);
    expect(await page.getByRole('button', { name: /^(Drain|Clear) / }).count()).toBe(0);
    await shot(page, 'user-nodes');

    await page.goto(`${server.url}/ui#/asset/climate-1`);
    await page.getByRole('table', { name: 'History' }).or(page.getByText('History: no event yet.')).waitFor();
    expect(await page.getByRole('button', { name: 'Set priority' }).count()).toBe(0);
    await page.goto(`${server.url}/ui#/events`);
    await page.getByText('This page is for admins.').waitFor();

    // The same calls the admin buttons make, with alice's token from the page: refused.
    const refused = await page.evaluate(async () => {
      const headers = { authorization: `Bearer ${sessionStorage.getItem('dispatcher.token')}`, 'content-type': 'application/json' };
      const call = async (url: string, body: unknown) => (await fetch(url, { method: 'POST', headers, body: JSON.stringify(body) })).status;
      return [await call('/api/nodes/node-a/clear', {}), await call('/update-ckan', { updates: [{ asset_id: 'climate-1', new_priority: 1 }] }), (await fetch('/events', { headers })).status];
    });
    expect(refused).toEqual([403, 403, 403]);
    expect((await server.api.get('/assets/climate-1', server.adminToken)).body.priority).toBe(5);

    await page.goto(`${server.url}/ui#/rentals`);
    const end = page.getByRole('button', { name: /^End rental / });
    await end.click();
    await end.waitFor({ state: 'detached' });
    const rentals = (await server.api.get('/api/rentals', alice)).body as { state: string }[];
    expect(rentals.map((rental) => rental.state)).toEqual(['ended']);
    await shot(page, 'user-rentals');

    await page.getByRole('button', { name: 'Log out' }).click();
    await page.getByRole('heading', { name: 'Log in' }).waitFor();
    expect(await page.evaluate(() => sessionStorage.getItem('dispatcher.token'))).toBeNull();
    await page.close();
  });

  it('refuses a wrong password in the form and raised no script error on any page', async () => {
    const page = await browser.newPage();
    await page.goto(`${server.url}/ui`);
    await page.getByLabel('Username').fill('admin');
    await page.getByLabel('Password').fill('wrong-password');
    await page.getByRole('button', { name: 'Log in' }).click();
    await page.getByRole('alert').filter({ hasText: 'Wrong username or password.' }).waitFor();
    await shot(page, 'login');
    await page.close();
    expect(pageErrors).toEqual([]);
  });
});
