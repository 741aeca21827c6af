import type { Browser, Page } from 'playwright-core';
import { expect } from 'vitest';
import { launchChromium } from './browser.js';
import { createTestDatabase, type DialectName } from './databases.js';
import { generatePackages, startFakePortal, type FakePortal } from './fake-portal.js';
import { importServerConfig } from './import-io.js';
import { addWorkers, userToken } from './leasing.js';
import { makeAssets, registerNode, startTestServer, type TestServer } from './server.js';
import type { SshWorker } from './ssh-worker.js';

const MIB = 1024 * 1024;
const HOUR = 3_600_000;
/** 30 climate, 5 ocean, 1 removed from its source, 1 gone, and 10 from the catalog import. */
export const ASSETS_TOTAL = 47;
export const ALICE_PASSWORD = 'alice-password-1';

/** A server with something on every page of the dashboard, and a browser to look at it. */
export interface Dashboard {
  server: TestServer;
  browser: Browser;
  /** alice's token: a user (not an admin) who rents one worker. */
  alice: string;
  /** Script errors of every page opened with `logIn`. */
  pageErrors: string[];
  stop(): Promise<void>;
}

/**
 * Builds the dashboard's fixture: ocean-1 with two copies (node-a's, node-b's) and ocean-2 with one,
 * so the bytes in copies (3 MiB) exceed the distinct bytes rescued (2 MiB); node-a holds three
 * allocations; one node is dead; alice rents a worker; two schedules; one finished and one failed import.
 */
export async function startDashboard(dialect: DialectName): Promise<Dashboard> {
  const database = await createTestDatabase(dialect);
  const server = await startTestServer(
    database,
    importServerConfig({ loginRateLimitPerMinute: 10_000, workerProbeIntervalMs: 30_000, tokenTtlMs: 30 * 24 * HOUR }),
  );
  const workers: SshWorker[] = [];
  let portal: FakePortal | undefined;
  let browser: Browser | undefined;
  const stop = async () => {
    await browser?.close();
    for (const worker of workers) await worker.stop();
    await server.stop();
    await portal?.close();
    await database.drop();
  };
  try {
    await addAssetsAndCopies(server);
    await addWorkers(server, workers, 1);
    const alice = await userToken(server, 'alice');
    expect((await server.api.post('/api/rent', { duration_hours: 6 }, alice)).status).toBe(200);
    const iso = (ms: number) => new Date(server.clock.now() + ms).toISOString();
    await server.api.post('/schedules', { name: 'Maintenance', start_time: iso(2 * HOUR), end_time: iso(4 * HOUR) }, server.adminToken);
    await server.api.post(
      '/schedules',
      { name: 'Nightly', start_time: iso(0), end_time: iso(96 * HOUR), cron_start: '0 22 * * *', cron_stop: '0 6 * * *', timezone: 'Europe/Berlin' },
      alice,
    );
    portal = await startFakePortal();
    await addImports(server, portal);
    browser = await launchChromium();
    return { server, browser, alice, pageErrors: [], stop };
  } catch (error) {
    await stop();
    throw error;
  }
}

async function addAssetsAndCopies(server: TestServer): Promise<void> {
  await server.api.post(
    '/assets',
    [
      ...makeAssets(30, { size_mb: 1, sha256: 'a'.repeat(64) }, 'climate'),
      ...makeAssets(5, { priority: 8, size_mb: 1, sha256: 'a'.repeat(64), organization: 'noaa-gov', replicas_target: 2 }, 'ocean'),
      ...makeAssets(1, { priority: 3 }, 'removed'),
      ...makeAssets(1, { priority: 2 }, 'lost'),
    ],
    server.adminToken,
  );
  await server.ctx.db.updateTable('assets').set({ removed_from_source_at: server.clock.now() }).where('id', '=', 'removed-1').execute();
  await server.ctx.db.updateTable('assets').set({ state: 'gone' }).where('id', '=', 'lost-1').execute();
  const nodeA = await registerNode(server, 'node-a', { tags: { region: 'eu' } });
  const nodeB = await registerNode(server, 'node-b', { tags: { region: 'us' } });
  for (const node of [nodeA, nodeB])
    await server.api.post(`/api/nodes/${node.id}/heartbeat`, { free_bytes: 50 * 1024 * MIB, download_rate_bps: 4 * MIB }, node.token);
  const complete = (node: { name: string; token: string }, assetId: string) =>
    server.api.post('/complete', { asset_id: assetId, node_id: node.name, sha256: 'a'.repeat(64), bytes: MIB }, node.token);
  await server.api.post('/allocate', { free_space_gb: 1, node_id: 'node-a', max_assets: 5 }, nodeA.token);
  for (const assetId of ['ocean-1', 'ocean-2']) expect((await complete(nodeA, assetId)).status).toBe(200);
  server.clock.advance(1000);
  const second = (await server.api.post('/allocate', { free_space_gb: 1, node_id: 'node-b', max_assets: 2 }, nodeB.token)).body.map(
    (asset: { id: string }) => asset.id,
  );
  expect(second).toEqual(['ocean-1', 'ocean-2']);
  expect((await complete(nodeB, 'ocean-1')).status).toBe(200);
  expect((await server.api.post('/release', { asset_id: 'ocean-2', node_id: 'node-b' }, nodeB.token)).status).toBe(200);
  // A node that died: the overview counts it, and only an admin's Nodes page lists it.
  const dead = await registerNode(server, 'node-dead');
  await server.ctx.db.updateTable('nodes').set({ status: 'dead' }).where('id', '=', dead.id).execute();
}

/** A finished catalog import (10 assets), and a failed one with a long last error. */
async function addImports(server: TestServer, portal: FakePortal): Promise<void> {
  portal.setPackages('ui', generatePackages(5, 2));
  expect((await server.api.post('/imports', { source: 'ckan', url: `${portal.url}/ui`, rows: 2 }, server.adminToken)).status).toBe(202);
  await server.ctx.imports.idle();
  expect((await server.api.post('/imports', { source: 'ckan', url: `${portal.url}/no-such-portal-at-this-address`, rows: 2 }, server.adminToken)).status).toBe(
    202,
  );
  await server.ctx.imports.idle();
}

/** A new tab logged in through the form, on the overview. */
export async function logIn(dashboard: Dashboard, username: string, password: string, viewport = { width: 1280, height: 900 }): Promise<Page> {
  const page = await dashboard.browser.newPage({ viewport });
  page.on('pageerror', (error) => dashboard.pageErrors.push(`${username}: ${error.message}`));
  await page.goto(`${dashboard.server.url}/ui`);
  await page.getByLabel('Username').fill(username);
  await page.getByLabel('Password').fill(password);
  await page.getByRole('button', { name: 'Log in' }).click();
  await page.getByRole('heading', { level: 1, name: 'Overview' }).waitFor();
  return page;
}

/** An overview figure by its name (`data-figure`). */
export const figure = (page: Page, name: string) => page.locator(`[data-figure="${name}"]`);
