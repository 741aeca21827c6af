import fs from 'node:fs';
import path from 'node:path';
import type { Browser, Page } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { browserAvailable, launchChromium } from '../../test/browser.js';
import { figure, logIn as logInto, type Dashboard } from '../../test/dashboard-fixture.js';
import { createTestDatabase, dialects, type TestDatabase } from '../../test/databases.js';
import { answerFor, sourceFile, type SourceFile } from '../../test/audit-holder.js';
import { startFileServer, type FileServer } from '../../test/file-server.js';
import { ADMIN_PASSWORD, registerNode, startTestServer, type TestServer } from '../../test/server.js';
import { proofDepsOf } from '../audits/audits.routes.js';
import { runProofs } from '../audits/proof.service.js';

const HOUR = 3_600_000;
/** Beside the layout test's screenshots (git-ignored): `proofs-<page>.png`. */
const SCREENSHOTS = path.resolve(import.meta.dirname, '../../test-artifacts/screenshots');
const GIB = 1024 ** 3;

type Node = Awaited<ReturnType<typeof registerNode>>;
interface AuditItem {
  id: number;
  asset_id: string;
  kind: string;
  nonce: string | null;
  ranges: { offset: number; length: number }[];
  block: number | null;
  url: string;
}

const file = sourceFile;
type File = SourceFile;
const answerOf = (item: AuditItem, copy: File, wrong = false) => answerFor(item, copy, wrong);

async function seedProofs(server: TestServer, source: FileServer) {
  const files = { kept: file('kept', 200_000), waiting: file('waiting', 100_000), doubted: file('doubted', 300_000) };
  await server.api.post(
    '/assets',
    Object.values(files).map((copy, index) => ({
      id: copy.name,
      name: `${copy.name}.bin`,
      url: `${source.url}/files/${copy.name}?size=${copy.data.length}`,
      priority: 9 - index,
      size_bytes: copy.data.length,
      replicas_target: 1,
    })),
    server.adminToken,
  );
  const heartbeat = async (node: Node) =>
    ((await server.api.post(`/api/nodes/${node.id}/heartbeat`, { free_bytes: 10 * GIB }, node.token)).body as { audits: AuditItem[] }).audits;
  const take = async (node: Node, count: number) => {
    await heartbeat(node);
    const granted = await server.api.post('/allocate', { free_space_gb: 10, node_id: node.name, max_assets: count }, node.token);
    return (granted.body as { id: string }[]).map((asset) => asset.id);
  };
  const complete = async (node: Node, copy: File) => {
    const body = { asset_id: copy.name, node_id: node.name, sha256: copy.sha256, bytes: copy.data.length, merkle_root: copy.merkleRoot };
    expect((await server.api.post('/complete', body, node.token)).body).toMatchObject({ proof: 'pending' });
  };
  const answer = async (node: Node, { wrong = false } = {}) => {
    const items = await heartbeat(node);
    expect(items).toHaveLength(1);
    const item = items[0]!;
    const copy = files[item.asset_id as keyof typeof files];
    return (await server.api.post(item.url, answerOf(item, copy, wrong), node.token)).body.verdict as string;
  };
  const prove = () => runProofs(server.ctx.db, server.ctx.dialect, proofDepsOf(server.ctx), 10_000, server.clock.now());

  const [honest, sloppy] = [await registerNode(server, 'node-honest'), await registerNode(server, 'node-sloppy')];
  expect(await take(honest, 2)).toEqual(['kept', 'waiting']);
  expect(await take(sloppy, 1)).toEqual(['doubted']);
  await complete(honest, files.kept);
  await complete(sloppy, files.doubted);
  expect(await prove()).toMatchObject({ prepared: 2 });
  expect([await answer(honest), await answer(sloppy)]).toEqual(['passed', 'passed']);
  // An interval later both counted copies are audited: nonced ranges of the source again, as no
  // two operators agreed on their Merkle roots.
  server.clock.advance(HOUR + 1);
  await Promise.all([heartbeat(honest), heartbeat(sloppy)]);
  expect(await prove()).toMatchObject({ started: 2 });
  expect(await prove()).toMatchObject({ prepared: 2 });
  expect([await answer(honest), await answer(sloppy, { wrong: true })]).toEqual(['passed', 'failed']);
  await complete(honest, files.waiting);
}

