import { collectDefaultMetrics, Counter, Gauge, Histogram, Registry } from 'prom-client';
import type { AllocationState } from '../allocations/allocations.table.js';
import { ASSET_STATES } from '../assets/assets.table.js';
import type { Clock } from '../clock.js';
import type { Db, PoolUsage } from '../db/database.js';
import type { LoopObserver } from '../lib/loop.js';
import { NODE_STATUSES } from '../nodes/nodes.table.js';
import { readCopyBytes, readDistinctBytes } from '../status/status.service.js';
import { countedGauge, listed, queriedGauge } from './gauges.js';
import { countAllocationsByState, countAssetsBySource, countAssetsByState, countNodesByStatus, type GroupCount } from './metrics.repository.js';
import { registerProofGauges } from './proof-metrics.js';

/** One server's metrics: its own registry, so several servers in one process never share series. */
export interface Metrics {
  registry: Registry;
  observeRequest(request: { method: string; route: string; statusCode: number; seconds: number }): void;
  loopObserver: LoopObserver;
}

export interface MetricSources {
  db: Db;
  /** The server's clock: the window of the recent audit verdicts. */
  clock: Clock;
  poolUsage(): PoolUsage;
}

const assetStates = listed(ASSET_STATES);
const allocationStates: Record<AllocationState, true> = {
  active: true,
  completed: true,
  released: true,
  expired: true,
  reclaimed: true,
  failed: true,
  superseded: true,
  lost: true,
};
const nodeStatuses = listed(NODE_STATUSES);

/** Sources beyond this many (by asset count) are summed under "(other)", to bound the series. */
const MAX_SOURCES = 50;

// Loop passes run from milliseconds (an indexed UPDATE) to minutes (priority aging of a large catalog).
const LOOP_BUCKETS = [0.005, 0.025, 0.1, 0.5, 1, 5, 15, 60, 300];

/**
 * Builds the registry: process metrics, request latency, loop passes, and gauges that query the
 * database when scraped (a scrape costs a few GROUP BY queries and nothing between scrapes).
 */
export function createMetrics(sources: MetricSources): Metrics {
  const registry = new Registry();
  collectDefaultMetrics({ register: registry });
  const registers = [registry];

  const requestDuration = new Histogram({
    name: 'dispatcher_http_request_duration_seconds',
    help: 'HTTP requests by method, route pattern and status code, and how long they took.',
    labelNames: ['method', 'route', 'status_code'] as const,
    registers,
  });
  const loopDuration = new Histogram({
    name: 'dispatcher_loop_pass_duration_seconds',
    help: 'Background loop passes run by this instance, and how long each took.',
    labelNames: ['loop'] as const,
    buckets: LOOP_BUCKETS,
    registers,
  });
  const loopFailures = new Counter({
    name: 'dispatcher_loop_pass_failures_total',
    help: 'Background loop passes run by this instance that failed.',
    labelNames: ['loop'] as const,
    registers,
  });

  registerCountGauges(registers, sources.db);
  registerProofGauges(registers, sources.db, sources.clock);
  registerPoolGauges(registers, sources.poolUsage);

  return {
    registry,
    observeRequest({ method, route, statusCode, seconds }) {
      requestDuration.observe({ method, route, status_code: statusCode }, seconds);
    },
    loopObserver: {
      passFinished(loop, durationSeconds, failed) {
        loopDuration.observe({ loop }, durationSeconds);
        // inc(0) makes the series exist (at 0) once a loop has run, so rate() works from its first failure.
        loopFailures.inc({ loop }, failed ? 1 : 0);
      },
    },
  };
}

/** The database's figures, counted when scraped. */
function registerCountGauges(registers: Registry[], db: Db): void {
  countedGauge(registers, 'dispatcher_assets', 'Assets by state.', 'state', assetStates, () => countAssetsByState(db));
  countedGauge(registers, 'dispatcher_allocations', 'Allocations by state.', 'state', allocationStates, () => countAllocationsByState(db));
  countedGauge(registers, 'dispatcher_nodes', 'Nodes by status.', 'status', nodeStatuses, () => countNodesByStatus(db));
  countedGauge(
    registers,
    'dispatcher_assets_by_source',
    'Assets per import source (the portal URL or file; "(none)" when not recorded): import progress.',
    'source',
    {},
    async () => capGroups(await countAssetsBySource(db)),
  );
  // The two measures of /status: bytes_rescued and bytes_rescued_distinct.
  queriedGauge(registers, 'dispatcher_rescued_copy_bytes', 'Bytes of every verified copy: an asset with three copies counts three times.', () =>
    readCopyBytes(db),
  );
  queriedGauge(registers, 'dispatcher_rescued_distinct_bytes', 'Bytes of the assets with at least one verified copy, each counted once (its size).', () =>
    readDistinctBytes(db),
  );
}

function capGroups(rows: GroupCount[]): GroupCount[] {
  const labelled = rows.map((row) => ({ key: row.key === '' ? '(none)' : row.key, count: row.count })).sort((a, b) => b.count - a.count);
  if (labelled.length <= MAX_SOURCES) return labelled;
  const other = labelled.slice(MAX_SOURCES - 1).reduce((sum, row) => sum + row.count, 0);
  return [...labelled.slice(0, MAX_SOURCES - 1), { key: '(other)', count: other }];
}

function registerPoolGauges(registers: Registry[], poolUsage: () => PoolUsage): void {
  const figure = (name: string, help: string, read: (usage: PoolUsage) => number | undefined) => {
    // SQLite has no idle or waiting figure: no family rather than a made-up value.
    if (read(poolUsage()) === undefined) return;
    new Gauge({
      name,
      help,
      registers,
      collect() {
        this.set(read(poolUsage()) ?? 0);
      },
    });
  };
  figure('dispatcher_database_connections', 'Open database connections (SQLite: always 1).', (usage) => usage.open);
  figure('dispatcher_database_connections_max', 'Most database connections this instance opens (DATABASE_POOL_SIZE; SQLite: 1).', (usage) => usage.max);
  figure('dispatcher_database_connections_idle', 'Open PostgreSQL connections not running a query.', (usage) => usage.idle);
  figure('dispatcher_database_clients_waiting', 'Queries waiting for a free PostgreSQL connection.', (usage) => usage.waiting);
}
