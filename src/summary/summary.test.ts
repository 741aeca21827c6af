import { beforeEach, describe, expect, it } from 'vitest';
import { dialects } from '../../test/databases.js';
import { userToken } from '../../test/leasing.js';
import { readSamples, sampleValue } from '../../test/prometheus.js';
import { addProofFixture } from '../../test/proof-fixtures.js';
import { makeAssets, registerNode, useTestServer, type TestServer } from '../../test/server.js';
import { LIVENESS_LOOP } from '../loops.js';
import { PROGRESS_TOP_GROUPS } from './progress.service.js';

const MIB = 1024 * 1024;
const DAY = 86_400_000;

describe.each(dialects)('GET /api/summary on %s', (dialect) => {
  const suite = useTestServer(dialect, { loginRateLimitPerMinute: 10_000 });
  let server: TestServer;

  beforeEach(async () => {
    server = await suite.start();
  });

  const complete = (node: { name: string; token: string }, assetId: string) =>
    server.api.post('/complete', { asset_id: assetId, node_id: node.name, sha256: 'a'.repeat(64), bytes: MIB }, node.token);

  it('counts assets by state and priority, copies against targets, risk, nodes, and bytes per day, matching /status', async () => {
    const admin = server.adminToken;
    await server.api.post(
      '/assets',
      [
        ...makeAssets(2, { priority: 9, size_mb: 1, sha256: 'a'.repeat(64), replicas_target: 2 }, 'twice'),
        ...makeAssets(3, { priority: 5, size_mb: 1, sha256: 'a'.repeat(64) }, 'once'),
        ...makeAssets(1, { priority: 2 }, 'removed'),
      ],
      admin,
    );
    await server.ctx.db.updateTable('assets').set({ removed_from_source_at: server.clock.now() }).where('id', '=', 'removed-1').execute();
    const [a, b, idle] = [await registerNode(server, 'node-a'), await registerNode(server, 'node-b'), await registerNode(server, 'node-idle')];
    for (const node of [a, b, idle]) await server.api.post(`/api/nodes/${node.id}/heartbeat`, { free_bytes: 10 * 1024 * MIB }, node.token);

    // Day 1: node-a takes one asset of each kind and completes two; node-b completes a second copy the next day.
    expect((await server.api.post('/allocate', { free_space_gb: 1, node_id: 'node-a', max_assets: 2 }, a.token)).body.map((x: { id: string }) => x.id)).toEqual(
      ['twice-1', 'twice-2'],
    );
    await complete(a, 'twice-1');
    await complete(a, 'twice-2');
    server.clock.advance(DAY);
    for (const node of [b, idle]) await server.api.post(`/api/nodes/${node.id}/heartbeat`, { free_bytes: 10 * 1024 * MIB }, node.token);
    await server.api.post('/allocate', { free_space_gb: 1, node_id: 'node-b', max_assets: 2 }, b.token);
    await complete(b, 'twice-1');
    // node-idle falls silent: suspect after the timeout (the others beat again just before).
    server.clock.advance(server.config.nodeTimeoutMs - 1000);
    for (const node of [a, b]) await server.api.post(`/api/nodes/${node.id}/heartbeat`, { free_bytes: 10 * 1024 * MIB }, node.token);
    server.clock.advance(2000);
    expect(await server.loops.find((loop) => loop.name === LIVENESS_LOOP)!.runOnce()).toBe(true);

    const summary = await server.api.get('/api/summary', await userToken(server, 'reader'));
    expect(summary.status).toBe(200);
    expect(summary.body).toMatchObject({
      assets_total: 6,
      assets_by_state: { pending: 5, rescued: 1, gone: 0, unreachable: 0 },
      assets_by_priority: { '1': 0, '2': 1, '5': 3, '9': 2, '10': 0 },
      bytes_rescued: 3 * MIB,
      copies: { verified: 3, wanted: 2 + 2 + 3 + 1 },
      // once-1..3 and removed-1 have no copy; twice-2 has one of two; removed-1 is at risk too.
      at_risk: { without_copy: 4, under_replicated: 1, removed_from_source: 1, gone: 0 },
      nodes_by_status: { alive: 2, suspect: 1, dead: 0, unknown: 0 },
      active_allocations: 1,
      active_rentals: 0,
    });
    const days = summary.body.rescued_by_day;
    expect(days).toHaveLength(30);
    expect(days.at(-1)).toEqual({ day: new Date(server.clock.now()).toISOString().slice(0, 10), bytes: MIB, copies: 1 });
    expect(days.at(-2)).toEqual({ day: '2026-01-01', bytes: 2 * MIB, copies: 2 });
    expect(days.slice(0, -2).every((day: { bytes: number }) => day.bytes === 0)).toBe(true);

    const status = (await server.api.get('/status')).body;
    expect(summary.body.bytes_rescued).toBe(status.bytes_rescued);
    expect(summary.body.active_allocations).toBe(status.active_allocations);
    expect(summary.body.assets_total).toBe(status.ckan_datasets);
  });

  it('counts each rescued asset once in the distinct bytes, beside the bytes of every copy, in /api/summary, /status and /metrics', async () => {
    await server.api.post(
      '/assets',
      [
        ...makeAssets(1, { priority: 9, size_mb: 1, sha256: 'a'.repeat(64), replicas_target: 3 }, 'thrice'),
        ...makeAssets(1, { size_mb: 2, sha256: 'a'.repeat(64), replicas_target: 1 }, 'big'),
        ...makeAssets(1, { size_mb: 4, replicas_target: 2 }, 'lost'),
      ],
      server.adminToken,
    );
    await server.ctx.db.updateTable('assets').set({ state: 'gone' }).where('id', '=', 'lost-1').execute();
    const nodes = [await registerNode(server, 'node-a'), await registerNode(server, 'node-b'), await registerNode(server, 'node-c')];
    for (const node of nodes) await server.api.post('/allocate', { free_space_gb: 1, node_id: node.name, max_assets: 1 }, node.token);
    // thrice-1 gets three copies (one asset, 3 MiB of copies); big-1 none yet.
    for (const node of nodes) expect((await complete(node, 'thrice-1')).status).toBe(200);

    const summary = (await server.api.get('/api/summary', server.adminToken)).body;
    expect([summary.bytes_rescued, summary.bytes_rescued_distinct]).toEqual([3 * MIB, MIB]);
    // A gone asset wants no copy: 3 + 1, not + 2.
    expect(summary.copies).toEqual({ verified: 3, wanted: 4 });
    const status = (await server.api.get('/status')).body;
    expect([status.bytes_rescued, status.bytes_rescued_distinct]).toEqual([3 * MIB, MIB]);
    const samples = readSamples((await server.api.get<string>('/metrics')).body);
    expect([sampleValue(samples, 'dispatcher_rescued_copy_bytes'), sampleValue(samples, 'dispatcher_rescued_distinct_bytes')]).toEqual([3 * MIB, MIB]);

    // The distinct bytes are the sizes of the assets with a copy, however the API lists them.
    const assets = (await server.api.get('/assets', server.adminToken)).body.items as { copies: number; size_bytes: number }[];
    expect(assets.filter((asset) => asset.copies > 0).reduce((sum, asset) => sum + asset.size_bytes, 0)).toBe(summary.bytes_rescued_distinct);
  });

  it("reports bytes claimed against bytes proven, copies by proof state and the last 24 h's verdicts, the same in /status", async () => {
    const fixture = await addProofFixture(server);
    const summary = (await server.api.get('/api/summary', server.adminToken)).body;
    expect(summary).toMatchObject({
      bytes_proven: fixture.bytes.proven,
      bytes_claimed: fixture.bytes.claimed,
      // Only proven and suspect copies count.
      bytes_rescued: fixture.bytes.proven,
      copies: { verified: 2 },
      copies_by_proof: { proven: 1, suspect: 1, pending: 1, unproven: 1 },
      // Exactly 24 h ago is inside; a moment earlier, a cancelled audit and unfinished ones are not counted.
      audits_last_day: { passed: 3, failed: 1, missed: 1 },
    });
    const status = (await server.api.get('/status')).body;
    for (const key of ['bytes_proven', 'bytes_claimed', 'copies_by_proof', 'audits_last_day'] as const) expect(status[key], key).toEqual(summary[key]);

    // By the server's clock: an hour later the spot check passed 24 h before has left the window.
    server.clock.advance(3_600_000);
    expect((await server.api.get('/api/summary', server.adminToken)).body.audits_last_day).toEqual({ passed: 2, failed: 1, missed: 1 });
  });

  it('lists progress per organization and dataset: the largest groups by assets, then "(other)" summing the rest', async () => {
    const groups = PROGRESS_TOP_GROUPS + 2;
    // Organization org-k has k + 1 assets; each organization's first asset is in dataset ds-k, the rest in none.
    const assets = Array.from({ length: groups }, (_, k) =>
      makeAssets(
        k + 1,
        { organization: `org-${String(k).padStart(2, '0')}`, size_mb: 1, sha256: 'a'.repeat(64), priority: k === groups - 1 ? 9 : 5 },
        `o${k}`,
      ).map((asset, index) => ({
        ...asset,
        dataset: index === 0 ? `ds-${k}` : null,
      })),
    ).flat();
    await server.api.post('/assets', [...assets, ...makeAssets(3, {}, 'loose')], server.adminToken);
    const node = await registerNode(server, 'node-a');
    const granted = (await server.api.post('/allocate', { free_space_gb: 1, node_id: 'node-a', max_assets: 1 }, node.token)).body as { id: string }[];
    expect(granted.map((asset) => asset.id)).toEqual(['o21-1']);
    expect((await complete(node, 'o21-1')).status).toBe(200);

    const summary = (await server.api.get('/api/summary', server.adminToken)).body;
    const byOrganization = summary.by_organization as {
      name: string;
      assets: number;
      at_target: number;
      at_risk: number;
      without_copy: number;
      bytes_rescued_distinct: number;
    }[];
    expect(byOrganization).toHaveLength(PROGRESS_TOP_GROUPS + 1);
    expect(byOrganization[0]).toEqual({ name: 'org-21', assets: 22, at_target: 1, at_risk: 21, without_copy: 21, bytes_rescued_distinct: MIB });
    expect(byOrganization.slice(0, PROGRESS_TOP_GROUPS).map((group) => group.assets)).toEqual(
      Array.from({ length: PROGRESS_TOP_GROUPS }, (_, index) => groups - index),
    );
    // Left out: org-01 (2), org-00 (1) and the three assets without an organization.
    expect(byOrganization.at(-1)).toEqual({ name: '(other)', assets: 2 + 1 + 3, at_target: 0, at_risk: 6, without_copy: 6, bytes_rescued_distinct: 0 });
    for (const key of ['assets', 'at_target', 'at_risk', 'without_copy', 'bytes_rescued_distinct'] as const) {
      const total = byOrganization.reduce((sum, group) => sum + group[key], 0);
      expect(total, key).toBe(
        {
          assets: summary.assets_total,
          at_target: 1,
          at_risk: summary.assets_total - 1,
          without_copy: summary.at_risk.without_copy,
          bytes_rescued_distinct: summary.bytes_rescued_distinct,
        }[key],
      );
    }
    // Datasets: the assets without one form the largest group, "(none)"; then ds-* of one asset each.
    expect(summary.by_dataset[0]).toMatchObject({ name: '(none)', assets: summary.assets_total - groups });
    expect(summary.by_dataset).toHaveLength(PROGRESS_TOP_GROUPS + 1);
    expect(summary.by_dataset.at(-1).name).toBe('(other)');
  });

  it('needs a token and answers zeros on an empty database', async () => {
    expect((await server.api.get('/api/summary')).status).toBe(401);
    const empty = await server.api.get('/api/summary', server.adminToken);
    expect(empty.body).toMatchObject({
      assets_total: 0,
      bytes_rescued: 0,
      bytes_rescued_distinct: 0,
      copies: { verified: 0, wanted: 0 },
      assets_by_state: { pending: 0, rescued: 0, gone: 0, unreachable: 0 },
      bytes_proven: 0,
      bytes_claimed: 0,
      copies_by_proof: { pending: 0, unproven: 0, proven: 0, suspect: 0, vetting: 0 },
      audits_last_day: { passed: 0, failed: 0, missed: 0 },
    });
    expect([empty.body.by_organization, empty.body.by_dataset]).toEqual([[], []]);
    expect(Object.keys(empty.body.assets_by_priority)).toEqual(['1', '2', '3', '4', '5', '6', '7', '8', '9', '10']);
  });
});
