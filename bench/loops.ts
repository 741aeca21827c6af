import { performance } from 'node:perf_hooks';
import { setTimeout as sleep } from 'node:timers/promises';
import { startCpuWindow, type CpuUsage } from './procfs.js';

/**
 * The one load generator every suite uses: C closed loops, each waiting for its call to finish
 * before starting the next, warm-up first, then a measured window. A call is an HTTP request, a
 * claim transaction or a queue fetch; what it does is the suite's business.
 */
export interface Outcome {
  /** Whether the call did its job (HTTP 200, a row claimed, a job fetched and completed). */
  ok: boolean;
  /** HTTP status, `ok`, `empty` (nothing left to claim) or an error code. */
  status: string;
  /** Assets or jobs the call handed out. */
  items: number;
  /** The body or message of a failed call, kept once per status. */
  errorBody?: string;
}

export type Loop = () => Promise<Outcome>;

export interface WindowOptions {
  warmupSeconds: number;
  durationSeconds: number;
  /** Server processes whose CPU is measured; empty when the work runs in this process. */
  serverPids: number[];
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

export interface LoopResult {
  /** Concurrent loops (clients, connections, workers). */
  concurrency: number;
  durationSeconds: number;
  /** Calls that completed inside the measured window, whatever their outcome. */
  calls: number;
  callsPerSecond: number;
  /** Calls that did their job, per second: the figure the headline ratios use. */
  okPerSecond: number;
  /** Calls completed in each whole second of the window (the last may be partial). */
  callsPerSecondOverTime: number[];
  items: number;
  itemsPerSecond: number;
  /** Items handed out over the whole run, warm-up and stragglers included: what the database must hold. */
  itemsTotal: number;
  /** Milliseconds from just before a call starts to its end; undefined when calls are not timed one by one. */
  latencyMs?: LatencySummary;
  /** Every status seen in the window. */
  statuses: Record<string, number>;
  /** calls − ok calls. */
  errors: number;
  errorSamples: Record<string, string>;
  cpu: CpuUsage;
}

const NO_CPU: CpuUsage = { serverPercent: 0, loadGeneratorPercent: 0, postgresPercent: 0, machinePercent: 0 };

export function summarizeLatencies(latencies: number[]): LatencySummary {
  if (latencies.length === 0) return { p50: 0, p90: 0, p99: 0, max: 0, mean: 0 };
  const sorted = Float64Array.from(latencies).sort();
  const at = (quantile: number) => sorted[Math.min(sorted.length - 1, Math.ceil(quantile * sorted.length) - 1)] as number;
  const sum = sorted.reduce((total, value) => total + value, 0);
  return { p50: at(0.5), p90: at(0.9), p99: at(0.99), max: sorted[sorted.length - 1] as number, mean: sum / sorted.length };
}

/** Warm-up then a measured window; only calls that complete inside [start, end] count. */
export class MeasuredWindow {
  readonly start: number;
  readonly end: number;
  private readonly latencies: number[] = [];
  private readonly statuses = new Map<string, number>();
  private readonly errorSamples = new Map<string, string>();
  private readonly perSecond: number[];
  private calls = 0;
  private ok = 0;
  private items = 0;
  private itemsTotal = 0;
  private timed = false;
  private stopCpu: (() => CpuUsage) | undefined;
  private cpu: CpuUsage | undefined;
  private readonly timers: NodeJS.Timeout[];

  constructor(private readonly options: WindowOptions) {
    this.start = performance.now() + options.warmupSeconds * 1000;
    this.end = this.start + options.durationSeconds * 1000;
    this.perSecond = new Array<number>(Math.ceil(options.durationSeconds)).fill(0);
    // CPU is measured over the measured window only, so start-up and warm-up do not dilute it.
    this.timers = [
      setTimeout(() => {
        this.stopCpu = startCpuWindow(options.serverPids, options.postgresDatabase);
      }, options.warmupSeconds * 1000),
      setTimeout(
        () => {
          this.cpu = this.stopCpu?.();
        },
        (options.warmupSeconds + options.durationSeconds) * 1000,
      ),
    ];
  }

  /** Whether a new call may still start. */
  get open(): boolean {
    return performance.now() < this.end;
  }

  /** A call timed from `startedAt`; pass `startedAt` undefined when only its completion is known. */
  record(startedAt: number | undefined, finishedAt: number, outcome: Outcome): void {
    if (outcome.errorBody !== undefined && !this.errorSamples.has(outcome.status)) this.errorSamples.set(outcome.status, outcome.errorBody.slice(0, 300));
    this.itemsTotal += outcome.items;
    if (finishedAt < this.start || finishedAt > this.end) return;
    if (startedAt !== undefined) {
      this.latencies.push(finishedAt - startedAt);
      this.timed = true;
    }
    const second = Math.min(this.perSecond.length - 1, Math.floor((finishedAt - this.start) / 1000));
    this.perSecond[second] = (this.perSecond[second] ?? 0) + 1;
    this.statuses.set(outcome.status, (this.statuses.get(outcome.status) ?? 0) + 1);
    this.calls += 1;
    if (outcome.ok) this.ok += 1;
    this.items += outcome.items;
  }

  /** Resolves when the measured window is over (for suites whose calls are not driven by loops here). */
  async untilEnd(): Promise<void> {
    const left = this.end - performance.now();
    if (left > 0) await sleep(left);
  }

  finish(concurrency: number): LoopResult {
    for (const timer of this.timers) clearTimeout(timer);
    const cpu = this.cpu ?? this.stopCpu?.() ?? NO_CPU;
    const seconds = this.options.durationSeconds;
    return {
      concurrency,
      durationSeconds: seconds,
      calls: this.calls,
      callsPerSecond: this.calls / seconds,
      okPerSecond: this.ok / seconds,
      callsPerSecondOverTime: this.perSecond,
      items: this.items,
      itemsPerSecond: this.items / seconds,
      itemsTotal: this.itemsTotal,
      latencyMs: this.timed ? summarizeLatencies(this.latencies) : undefined,
      statuses: Object.fromEntries([...this.statuses.entries()].sort()),
      errors: this.calls - this.ok,
      errorSamples: Object.fromEntries(this.errorSamples),
      cpu,
    };
  }
}

/** Runs every loop until the window closes; a thrown error counts as a failed call with its code. */
export async function runLoops(loops: Loop[], options: WindowOptions): Promise<LoopResult> {
  const window = new MeasuredWindow(options);
  await Promise.all(
    loops.map(async (loop) => {
      while (window.open) {
        const startedAt = performance.now();
        try {
          const outcome = await loop();
          window.record(startedAt, performance.now(), outcome);
        } catch (error) {
          const status = (error as { code?: string }).code ?? 'exception';
          window.record(startedAt, performance.now(), { ok: false, status, items: 0, errorBody: (error as Error).message });
          // A refused connection or a failing query would otherwise spin at full speed.
          await sleep(10);
        }
      }
    }),
  );
  return window.finish(loops.length);
}
