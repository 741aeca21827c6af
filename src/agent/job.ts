import { setMaxListeners } from 'node:events';
import fs from 'node:fs/promises';
import { cooldownAfter } from '../allocations/failure-policy.js';
import { backoffDelay, pause } from '../lib/backoff.js';
import type { AgentConfig } from './agent.config.js';
import { withBackoff, type Client } from './client.js';
import { download, type DownloadOutcome } from './download.js';
import { originOf, releaseFor, restraintFor, type Origin, type OriginFetches, type Release } from './download-origin.js';
import type { Identity } from './identity.js';
import type { Progress } from './progress.js';
import type { RateLimiter } from './rate-limiter.js';
import { retryOptions } from './registration.js';
import { fileNameFor, type Store } from './storage.js';

export interface Task {
  id: string;
  name: string;
  /** The asset's source: where it is fetched from unless `restoreUrl` is set, and what names its file. */
  url: string;
  /** Set when the control plane repairs the asset from its copies: fetched from there (relative to it), never from `url`. */
  restoreUrl: string | null;
  sizeBytes: number | null;
  sha256: string | null;
  /** What the control plane set aside for it: the size, or its estimate when the size is unknown. */
  reservedBytes: number;
}

export interface Job {
  task: Task;
  bytesDone: number;
  controller: AbortController;
}

/** Bytes received by every download since the agent started, finished ones included: what the heartbeat's rate is measured on. */
export interface Received {
  bytes: number;
}

/** Why a job was stopped from outside: the agent stops, or the allocation ended on the control plane. */
export const ENDED_ELSEWHERE = 'ended elsewhere';

export interface JobContext {
  config: AgentConfig;
  client: Client;
  identity: Identity;
  progress: Progress;
  store: Store;
  fetches: OriginFetches;
  limiter: RateLimiter | undefined;
  restraints: Restraints;
  received: Received;
  freeBytes(): Promise<number>;
  signal: AbortSignal;
}

/** Calls made while stopping wait this long at most: an unreachable control plane must not hold the stop up. */
export const STOPPING_TIMEOUT_MS = 5_000;

/**
 * What this agent keeps to itself so that it never loops on an asset or a source, whatever the
 * control plane does: assets it failed from an origin (not taken from there again before their
 * time, doubling per failure; a source that failed does not keep a repair from copies away) and
 * hosts that asked to be left alone.
 */
export interface Restraints {
  /** `host`: the origin's, as Origin names it. */
  deferredUntil(assetId: string, host: string): number | undefined;
  defer(assetId: string, host: string): void;
  pausedUntil(host: string): number | undefined;
  pause(host: string, until: number): void;
}

export function createRestraints(firstDeferMs: number, now: () => number = Date.now): Restraints {
  const deferred = new Map<string, { failures: number; until: number }>();
  const paused = new Map<string, number>();
  const live = (until: number | undefined) => (until !== undefined && until > now() ? until : undefined);
  const keyOf = (assetId: string, host: string) => JSON.stringify([assetId, host]);
  return {
    deferredUntil: (assetId, host) => live(deferred.get(keyOf(assetId, host))?.until),
    defer(assetId, host) {
      const key = keyOf(assetId, host);
      const failures = (deferred.get(key)?.failures ?? 0) + 1;
      deferred.set(key, {
        failures,
        until: now() + cooldownAfter(failures, { cooldownMs: firstDeferMs, cooldownMaxMs: firstDeferMs * DEFER_MAX_DOUBLINGS }),
      });
    },
    pausedUntil: (host) => live(paused.get(host)),
    pause: (host, until) => void paused.set(host, Math.max(until, paused.get(host) ?? 0)),
  };
}

/** An agent keeps a failed asset to itself for this long at first (the control plane's default cooldown), doubling. */
export const FIRST_DEFER_MS = 600_000;
const DEFER_MAX_DOUBLINGS = 2 ** 20;

/**
 * One asset: a copy already kept is reported again as it is; otherwise download it from its origin
 * (its source, or the control plane's copies for a repair), resuming and retrying what is worth
 * it, keep it, report it; or give the asset back with the cause.
 */
