import { pino } from 'pino';
import { describe, expect, it } from 'vitest';
import { createTestDatabase, dialects } from '../../test/databases.js';
import { addProofFixture } from '../../test/proof-fixtures.js';
import { checkWithPromtool, promtoolAvailable, readFamilies, readSamples, sampleValue, type Sample } from '../../test/prometheus.js';
import { makeAssets, registerNode, startTestServer, useTestServer, type TestServer } from '../../test/server.js';
import type { Config } from '../config.js';
import { createLoop } from '../lib/loop.js';
import { EXPIRY_LOOP } from '../loops.js';

const GIB = 1024 ** 3;
const METRICS_TOKEN = 'metrics-token-for-tests-0123456789abcdef';

describe.each(dialects)('GET /metrics on %s', (dialect) => {
  const suite = useTestServer(dialect);
  let server: TestServer;

  const start = async (overrides: Partial<Config> = {}) => {
    server = await suite.start(overrides);
  };
  const scrape = async (token?: string) => {
    const response = await server.api.get<string>('/metrics', token);
    expect(response.status, JSON.stringify(response.body)).toBe(200);
    expect(response.headers.get('content-type')).toMatch(/^text\/plain; version=0\.0\.4/);
    return response.body;
  };

  /** Three portal assets, one API asset, a node that beat and holds one allocation, one expiry pass. */
  const makeActivity = async () => {
    const portal = 'https://portal.example.org';
    await server.api.post('/assets', makeAssets(3, { source: portal }, 'portal'), server.adminToken);
    await server.api.post('/assets', makeAssets(1, {}, 'direct'), server.adminToken);
    const node = await registerNode(server, 'metrics-node');
    const beat = await server.api.post(`/api/nodes/${node.id}/heartbeat`, { free_bytes: 100 * GIB }, node.token);
    expect(beat.status).toBe(200);
    const allocated = await server.api.post('/allocate', { free_space_gb: 10, node_id: 'metrics-node', max_assets: 1 }, node.token);
    expect(allocated.body).toHaveLength(1);
    expect((await server.api.get('/no/such/route/42')).status).toBe(404);
    expect(await server.loops.find((loop) => loop.name === EXPIRY_LOOP)!.runOnce()).toBe(true);
    return { node, portal };
  };

  it.skipIf(!promtoolAvailable)('is valid Prometheus text format: promtool parses it and finds nothing wrong with our families', async () => {
    await start();
    await makeActivity();
    await addProofFixture(server);
    const { exitCode, problems } = await checkWithPromtool(await scrape());
    // 3 means parsed with lint warnings: prom-client names three of its default gauges *_total.
    expect(exitCode, problems.join('\n')).not.toBe(1);
    expect(problems.filter((problem) => !/^nodejs_active_\w+_total non-counter metrics/.test(problem))).toEqual([]);
  });

  it('exposes every family, the database figures of this moment and route patterns, never raw URLs', async () => {
    await start();
    const { node, portal } = await makeActivity();
    const text = await scrape();
    const families = readFamilies(text);
    const samples = readSamples(text);

    expect(Object.fromEntries([...families].filter(([name]) => name.startsWith('dispatcher_')))).toEqual({
      dispatcher_http_request_duration_seconds: 'histogram',
      dispatcher_loop_pass_duration_seconds: 'histogram',
      dispatcher_loop_pass_failures_total: 'counter',
      dispatcher_assets: 'gauge',
      dispatcher_allocations: 'gauge',
      dispatcher_nodes: 'gauge',
      dispatcher_assets_by_source: 'gauge',
      dispatcher_rescued_copy_bytes: 'gauge',
      dispatcher_rescued_distinct_bytes: 'gauge',
      dispatcher_copies: 'gauge',
      dispatcher_claimed_copy_bytes: 'gauge',
      dispatcher_audits_last_day: 'gauge',
      dispatcher_audits_unfinished: 'gauge',
      dispatcher_database_connections: 'gauge',
      dispatcher_database_connections_max: 'gauge',
      // PostgreSQL's pool has idle connections and waiting queries; SQLite's one connection has neither.
      ...(dialect === 'postgres' ? { dispatcher_database_connections_idle: 'gauge', dispatcher_database_clients_waiting: 'gauge' } : {}),
    });

    expect(byLabel(samples, 'dispatcher_assets', 'state')).toEqual({ pending: 4, rescued: 0, gone: 0, unreachable: 0, suspect: 0 });
    expect(byLabel(samples, 'dispatcher_allocations', 'state')).toEqual({
      active: 1,
      completed: 0,
      released: 0,
      expired: 0,
      reclaimed: 0,
      failed: 0,
      superseded: 0,
      lost: 0,
    });
    expect(byLabel(samples, 'dispatcher_nodes', 'status')).toEqual({ unknown: 0, alive: 1, suspect: 0, dead: 0, draining: 0, offline: 0 });
    expect(byLabel(samples, 'dispatcher_assets_by_source', 'source')).toEqual({ [portal]: 3, '(none)': 1 });

    const requests = (labels: Record<string, string>) => sampleValue(samples, 'dispatcher_http_request_duration_seconds_count', labels);
    expect(requests({ method: 'POST', route: '/api/nodes/:id/heartbeat', status_code: '200' })).toBe(1);
    expect(requests({ method: 'POST', route: '/assets', status_code: '200' })).toBe(2);
    expect(requests({ method: 'POST', route: '/allocate', status_code: '200' })).toBe(1);
    expect(requests({ method: 'GET', route: 'unmatched', status_code: '404' })).toBe(1);
    const routes = new Set(samples.filter((sample) => sample.name.startsWith('dispatcher_http_request_duration_seconds')).map((sample) => sample.labels.route));
    expect([...routes].filter((route) => route?.includes(String(node.id)) || route?.includes('42'))).toEqual([]);
    expect(sampleValue(samples, 'dispatcher_http_request_duration_seconds_bucket', { route: '/api/nodes/:id/heartbeat', le: '+Inf' })).toBe(1);

    expect(sampleValue(samples, 'dispatcher_loop_pass_duration_seconds_count', { loop: EXPIRY_LOOP })).toBe(1);
    expect(sampleValue(samples, 'dispatcher_loop_pass_failures_total', { loop: EXPIRY_LOOP })).toBe(0);

    const pool = (name: string) => sampleValue(samples, `dispatcher_database_${name}`);
    if (dialect === 'sqlite') {
      expect([pool('connections'), pool('connections_max')]).toEqual([1, 1]);
    } else {
      expect(pool('connections_max')).toBe(server.config.databasePoolSize);
      expect(pool('connections')).toBeLessThanOrEqual(server.config.databasePoolSize);
      expect(pool('connections_idle')).toBeLessThanOrEqual(pool('connections')!);
      expect(pool('clients_waiting')).toBeGreaterThanOrEqual(0);
    }

    // Process metrics from prom-client's default collectors, on this server's own registry.
    expect(sampleValue(samples, 'process_cpu_user_seconds_total')).toBeGreaterThan(0);
    expect(sampleValue(samples, 'nodejs_heap_size_used_bytes')).toBeGreaterThan(0);
    expect(sampleValue(samples, 'nodejs_version_info', { version: process.version })).toBe(1);
  });

  it("exports copies by proof state, claimed against proven bytes, the last 24 h's verdicts by kind and the audit backlog", async () => {
    await start();
    const empty = readSamples(await scrape());
    // Every series exists before any audit, at 0, so an alert on it can fire from the first failure.
    expect(empty.filter((sample) => sample.name === 'dispatcher_audits_last_day')).toHaveLength(2 * 3);
    expect(empty.filter((sample) => sample.name === 'dispatcher_audits_unfinished')).toHaveLength(2 * 3);
    expect(byLabel(empty, 'dispatcher_copies', 'proof')).toEqual({ pending: 0, unproven: 0, proven: 0, suspect: 0, vetting: 0 });

    const fixture = await addProofFixture(server);
    const samples = readSamples(await scrape());
    expect(byLabel(samples, 'dispatcher_copies', 'proof')).toEqual({ pending: 1, unproven: 1, proven: 1, suspect: 1, vetting: 0 });
    expect(sampleValue(samples, 'dispatcher_claimed_copy_bytes')).toBe(fixture.bytes.claimed);
    expect(sampleValue(samples, 'dispatcher_rescued_copy_bytes')).toBe(fixture.bytes.proven);
    const byKind = (name: string, label: string) => {
      const found: Record<string, Record<string, number>> = {};
      for (const sample of samples.filter((each) => each.name === name))
        (found[sample.labels.kind as string] ??= {})[sample.labels[label] as string] = sample.value;
      return found;
    };
    expect(byKind('dispatcher_audits_last_day', 'verdict')).toEqual(fixture.lastDay);
    expect(byKind('dispatcher_audits_unfinished', 'state')).toEqual(fixture.unfinished);
    // The window is the server's clock: a day later, none of those verdicts is recent.
    server.clock.advance(86_400_000);
    const later = readSamples(await scrape()).filter((sample) => sample.name === 'dispatcher_audits_last_day');
    expect(later.map((sample) => sample.value)).toEqual([0, 0, 0, 0, 0, 0]);
  });

  it('follows the database between scrapes: states move, nothing is cached', async () => {
    await start();
    const { node } = await makeActivity();
    const [allocation] = (await server.api.get('/allocations?node=metrics-node', server.adminToken)).body.items;
    const released = await server.api.post('/release', { asset_id: allocation.asset_id, node_id: 'metrics-node' }, node.token);
    expect(released.status).toBe(200);
    await server.api.post('/assets', makeAssets(2, {}, 'late'), server.adminToken);

    const samples = readSamples(await scrape());
    expect(byLabel(samples, 'dispatcher_allocations', 'state')).toMatchObject({ active: 0, released: 1 });
    expect(byLabel(samples, 'dispatcher_assets', 'state')).toMatchObject({ pending: 6 });
    expect(byLabel(samples, 'dispatcher_assets_by_source', 'source')).toMatchObject({ '(none)': 3 });
  });

  it('counts loop passes and failed passes by loop name', async () => {
    await start();
    const failing = createLoop(
      {
        name: 'metrics-test-failing',
        intervalMs: 60_000,
        tick: async () => {
          throw new Error('this pass fails on purpose');
        },
      },
      { db: server.ctx.db, clock: server.clock, logger: pino({ level: 'silent' }), observer: server.metrics.loopObserver },
    );
    expect(await failing.runOnce()).toBe(true);
    server.clock.advance(60_000);
    expect(await failing.runOnce()).toBe(true);
    // Within the interval another pass is not claimed, so not counted.
    expect(await failing.runOnce()).toBe(false);

    const samples = readSamples(await scrape());
    expect(sampleValue(samples, 'dispatcher_loop_pass_failures_total', { loop: 'metrics-test-failing' })).toBe(2);
    expect(sampleValue(samples, 'dispatcher_loop_pass_duration_seconds_count', { loop: 'metrics-test-failing' })).toBe(2);
    expect(sampleValue(samples, 'dispatcher_loop_pass_failures_total', { loop: EXPIRY_LOOP })).toBeUndefined();
  });

  it('is open without METRICS_TOKEN; with it, asks for that token or an admin token', async () => {
    await start({ metricsToken: METRICS_TOKEN });
    const node = await registerNode(server, 'curious-node');

    const anonymous = await server.api.get('/metrics');
    expect(anonymous.status).toBe(401);
    expect(anonymous.body).toMatchObject({ code: 'UNAUTHENTICATED' });
    expect((await server.api.get('/metrics', 'not-the-metrics-token')).body).toMatchObject({ code: 'UNAUTHENTICATED' });
    expect((await server.api.get('/metrics', node.token)).body).toMatchObject({ code: 'FORBIDDEN' });
    expect(await scrape(METRICS_TOKEN)).toContain('# TYPE dispatcher_assets gauge');
    expect(await scrape(server.adminToken)).toContain('# TYPE dispatcher_assets gauge');
  });

  it('keeps the series of two servers in one process apart', async () => {
    await start();
    const other = await createTestDatabase(dialect);
    const second = await startTestServer(other);
    try {
      await second.api.post('/assets', makeAssets(5), second.adminToken);
      expect(byLabel(readSamples(await scrape()), 'dispatcher_assets', 'state')).toMatchObject({ pending: 0 });
      const secondSamples = readSamples((await second.api.get<string>('/metrics')).body);
      expect(byLabel(secondSamples, 'dispatcher_assets', 'state')).toMatchObject({ pending: 5 });
      expect(sampleValue(secondSamples, 'dispatcher_http_request_duration_seconds_count', { route: '/assets', method: 'POST' })).toBe(1);
    } finally {
      await second.stop();
      await other.drop();
    }
  });
});

/** One gauge's samples as {label value: sample value}. */
function byLabel(samples: Sample[], name: string, label: string): Record<string, number> {
  return Object.fromEntries(samples.filter((sample) => sample.name === name).map((sample) => [sample.labels[label], sample.value]));
}
