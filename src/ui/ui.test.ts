import crypto from 'node:crypto';
import fs from 'node:fs';
import type { Page } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { browserAvailable } from '../../test/browser.js';
import { ALICE_PASSWORD, ASSETS_TOTAL, figure, logIn as logInto, startDashboard, type Dashboard } from '../../test/dashboard-fixture.js';
import { dialects } from '../../test/databases.js';
import { ADMIN_PASSWORD, registerNode, type TestServer } from '../../test/server.js';
import { serveOneTransfer } from '../../test/transfer-holder.js';

const MIB = 1024 * 1024;

describe.skipIf(!browserAvailable).each(dialects)('the dashboard in Chromium on %s', (dialect) => {
  let dashboard: Dashboard;
  let server: TestServer;
  let alice: string;

  beforeAll(async () => {
    dashboard = await startDashboard(dialect);
    ({ server, alice } = dashboard);
  });
  afterAll(async () => {
    await dashboard?.stop();
  });

  const logIn = (username: string, password: string): Promise<Page> => logInto(dashboard, username, password);

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

  it("logs an admin in and shows the overview with the API's numbers", async () => {
    const page = await logIn('admin', ADMIN_PASSWORD);
    const summary = (await server.api.get('/api/summary', server.adminToken)).body;
    expect(summary).toMatchObject({ assets_total: ASSETS_TOTAL, active_allocations: 3, active_rentals: 1, nodes_by_status: { alive: 2, dead: 1 } });
    await expect.poll(() => figure(page, 'assets_total').textContent()).toBe(String(summary.assets_total));
    expect(await figure(page, 'active_allocations').textContent()).toBe(String(summary.active_allocations));
    expect(await figure(page, 'active_rentals').textContent()).toBe(String(summary.active_rentals));
    expect(await figure(page, 'nodes_alive').textContent()).toBe(String(summary.nodes_by_status.alive));
    expect(await figure(page, 'nodes_dead').textContent()).toBe(String(summary.nodes_by_status.dead));
    expect(await figure(page, 'nodes_offline').textContent()).toBe(String(summary.nodes_by_status.offline));
    expect(await figure(page, 'suspect').textContent()).toBe(String(summary.assets_by_state.suspect));
    expect(await figure(page, 'copies').textContent()).toBe(`${summary.copies.verified} / ${summary.copies.wanted}`);
    expect(await figure(page, 'removed_from_source').textContent()).toBe('1');
    expect(await figure(page, 'gone').textContent()).toBe('1');
    expect(await figure(page, 'under_replicated').textContent()).toBe(String(summary.at_risk.under_replicated));
    const priorities = page.getByRole('img', { name: /^Assets by priority/ });
    expect(await priorities.getAttribute('aria-label')).toContain(`5 ${summary.assets_by_priority['5']}`);
    await page.getByRole('img', { name: /^Bytes stored in copies/ }).waitFor();
    await page.close();
  });

  it('shows distinct bytes (each asset with a copy once) beside the bytes in copies, and copies wanted without gone assets', async () => {
    const page = await logIn('admin', ADMIN_PASSWORD);
    const assets = (await server.api.get('/assets?limit=1000', server.adminToken)).body.items as {
      size_bytes: number;
      copies: number;
      state: string;
      replicas_target: number;
    }[];
    const distinct = assets.filter((asset) => asset.copies > 0).reduce((sum, asset) => sum + asset.size_bytes, 0);
    const copies = (await server.api.get('/allocations?state=completed&limit=1000', server.adminToken)).body.items as { bytes: number; verified: boolean }[];
    const inCopies = copies.filter((copy) => copy.verified).reduce((sum, copy) => sum + copy.bytes, 0);
    // ocean-1 has two copies, ocean-2 one: 2 MiB of data in 3 MiB of copies.
    expect([distinct, inCopies]).toEqual([2 * MIB, 3 * MIB]);
    const summary = (await server.api.get('/api/summary', server.adminToken)).body;
    expect([summary.bytes_rescued_distinct, summary.bytes_rescued]).toEqual([distinct, inCopies]);
    expect(summary.copies.wanted).toBe(assets.filter((asset) => asset.state !== 'gone').reduce((sum, asset) => sum + asset.replicas_target, 0));
    await expect.poll(() => figure(page, 'bytes_rescued_distinct').textContent()).toBe('2.00 MiB');
    expect(await figure(page, 'bytes_rescued').textContent()).toBe('3.00 MiB');

    // Per organization: noaa-gov's five ocean assets, ocean-1 at target, ocean-2 with one copy of two, three without.
    const organizations = page.getByRole('table', { name: 'Progress by organization' });
    const noaa = organizations.getByRole('row').filter({ has: page.getByRole('link', { name: 'noaa-gov' }) });
    expect(await noaa.getByRole('cell').allTextContents()).toEqual(['noaa-gov', '5', '1', '4', '3', '2.00 MiB']);
    expect(summary.by_organization.reduce((sum: number, group: { assets: number }) => sum + group.assets, 0)).toBe(ASSETS_TOTAL);
    expect(await page.getByRole('table', { name: 'Progress by dataset' }).getByRole('row').count()).toBe(1 + summary.by_dataset.length);
    await noaa.getByRole('link', { name: 'noaa-gov' }).click();
    await expect.poll(() => page.getByRole('table', { name: 'Assets' }).locator('tbody tr').count()).toBe(5);
    await page.close();
  });

  it('lets an admin drain a node, and the API shows it', async () => {
    const page = await logIn('admin', ADMIN_PASSWORD);
    await page.getByRole('link', { name: 'Nodes' }).click();
    await page.getByRole('table', { name: 'Nodes' }).waitFor();
    expect(await page.getByRole('row').count()).toBe(1 + 4);
    await page.getByRole('button', { name: 'Drain node-b' }).click();
    await page.getByRole('button', { name: 'Drain node-b' }).waitFor({ state: 'detached' });
    const nodes = (await server.api.get('/api/nodes', server.adminToken)).body as { name: string; draining: boolean }[];
    expect(nodes.find((node) => node.name === 'node-b')?.draining).toBe(true);
    expect(nodes.find((node) => node.name === 'node-a')?.draining).toBe(false);
    await page.close();
  });

  it('filters and pages through assets, and changes a priority that the API then reports', async () => {
    const page = await logIn('admin', ADMIN_PASSWORD);
    await page.getByRole('link', { name: 'Assets' }).click();
    const rows = page.getByRole('table', { name: 'Assets' }).locator('tbody tr');
    await expect.poll(() => rows.count()).toBe(25);
    await page.getByRole('button', { name: 'Next page' }).click();
    await expect.poll(() => rows.count()).toBe(ASSETS_TOTAL - 25);
    await page.getByRole('button', { name: 'Previous page' }).click();
    await expect.poll(() => rows.count()).toBe(25);

    await page.getByLabel('Organization').fill('noaa-gov');
    await page.getByLabel('Priority from').selectOption('8');
    await page.getByRole('button', { name: 'Search' }).click();
    const filtered = (await server.api.get('/assets?organization=noaa-gov&min_priority=8', server.adminToken)).body.items as { id: string }[];
    expect(filtered).toHaveLength(5);
    await expect.poll(() => rows.count()).toBe(5);
    expect(await rows.locator('td:first-child').allTextContents()).toEqual(filtered.map((asset) => asset.id));
    await page.getByLabel('State').selectOption('gone');
    await page.getByRole('button', { name: 'Search' }).click();
    await expect.poll(() => rows.count()).toBe(0);
    await page.getByText('Assets: no asset matches.').waitFor();
    await page.getByLabel('State').selectOption('');
    await page.getByLabel('Search').fill('ocean-1');
    await page.getByRole('button', { name: 'Search' }).click();
    await expect.poll(() => rows.count()).toBe(1);

    await page.getByRole('link', { name: 'ocean-1' }).click();
    await page.getByRole('table', { name: 'Copies' }).waitFor();
    expect(await page.getByRole('table', { name: 'Copies' }).locator('tbody tr').count()).toBe(2);
    // The history is the asset's whole trail: its allocations' grants and completions too.
    const history = page.getByRole('table', { name: 'History' });
    expect(await history.getByText('allocation.granted').count()).toBe(2);
    expect(await history.getByText('allocation.completed').count()).toBe(2);
    expect(await history.textContent()).not.toMatch(/\b1\d{12}\b/);
    await page.getByLabel('New priority').selectOption('10');
    await page.getByRole('button', { name: 'Set priority' }).click();
    await expect.poll(() => figure(page, 'priority').textContent()).toBe('10');
    expect((await server.api.get('/assets/ocean-1', server.adminToken)).body.priority).toBe(10);
    await page.getByRole('table', { name: 'History' }).getByText('asset.priority_changed').waitFor();
    await page.close();
  });

  it('shows rentals and schedule windows on a timeline, imports with progress, and the live event feed', async () => {
    const page = await logIn('admin', ADMIN_PASSWORD);
    await page.getByRole('link', { name: 'Rentals & schedules' }).click();
    await page.getByRole('img', { name: /^Rentals and upcoming schedule windows/ }).waitFor();
    expect(await page.getByRole('table', { name: 'Rentals, newest first' }).locator('tbody tr').count()).toBe(1);
    expect(await page.getByRole('table', { name: 'Schedules' }).locator('tbody tr').count()).toBe(2);
    expect(await page.locator('svg rect.window-schedule').count()).toBeGreaterThanOrEqual(2);

    await page.getByRole('link', { name: 'Imports' }).click();
    const job = page.getByRole('table', { name: 'Catalog imports, newest first' }).locator('tbody tr');
    await expect.poll(() => job.count()).toBe(2);
    await page.getByRole('progressbar', { name: '5 of 5 datasets' }).waitFor();
    expect(await job.filter({ hasText: 'succeeded' }).count()).toBe(1);
    const failed = (await server.api.get('/imports', server.adminToken)).body.items.find((each: { state: string }) => each.state === 'failed');
    expect(failed.last_error.length).toBeGreaterThan(40);
    expect(await job.filter({ hasText: 'failed' }).getByRole('cell').last().textContent()).toBe(failed.last_error);

    await page.getByRole('link', { name: 'Events' }).click();
    const feed = page.getByRole('list', { name: 'Latest events' });
    await feed.getByText('node.drained').waitFor();
    // Times to the second, how long ago on hover; times inside event data as dates, not epoch milliseconds.
    const granted = feed.locator('li').filter({ hasText: 'allocation.granted' }).first();
    expect(await granted.locator('time').textContent()).toMatch(/^\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2} UTC$/);
    await granted.locator('time').hover();
    expect(await granted.locator('time').getAttribute('title')).toMatch(/ ago$|^in |^now$/);
    expect(await granted.textContent()).toMatch(/expires_at \d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2} UTC/);
    expect(await feed.textContent()).not.toMatch(/\b1\d{12}\b/);
    // The feed is polled: an event recorded now appears without a reload.
    await server.api.post('/api/nodes/node-a/drain', {}, server.adminToken);
    await expect.poll(() => feed.locator('li').filter({ hasText: 'node.drained' }).count(), { timeout: 15_000 }).toBe(2);
    await page.close();
  });

  it('shows a user no admin action, and the API refuses them anyway; the renter ends their own rental', async () => {
    const page = await logIn('alice', ALICE_PASSWORD);
    await page.getByRole('button', { name: 'Log out' }).waitFor();
    expect(await page.getByRole('link', { name: 'Imports' }).isVisible()).toBe(false);
    expect(await page.getByRole('link', { name: 'Events' }).isVisible()).toBe(false);

    await page.getByRole('link', { name: 'Nodes' }).click();
    await page.getByRole('table', { name: 'Nodes' }).waitFor();
    expect(await page.getByRole('row').count()).toBe(1 + 1);
    expect(await page.getByRole('button', { name: /^(Drain|Clear) / }).count()).toBe(0);

    await page.goto(`${server.url}/ui#/asset/climate-1`);
    await page.getByRole('table', { name: 'History' }).or(page.getByText('History: no event yet.')).waitFor();
    expect(await page.getByRole('button', { name: 'Set priority' }).count()).toBe(0);
    await page.goto(`${server.url}/ui#/events`);
    await page.getByText('This page is for admins.').waitFor();

    // The same calls the admin buttons make, with alice's token from the page: refused.
    const refused = await page.evaluate(async () => {
      const headers = { authorization: `Bearer ${sessionStorage.getItem('dispatcher.token')}`, 'content-type': 'application/json' };
      const call = async (url: string, body: unknown) => (await fetch(url, { method: 'POST', headers, body: JSON.stringify(body) })).status;
      return [
        await call('/api/nodes/node-a/clear', {}),
        await call('/update-ckan', { updates: [{ asset_id: 'climate-1', new_priority: 1 }] }),
        (await fetch('/events', { headers })).status,
      ];
    });
    expect(refused).toEqual([403, 403, 403]);
    expect((await server.api.get('/assets/climate-1', server.adminToken)).body.priority).toBe(5);

    await page.goto(`${server.url}/ui#/rentals`);
    const end = page.getByRole('button', { name: /^End rental / });
    await end.click();
    await end.waitFor({ state: 'detached' });
    const rentals = (await server.api.get('/api/rentals', alice)).body as { state: string }[];
    expect(rentals.map((rental) => rental.state)).toEqual(['ended']);

    await page.getByRole('button', { name: 'Log out' }).click();
    await page.getByRole('heading', { name: 'Log in' }).waitFor();
    expect(await page.evaluate(() => sessionStorage.getItem('dispatcher.token'))).toBeNull();
    await page.close();
  });

  it("downloads an asset from a volunteer's copy with the Download button, and shows whose copy is online", async () => {
    const content = crypto.randomBytes(300_000);
    const sha256 = crypto.createHash('sha256').update(content).digest('hex');
    await server.api.post(
      '/assets',
      [{ id: 'restorable', url: 'http://127.0.0.1:9/gone', name: 'restorable.csv', priority: 10, size_bytes: content.length, sha256 }],
      server.adminToken,
    );
    const holder = await registerNode(server, 'node-restore');
    await server.api.post(`/api/nodes/${holder.id}/heartbeat`, { free_bytes: 10 * 1024 * MIB }, holder.token);
    await server.api.post('/allocate', { free_space_gb: 1, node_id: holder.name, max_assets: 1 }, holder.token);
    expect((await server.api.post('/complete', { asset_id: 'restorable', node_id: holder.name, sha256, bytes: content.length }, holder.token)).status).toBe(
      200,
    );

    const page = await logIn('alice', ALICE_PASSWORD);
    await page.goto(`${server.url}/ui#/asset/restorable`);
    await page.getByRole('table', { name: 'Copies' }).locator('[data-holder="online"]').waitFor();
    const download = page.waitForEvent('download');
    await page.getByRole('button', { name: 'Download' }).click();
    // The test plays the holder's agent: it answers the transfer the restore asks for.
    await serveOneTransfer(server, holder, content);
    const saved = await download;
    expect(saved.suggestedFilename()).toBe('restorable.csv');
    expect(fs.readFileSync((await saved.path()) as string).equals(content)).toBe(true);
    await page.close();
  });

  it('refuses a wrong password in the form and raised no script error on any page', async () => {
    const page = await dashboard.browser.newPage();
    await page.goto(`${server.url}/ui`);
    await page.getByLabel('Username').fill('admin');
    await page.getByLabel('Password').fill('wrong-password');
    await page.getByRole('button', { name: 'Log in' }).click();
    await page.getByRole('alert').filter({ hasText: 'Wrong username or password.' }).waitFor();
    await page.close();
    expect(dashboard.pageErrors).toEqual([]);
  });
});
