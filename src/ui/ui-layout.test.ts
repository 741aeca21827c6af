import fs from 'node:fs';
import path from 'node:path';
import type { Locator, Page } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { browserAvailable } from '../../test/browser.js';
import { ALICE_PASSWORD, figure, logIn, startDashboard, type Dashboard } from '../../test/dashboard-fixture.js';
import { dialects } from '../../test/databases.js';
import { ADMIN_PASSWORD, type TestServer } from '../../test/server.js';

/** Every page at both widths, kept after the run (git-ignored): `<page>-<width>.png`. */
const SCREENSHOTS = path.resolve(import.meta.dirname, '../../test-artifacts/screenshots');
const WIDTHS = [1400, 390];

describe.skipIf(!browserAvailable).each(dialects)("the dashboard's pages at every width, in Chromium on %s", (dialect) => {
  let dashboard: Dashboard;
  let server: TestServer;

  beforeAll(async () => {
    dashboard = await startDashboard(dialect);
    server = dashboard.server;
    fs.mkdirSync(SCREENSHOTS, { recursive: true });
  });
  afterAll(async () => {
    await dashboard?.stop();
  });

  it('never shows a card or table that links to an empty page, to an admin or to a user', async () => {
    const people: [string, string][] = [
      ['admin', ADMIN_PASSWORD],
      ['alice', ALICE_PASSWORD],
    ];
    for (const [username, password] of people) {
      const page = await logIn(dashboard, username, password);
      await figure(page, 'assets_total').waitFor();
      const links = await page.locator('#page .figures a, #page .table-wrap a').evaluateAll((anchors) => anchors.map((anchor) => anchor.getAttribute('href')));
      expect(links.length, username).toBeGreaterThan(0);
      if (username === 'alice') {
        // A user's Nodes page lists the workers they rent, not the fleet the cards count.
        expect(links.filter((href) => href?.startsWith('#/nodes') || href?.startsWith('#/rentals'))).toEqual([]);
      } else {
        expect(links).toEqual(expect.arrayContaining(['#/nodes', '#/assets?state=gone']));
      }
      for (const href of links) {
        await page.goto(`${server.url}/ui#/overview`);
        await figure(page, 'assets_total').waitFor();
        await page.locator(`#page a[href="${href}"]`).first().click();
        await page.waitForFunction(() => document.querySelector('#page h1')?.textContent !== 'Overview');
        await page.locator('#page .table-wrap, #page .empty').first().waitFor();
        expect(await page.locator('#page .empty').allTextContents(), `${username} ${href}`).toEqual([]);
        expect(await page.getByText('This page is for admins.').count(), `${username} ${href}`).toBe(0);
      }
      await page.close();
    }
    expect(dashboard.pageErrors).toEqual([]);
  });

  it('shows every page at 1400 and 390 px without overflow, console errors or a Log out before login, and saves screenshots', async () => {
    for (const width of WIDTHS) {
      const page = await dashboard.browser.newPage({ viewport: { width, height: 900 } });
      const problems: string[] = [];
      page.on('console', (message) => {
        if (message.type() === 'error' || message.type() === 'warning') problems.push(`console ${message.type()}: ${message.text()}`);
      });
      page.on('pageerror', (error) => problems.push(`page error: ${error.message}`));
      page.on('requestfailed', (request) => problems.push(`request failed: ${request.url()}`));
      page.on('response', (response) => {
        if (response.status() >= 400) problems.push(`HTTP ${response.status()}: ${response.url()}`);
      });
      await page.goto(`${server.url}/ui`);
      await page.getByRole('heading', { name: 'Log in' }).waitFor();
      expect(await page.getByRole('button', { name: 'Log out' }).isVisible()).toBe(false);
      expect(await page.getByRole('navigation', { name: 'Pages' }).isVisible()).toBe(false);
      await expectNoOverflow(page, 'login', width);
      await page.getByLabel('Username').fill('admin');
      await page.getByLabel('Password').fill(ADMIN_PASSWORD);
      await page.getByRole('button', { name: 'Log in' }).click();
      await page.getByRole('button', { name: 'Log out' }).waitFor();
      for (const [name, hash, ready] of TOUR) {
        await page.goto(`${server.url}/ui#/${hash}`);
        await ready(page).first().waitFor();
        await expectNoOverflow(page, name, width);
      }
      await page.close();
      expect(problems, `at ${width} px`).toEqual([]);
    }
  });
});

/** The tour of the dashboard: a page's name, its hash, and what shows that it has loaded. */
const TOUR: [string, string, (page: Page) => Locator][] = [
  ['overview', 'overview', (page) => page.getByRole('table', { name: 'Progress by dataset' })],
  ['nodes', 'nodes', (page) => page.getByRole('table', { name: 'Nodes' })],
  ['assets', 'assets', (page) => page.getByRole('table', { name: 'Assets' })],
  ['asset', 'asset/ocean-1', (page) => page.getByRole('table', { name: 'History' })],
  ['rentals', 'rentals', (page) => page.getByRole('table', { name: 'Schedules' })],
  ['imports', 'imports', (page) => page.getByRole('progressbar', { name: '5 of 5 datasets' })],
  ['events', 'events', (page) => page.getByRole('list', { name: 'Latest events' }).locator('time')],
];

/**
 * Every element lies within the viewport, or inside a sideways-scrolling box that fits it and
 * shows its "scroll sideways" hint; then the page's screenshot is saved.
 */
async function expectNoOverflow(page: Page, name: string, width: number): Promise<void> {
  // The scroll hints are set by a ResizeObserver: let it run after layout.
  await page.evaluate(() => new Promise((resolve) => requestAnimationFrame(() => requestAnimationFrame(resolve))));
  const problems = await page.evaluate(() => {
    const viewport = document.documentElement.clientWidth;
    const found: string[] = [];
    if (document.documentElement.scrollWidth > viewport) found.push(`the page scrolls sideways: ${document.documentElement.scrollWidth} > ${viewport}`);
    const describe = (element: Element) =>
      `${element.tagName.toLowerCase()}${element.id ? `#${element.id}` : ''}${element.className && typeof element.className === 'string' ? `.${element.className.split(' ').join('.')}` : ''} "${(element.textContent ?? '').trim().slice(0, 40)}"`;
    const inside = (rect: DOMRect) => rect.left >= -0.5 && rect.right <= viewport + 0.5;
    for (const element of document.body.querySelectorAll('*')) {
      const rect = element.getBoundingClientRect();
      if (rect.width === 0 || rect.height === 0 || inside(rect)) continue;
      // Hidden on purpose: the skip link until focused, text for screen readers only.
      if (element.closest('.skip, .visually-hidden, thead') && getComputedStyle(element.closest('.skip, .visually-hidden, thead')!).position === 'absolute')
        continue;
      let scroller = element.parentElement;
      while (scroller && !['auto', 'scroll'].includes(getComputedStyle(scroller).overflowX)) scroller = scroller.parentElement;
      const hint = scroller?.parentElement?.querySelector(':scope > .scroll-hint');
      if (scroller && inside(scroller.getBoundingClientRect()) && scroller.hasAttribute('data-overflowing') && hint?.checkVisibility()) continue;
      found.push(describe(element));
    }
    return found;
  });
  expect(problems, `${name} at ${width} px`).toEqual([]);
  await page.screenshot({ path: path.join(SCREENSHOTS, `${name}-${width}.png`), fullPage: true });
}