export async function runJob(job: Job, context: JobContext): Promise<void> {
  const { config, restraints } = context;
  const { task } = job;
  const stop = AbortSignal.any([job.controller.signal, context.signal]);
  // Each attempt's request, stream and waits listen on this signal; attempts are bounded by AGENT_RETRIES.
  setMaxListeners(8 * config.retries + 16, stop);
  const origin = originOf(task, config.apiEndpoint, context.fetches);
  const deferred = restraints.deferredUntil(task.id, origin.host);
  if (deferred !== undefined) {
    return giveBack(job, context, {
      cause: 'other',
      reason: `this node failed it from ${origin.name} recently; not before ${new Date(deferred).toISOString()}`,
    });
  }
  const paused = pausedRelease(origin, restraints);
  if (paused) return giveBack(job, context, paused);
  if (await reportKeptCopy(job, context)) return;

  const partial = context.store.partialPath(task.id);
  let outcome: DownloadOutcome;
  try {
    outcome = await downloadWithRetries(job, context, origin, partial, stop);
  } catch (error) {
    if (job.controller.signal.reason === ENDED_ELSEWHERE) return dropEnded(job, context, partial);
    if (stop.aborted) return giveBack(job, context, { cause: 'stopping', reason: 'agent stopping' }, STOPPING_TIMEOUT_MS);
    if (error instanceof PausedMeanwhile) return giveBack(job, context, error.release);
    restraints.defer(task.id, origin.host);
    return giveBack(job, context, { cause: 'other', reason: `local error: ${(error as Error).message}` });
  }
  if (outcome.ok) return keepAndReport(job, context, origin, outcome);
  const release = releaseFor(outcome, origin, config.retries);
  const restraint = restraintFor(release);
  if (restraint === 'pause') restraints.pause(origin.host, Date.now() + (release.retry_after_seconds ?? 0) * 1000);
  if (restraint === 'defer') restraints.defer(task.id, origin.host);
  return giveBack(job, context, release);
}

/** The origin's host was told to wait (by its own answer, or the heartbeat for every node): nobody knocks before its time. */
function pausedRelease(origin: Origin, restraints: Restraints): Release | undefined {
  const paused = restraints.pausedUntil(origin.host);
  if (paused === undefined) return undefined;
  return { cause: 'source_busy', reason: `${origin.host} asked to wait`, retry_after_seconds: Math.ceil((paused - Date.now()) / 1000) };
}

/** Thrown between attempts when the origin's host was paused meanwhile: the asset goes back as busy. */
class PausedMeanwhile extends Error {
  constructor(readonly release: Release) {
    super(release.reason);
  }
}

/** Up to AGENT_RETRIES attempts with backoff, each resuming the partial; throws when `stop` aborts. */
async function downloadWithRetries(job: Job, context: JobContext, origin: Origin, partial: string, stop: AbortSignal): Promise<DownloadOutcome> {
  const { config, progress } = context;
  const { task } = job;
  for (let attempt = 1; ; attempt += 1) {
    const outcome = await download({
      url: origin.url,
      fetch: origin.fetch,
      answerer: origin.fromCopies ? 'the control plane' : 'source',
      partial,
      expectedBytes: task.sizeBytes,
      expectedSha256: task.sha256,
      maxBytes: task.sizeBytes ?? task.reservedBytes,
      reserveBytes: config.reserveBytes,
      freeBytes: context.freeBytes,
      signal: stop,
      rateLimiter: context.limiter,
      onProgress: (bytes) => {
        context.received.bytes += Math.max(0, bytes - job.bytesDone);
        job.bytesDone = bytes;
      },
    });
    if (outcome.ok || !outcome.retryable || outcome.kind === 'source_busy' || attempt >= config.retries) return outcome;
    progress.log(`${task.id}: ${outcome.reason} (attempt ${attempt} of ${config.retries})`);
    await pause(backoffDelay(attempt, 1000, 30_000), stop);
    stop.throwIfAborted();
    // Another node may have been told to wait meanwhile (heartbeat): a retry must not knock.
    const paused = pausedRelease(origin, context.restraints);
    if (paused) throw new PausedMeanwhile(paused);
  }
}

