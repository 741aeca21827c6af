import { performance } from 'node:perf_hooks';
import { setTimeout as sleep } from 'node:timers/promises';
import { Client } from 'undici';
import type { BenchNode } from './api.js';
import { startCpuWindow, type CpuUsage } from './procfs.js';

export interface LoadOptions {
  baseUrl: string;
  nodes: BenchNode[];
  warmupSeconds: number;
  durationSeconds: number;
  maxAssets: number;
  serverPid: number;
  /** The bench's PostgreSQL database name, to measure its backends' CPU; undefined on SQLite. */
  postgresDatabase?: string;
}

export interface LatencySummary {
  p50: number;
  p90: number;
  p99: number;
  max: number;
  mean: number;
}

export interface LoadResult {
  clients: number;
  durationSeconds: number;
  requests: number;
  requestsPerSecond: number;
  /** Requests completed in each whole second of the measured window (the last may be partial). */
  requestsPerSecondOverTime: number[];
  assetsGranted: number;
  /** Assets granted over the whole run (warm-up included), checked against the database afterwards. */
  grantedTotal: number;
  allocationsPerSecond: number;
  /** Milliseconds, over the requests that completed inside the measured window. */
  latencyMs: LatencySummary;
  /** Every status seen in the window (HTTP codes, or a network error code). */
  statuses: Record<string, number>;
  errors: number;
  /** The first response body of each non-200 status, to tell a 404 "no assets" from a 500. */
  errorSamples: Record<string, string>;
  cpu: CpuUsage;
}

/** What the clients record; only requests that complete inside [start, end] count. */
class Recorder {
  readonly latencies: number[] = [];
  readonly statuses = new Map<string, number>();
  readonly errorSamples = new Map<string, string>();
  assets = 0;
  /** Assets granted by every 200, warm-up and stragglers included: what the database must hold. */
  grantedTotal = 0;
  /** Requests completed in each second of the window: shows whether throughput decays as the run goes on. */
  readonly perSecond: number[];

  constructor(
    readonly start: number,
    readonly end: number,
  ) {
    this.perSecond = new Array<number>(Math.ceil((end - start) / 1000)).fill(0);
  }

  record(startedAt: number, finishedAt: number, status: string, assets: number, errorBody?: string): void {
    if (errorBody !== undefined && !this.errorSamples.has(status)) this.errorSamples.set(status, errorBody.slice(0, 300));
    this.grantedTotal += assets;
    if (finishedAt < this.start || finishedAt > this.end) return;
    this.latencies.push(finishedAt - startedAt);
    const second = Math.min(this.perSecond.length - 1, Math.floor((finishedAt - this.start) / 1000));
    this.perSecond[second] = (this.perSecond[second] ?? 0) + 1;
    this.statuses.set(status, (this.statuses.get(status) ?? 0) + 1);
    this.assets += assets;
  }
}

/** One node: a sequential loop over one keep-alive connection, until no new request may start. */
async function runClient(options: LoadOptions, node: BenchNode, recorder: Recorder): Promise<void> {
  const client = new Client(options.baseUrl, { keepAliveTimeout: 60_000, pipelining: 1 });
  const body = JSON.stringify({ free_space_gb: 1_000_000, node_id: node.name, max_assets: options.maxAssets });
  const headers = { 'content-type': 'application/json', authorization: `Bearer ${node.token}` };
  try {
    while (performance.now() < recorder.end) {
      const startedAt = performance.now();
      try {
        const response = await client.request({ method: 'POST', path: '/allocate', headers, body });
        if (response.statusCode === 200) {
          const granted = (await response.body.json()) as unknown[];
          recorder.record(startedAt, performance.now(), '200', granted.length);
        } else {
          const text = await response.body.text();
          recorder.record(startedAt, performance.now(), String(response.statusCode), 0, text);
        }
      } catch (error) {
        const code = (error as { code?: string }).code ?? 'network';
        recorder.record(startedAt, performance.now(), code, 0, (error as Error).message);
        // A refused or reset connection would otherwise spin at full speed.
        await sleep(10);
      }
    }
  } finally {
    await client.close().catch(() => client.destroy());
  }
}

export function summarizeLatencies(latencies: number[]): LatencySummary {
  if (latencies.length === 0) return { p50: 0, p90: 0, p99: 0, max: 0, mean: 0 };
  const sorted = Float64Array.from(latencies).sort();
  const at = (quantile: number) => sorted[Math.min(sorted.length - 1, Math.ceil(quantile * sorted.length) - 1)] as number;
  const sum = sorted.reduce((total, value) => total + value, 0);
  return { p50: at(0.5), p90: at(0.9), p99: at(0.99), max: sorted[sorted.length - 1] as number, mean: sum / sorted.length };
}

/**
 * Runs one client per node for warm-up + duration seconds. CPU use is measured over the
 * measured window only, so start-up and warm-up do not dilute it.
 */
export async function runLoad(options: LoadOptions): Promise<LoadResult> {
  const start = performance.now() + options.warmupSeconds * 1000;
  const recorder = new Recorder(start, start + options.durationSeconds * 1000);
  let stopCpu: (() => CpuUsage) | undefined;
  let cpu: CpuUsage | undefined;
  const cpuStart = setTimeout(() => {
    stopCpu = startCpuWindow(options.serverPid, options.postgresDatabase);
  }, options.warmupSeconds * 1000);
  const cpuEnd = setTimeout(() => {
    cpu = stopCpu?.();
  }, (options.warmupSeconds + options.durationSeconds) * 1000);
  try {
    await Promise.all(options.nodes.map((node) => runClient(options, node, recorder)));
  } finally {
    clearTimeout(cpuStart);
    clearTimeout(cpuEnd);
  }
  cpu ??= stopCpu?.() ?? { serverPercent: 0, loadGeneratorPercent: 0, postgresPercent: 0, machinePercent: 0 };

  const statuses = Object.fromEntries([...recorder.statuses.entries()].sort());
  const requests = recorder.latencies.length;
  const errors = requests - (recorder.statuses.get('200') ?? 0);
  return {
    clients: options.nodes.length,
    durationSeconds: options.durationSeconds,
    requests,
    requestsPerSecond: requests / options.durationSeconds,
    requestsPerSecondOverTime: recorder.perSecond,
    assetsGranted: recorder.assets,
    grantedTotal: recorder.grantedTotal,
    allocationsPerSecond: recorder.assets / options.durationSeconds,
    latencyMs: summarizeLatencies(recorder.latencies),
    statuses,
    errors,
    errorSamples: Object.fromEntries(recorder.errorSamples),
    cpu,
  };
}