describe.skipIf(!browserAvailable).each(dialects)('proofs and audits on the dashboard, in Chromium on %s', (dialect) => {
  let database: TestDatabase;
  let server: TestServer;
  let source: FileServer;
  let browser: Browser;
  let dashboard: Dashboard;

  beforeAll(async () => {
    database = await createTestDatabase(dialect);
    source = await startFileServer();
    server = await startTestServer(database, {
      verifySpotChecks: 3,
      sourceAllowPrivate: true,
      auditIntervalMs: HOUR,
      auditDeadlineMs: 60_000,
      auditsPerMinute: 60_000,
      nodeRateLimitPerMinute: 1_000_000,
      loginRateLimitPerMinute: 10_000,
    });
    await seedProofs(server, source);
    browser = await launchChromium();
    dashboard = { server, browser, alice: '', pageErrors: [], stop: async () => {} };
    fs.mkdirSync(SCREENSHOTS, { recursive: true });
  });
  afterAll(async () => {
    await browser?.close();
    await server?.stop();
    await source?.close();
    await database?.drop();
  });

  const logIn = (): Promise<Page> => logInto(dashboard, 'admin', ADMIN_PASSWORD);
  const screenshot = (page: Page, name: string) => page.screenshot({ path: path.join(SCREENSHOTS, `proofs-${name}.png`), fullPage: true });

  it("shows proven against claimed bytes, copies by proof and the last day's audits on the overview", async () => {
    const summary = (await server.api.get('/api/summary', server.adminToken)).body;
    expect(summary).toMatchObject({
      // kept and doubted (suspect, still counted); waiting is claimed only.
      bytes_proven: 200_000 + 300_000,
      bytes_claimed: 200_000 + 300_000 + 100_000,
      copies_by_proof: { proven: 1, pending: 1, suspect: 1, unproven: 0 },
      audits_last_day: { passed: 3, failed: 1, missed: 0 },
    });
    const page = await logIn();
    await expect.poll(() => figure(page, 'bytes_proven').textContent()).toBe('488.3 KiB');
    expect(await figure(page, 'bytes_claimed').textContent()).toBe('585.9 KiB');
    expect(await figure(page, 'bytes_rescued').textContent()).toBe('488.3 KiB');
    for (const [name, value] of [
      ['copies_proven', '1'],
      ['copies_pending', '1'],
      ['copies_suspect', '1'],
      ['copies_unproven', '0'],
      ['copies_vetting', '0'],
      ['audits_passed', '3'],
      ['audits_failed', '1'],
      ['audits_missed', '0'],
    ] as const) {
      expect(await figure(page, name).textContent(), name).toBe(value);
    }
    const card = page.getByRole('region', { name: 'Proofs' });
    expect(await card.locator('[data-figure]').count()).toBe(10);
    await screenshot(page, 'overview');
    await page.close();
  });

  it("lists each copy's proof state and its last audit, with its time and verdict, on the asset page", async () => {
    const page = await logIn();
    const expected = [
      ['kept', 'proven', 'passed'],
      ['doubted', 'suspect', 'failed'],
      ['waiting', 'pending', null],
    ] as const;
    for (const [assetId, proof, verdict] of expected) {
      const [copy] = (await server.api.get(`/assets/${assetId}`, server.adminToken)).body.copies_detail;
      expect(copy).toMatchObject({ proof, last_audit: verdict === null ? null : { verdict } });
      await page.goto(`${server.url}/ui#/asset/${assetId}`);
      // The facts and the tables are drawn together: once the facts name this asset, its copies are shown.
      await expect.poll(() => page.locator('.facts dd').first().textContent(), { message: assetId }).toBe(assetId);
      const row = page.getByRole('table', { name: 'Copies' }).locator('tbody tr');
      expect(await row.count(), assetId).toBe(1);
      const cell = (header: string) => row.locator(`td[data-label="${header}"]`);
      expect(await cell('Proof').textContent(), assetId).toBe(proof);
      expect(await cell('Counts').textContent(), assetId).toBe(proof === 'pending' ? 'no' : 'yes');
      if (verdict === null) {
        expect(await cell('Last audit').textContent(), assetId).toBe('—');
      } else {
        const at = copy.last_audit.at as string;
        expect(await cell('Last audit').locator(`[data-audit="${verdict}"]`).count(), assetId).toBe(1);
        expect(await cell('Last audit').textContent(), assetId).toBe(`${verdict} ${at.slice(0, 10)} ${at.slice(11, 19)} UTC`);
        expect(await cell('Last audit').locator('time').getAttribute('datetime')).toBe(at);
      }
      await screenshot(page, `asset-${assetId}`);
    }
    await page.close();
  });

  it("shows each node's audit score with the audits behind it on the nodes page", async () => {
    const nodes = (await server.api.get('/api/nodes', server.adminToken)).body as { name: string; audit_score: number | null }[];
    expect(Object.fromEntries(nodes.map((node) => [node.name, node.audit_score]))).toEqual({ 'node-honest': 1, 'node-sloppy': 0.5 });
    const page = await logIn();
    await page.getByRole('link', { name: 'Nodes' }).click();
    const table = page.getByRole('table', { name: 'Nodes' });
    await table.waitFor();
    const score = (name: string) =>
      table
        .getByRole('row')
        .filter({ has: page.locator(`[data-node="${name}"]`) })
        .locator('td[data-label="Audit score"]');
    expect(await score('node-honest').textContent()).toBe('100% 2 of 2 passed');
    expect(await score('node-sloppy').textContent()).toBe('50% 1 of 2 passed');
    await screenshot(page, 'nodes');
    await page.close();
    expect(dashboard.pageErrors).toEqual([]);
  });
});