/** A copy of this asset kept from before (a superseded one given again, say) that still checks out is reported as it is. */
async function reportKeptCopy(job: Job, context: JobContext): Promise<boolean> {
  const kept = context.store.copyOf(job.task.id);
  if (!kept) return false;
  const fits =
    (job.task.sha256 === null || job.task.sha256.toLowerCase() === kept.sha256) && (job.task.sizeBytes === null || job.task.sizeBytes === kept.bytes);
  const intact = fits && (await context.store.verify(job.task.id));
  // Verified, the copy has its Merkle root recorded, also one kept from before roots were.
  const proved = intact ? context.store.copyOf(job.task.id) : undefined;
  if (proved?.merkleRoot === undefined) return false;
  context.progress.log(`${job.task.id}: a verified copy is already kept here`);
  await report(job, context, { sha256: proved.sha256, bytes: proved.bytes, merkleRoot: proved.merkleRoot });
  return true;
}

async function keepAndReport(job: Job, context: JobContext, origin: Origin, outcome: Extract<DownloadOutcome, { ok: true }>): Promise<void> {
  const { task } = job;
  try {
    await context.store.commit({
      assetId: task.id,
      fileName: fileNameFor(task.name, task.url),
      partial: outcome.partial,
      sha256: outcome.sha256,
      bytes: outcome.bytes,
      merkleRoot: outcome.merkleRoot,
    });
  } catch (error) {
    context.restraints.defer(task.id, origin.host);
    return giveBack(job, context, { cause: 'other', reason: `could not keep the copy: ${(error as Error).message}` });
  }
  await report(job, context, outcome);
}

async function report(job: Job, context: JobContext, copy: { sha256: string; bytes: number; merkleRoot: string }): Promise<void> {
  const { task } = job;
  const body = { asset_id: task.id, node_id: context.identity.name, sha256: copy.sha256, bytes: copy.bytes, merkle_root: copy.merkleRoot };
  try {
    // A control plane that is busy or restarting (5xx, 429, no answer) is asked again: the copy is good.
    const result = await withBackoff(() => context.client.complete(body), retryOptions(context.progress, context.signal));
    context.progress.finished(job, `done, sha256 ${copy.sha256.slice(0, 12)}…, ${standingOf(result)} (${result.copies}/${result.replicas_target} copies)`);
  } catch (error) {
    if (context.signal.aborted) {
      context.progress.finished(job, 'stopped before the copy was reported; it is kept and reported when the asset is given again');
      return;
    }
    // The control plane refused the copy (checksum or size, or no longer held): it is not a copy it counts.
    await context.store.remove(task.id);
    context.progress.finished(job, `refused: ${(error as Error).message}`);
  }
}

async function giveBack(job: Job, context: JobContext, why: Release, timeoutMs?: number): Promise<void> {
  const body = { asset_id: job.task.id, node_id: context.identity.name, ...why, reason: why.reason.slice(0, 500) };
  await context.client
    .release(body, timeoutMs)
    .catch((error: unknown) => context.progress.log(`could not give back ${job.task.id}: ${(error as Error).message}`));
  context.progress.finished(job, `given back (${why.cause}): ${why.reason}`);
}

/** The allocation is no longer this node's: nothing to give back, and its partial data goes. */
async function dropEnded(job: Job, context: JobContext, partial: string): Promise<void> {
  await Promise.all([fs.rm(partial, { force: true }), fs.rm(`${partial}.json`, { force: true })]);
  context.progress.finished(job, 'dropped: its allocation ended on the control plane (expired or reclaimed)');
}

/** Where the reported copy stands: counted, waiting for its spot check or its node's vetting, or for copies to agree. */
function standingOf(result: { verified: boolean; proof?: string }): string {
  if (result.verified) return 'verified';
  if (result.proof === 'pending') return 'counts once its spot check passes';
  if (result.proof === 'vetting') return 'counts once this node is vetted';
  return 'awaiting quorum';
}
