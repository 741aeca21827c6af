import fs from 'node:fs/promises';
import { createRequire } from 'node:module';
import path from 'node:path';
import { pause } from '../lib/backoff.js';
import type { AgentConfig } from './agent.config.js';
import { startAudits } from './audits.js';
import { ApiError, createClient, listAllocations, withBackoff, type AuditItem, type Client, type TransferItem } from './client.js';
import { createControlPlaneFetch } from './download-origin.js';
import type { Identity } from './identity.js';
import { createRestraints, ENDED_ELSEWHERE, FIRST_DEFER_MS, runJob, STOPPING_TIMEOUT_MS, type Job, type JobContext, type Task } from './job.js';
import type { Progress } from './progress.js';
import { createRateLimiter } from './rate-limiter.js';
import { obtainIdentity, retryOptions } from './registration.js';
import { createSafeFetch } from './safe-fetch.js';
import { checkCopies } from './scrub.js';
import { openStore, type Store } from './storage.js';
import { startTransfers } from './transfers.js';

export type { Job, Task } from './job.js';

const GIB = 1024 ** 3;
const { version } = createRequire(import.meta.url)('../../package.json') as { version: string };

/**
 * The node agent: registers (retrying until the control plane answers), takes over a data
 * directory of the old layout, resumes its own unfinished allocations, then heartbeats and takes
 * work while it has room, downloading several assets at once. Beside that it serves transfers of
 * its copies, answers audits of them, checks its copies at start against what the control plane
 * counts, and re-hashes them slowly. On `signal` it takes nothing new, gives back what is
 * unfinished, waits for its transfers, audits and checks to stop, tells the control plane it is
 * going offline, and returns, also when the control plane cannot be reached.
 */
export async function runAgent(config: AgentConfig, progress: Progress, signal: AbortSignal): Promise<void> {
  await fs.mkdir(config.dataDirectory, { recursive: true, mode: 0o700 });
  const store = await openStore(config.dataDirectory, { onWarning: (message) => progress.log(message) });
  const identity = await obtainIdentity(config, progress, signal);
  if (!identity) return;
  const client = createClient(config.apiEndpoint, () => identity.node_token);
  progress.log(`registered as node ${identity.node_id} "${identity.name}" at ${config.apiEndpoint}`);

  const userAgent = `dispatcher-agent/${version} (+${config.contact})`;
  const context: JobContext = {
    config,
    client,
    identity,
    progress,
    store,
    fetches: {
      source: createSafeFetch({ allowPrivate: config.allowPrivate, userAgent }),
      controlPlane: createControlPlaneFetch(config.apiEndpoint, () => identity.node_token, userAgent),
    },
    limiter: config.bandwidthLimit ? createRateLimiter(config.bandwidthLimit) : undefined,
    restraints: createRestraints(FIRST_DEFER_MS),
    received: { bytes: 0 },
    freeBytes: () => freeBytes(config.dataDirectory),
    signal,
  };
  const jobs = new Map<string, Job>();
  let wake: () => void = () => undefined;
  const start = (task: Task) => {
    if (jobs.has(task.id)) return;
    const job: Job = { task, bytesDone: 0, controller: new AbortController() };
    jobs.set(task.id, job);
    progress.started(job);
    void runJob(job, context).finally(() => {
      jobs.delete(task.id);
      wake();
    });
  };

  let resumed: Task[];
  try {
    resumed = await prepareDataDirectory(config.dataDirectory, client, store, identity, progress, signal);
  } catch (error) {
    if (signal.aborted) return;
    throw error;
  }
  for (const task of resumed) start(task);

  // Started once the data directory is prepared: a copy of the old layout must be in the store before anything may call it missing.
  const copyDeps = { client, store, nodeId: identity.node_id, progress, signal };
  const transfers = startTransfers(copyDeps);
  const audits = startAudits(copyDeps);
  const listCompleted = () => withBackoff(() => listAllocations(client, identity.name, 'completed'), retryOptions(progress, signal));
  const checks = checkCopies(copyDeps, listCompleted, config.dataDirectory, { bytesPerSecond: config.scrubBytesPerSecond, intervalMs: config.scrubIntervalMs });
  const heartbeats = heartbeatLoop(context, jobs, { transfers: transfers.offer, audits: audits.offer });
  const stopWatching = progress.watch(() => [...jobs.values()]);
  while (!signal.aborted) {
    let waitMs = config.pollSeconds * 1000;
    if (jobs.size < config.concurrency) {
      try {
        const free = await freeBytes(config.dataDirectory);
        const granted = await client.allocate({
          node_id: identity.name,
          free_space_gb: Math.max(0, free - config.reserveBytes) / GIB,
          max_assets: config.concurrency - jobs.size,
        });
        for (const asset of granted) start(taskOf(asset, asset.restore_url, asset.reserved_bytes));
        if (granted.length > 0) waitMs = 0;
      } catch (error) {
        if (!(error instanceof ApiError && error.code === 'NO_ASSETS_AVAILABLE')) progress.log(`asking for work failed: ${(error as Error).message}`);
      }
    }
    if (waitMs > 0 || jobs.size >= config.concurrency) {
      // A wake ends the wait's timer too: one left running would hold a listener on `signal` for up to an hour.
      const woken = new AbortController();
      wake = () => woken.abort();
      await pause(jobs.size >= config.concurrency ? 3_600_000 : waitMs, AbortSignal.any([signal, woken.signal]));
    }
  }

  progress.log(`stopping: ${jobs.size} allocation(s) in hand are given back, or kept when their copy waits to be reported`);
  await rememberStopped(config.dataDirectory, [...jobs.keys()]);
  for (const job of jobs.values()) job.controller.abort();
  while (jobs.size > 0) await new Promise<void>((resolve) => (wake = resolve));
  stopWatching();
  await Promise.all([heartbeats, transfers.stopped, audits.stopped, checks]);
  // A clean goodbye: offline, not silent, so no strike and no reclaim of its copies.
  await client.offline(identity.node_id, STOPPING_TIMEOUT_MS).then(
    () => progress.log('told the control plane this node is going offline'),
    (error: unknown) => progress.log(`could not tell the control plane this node is going offline: ${(error as Error).message}`),
  );
}

/** `restoreUrl`: the allocation's (a repair from copies), not the asset's. */
function taskOf(
  asset: { id: string; name: string; url: string; size_bytes: number | null; sha256: string | null },
  restoreUrl: string | null,
  reservedBytes: number,
): Task {
  return {
    id: asset.id,
    name: asset.name,
    url: asset.url,
    restoreUrl,
    sizeBytes: asset.size_bytes,
    sha256: asset.sha256,
    reservedBytes: asset.size_bytes ?? reservedBytes,
  };
}

/**
 * Before taking work: copies of the old layout are taken over (checked against what the control
 * plane says this node completed), partial downloads of allocations this node no longer holds and
 * empty folders are removed, and the unfinished allocations are returned to be resumed.
 */
async function prepareDataDirectory(
  dataDirectory: string,
  client: Client,
  store: Store,
  identity: Identity,
  progress: Progress,
  signal: AbortSignal,
): Promise<Task[]> {
  const retry = retryOptions(progress, signal);
  if (await store.needsLegacyAdoption()) {
    const completed = await withBackoff(() => listAllocations(client, identity.name, 'completed'), retry);
    const copies = [];
    for (const allocation of completed) {
      if (allocation.sha256 === null || allocation.bytes === null) continue;
      const asset = await withBackoff(() => client.asset(allocation.asset_id), retry);
      copies.push({ assetId: asset.id, name: asset.name, url: asset.url, sha256: allocation.sha256, bytes: allocation.bytes });
    }
    progress.log(`moving ${copies.length} copies of the old layout into the new one (each file is read once to check it)`);
    const outcome = await store.adoptLegacy(copies, (done, total) => progress.log(`checked ${done} of ${total} copies`));
    progress.log(`kept ${outcome.adopted} copies${outcome.missing.length > 0 ? `; not found or not matching: ${outcome.missing.join(', ')}` : ''}`);
  }
  const active = await withBackoff(() => listAllocations(client, identity.name, 'active'), retry);
  const stopped = await recallStopped(dataDirectory);
  const removed = await store.cleanUp(new Set([...active.map((allocation) => allocation.asset_id), ...stopped]));
  if (removed.partials + removed.folders > 0) progress.log(`removed ${removed.partials} stale partial download(s) and ${removed.folders} empty folder(s)`);
  const tasks: Task[] = [];
  for (const allocation of active) {
    const asset = await withBackoff(() => client.asset(allocation.asset_id), retry);
    progress.log(`resuming ${asset.id}`);
    tasks.push(taskOf(asset, allocation.restore_url ?? null, allocation.reserved_bytes));
  }
  return tasks;
}

// What this agent gave back when it last stopped: their partial downloads are kept for a while, so
// that the asset resumes where it was if it comes back (a clean stop costs no cooldown, so it may).
const STOPPED_FILE = 'stopped.json';
const STOPPED_KEEP_MS = 7 * 24 * 3_600_000;

async function rememberStopped(dataDirectory: string, assetIds: string[]): Promise<void> {
  const at = Date.now();
  const earlier = await readStopped(dataDirectory);
  const entries = {
    ...Object.fromEntries(Object.entries(earlier).filter(([, when]) => at - when < STOPPED_KEEP_MS)),
    ...Object.fromEntries(assetIds.map((id) => [id, at])),
  };
  await fs.writeFile(path.join(dataDirectory, STOPPED_FILE), JSON.stringify(entries), { mode: 0o600 });
}

async function recallStopped(dataDirectory: string): Promise<string[]> {
  const now = Date.now();
  return Object.entries(await readStopped(dataDirectory))
    .filter(([, when]) => now - when < STOPPED_KEEP_MS)
    .map(([id]) => id);
}

async function readStopped(dataDirectory: string): Promise<Record<string, number>> {
  try {
    const parsed = JSON.parse(await fs.readFile(path.join(dataDirectory, STOPPED_FILE), 'utf8')) as unknown;
    return parsed !== null && typeof parsed === 'object' ? (parsed as Record<string, number>) : {};
  } catch {
    return {};
  }
}

/** Where the work a heartbeat answer names goes. */
interface Offers {
  transfers(items: TransferItem[]): void;
  audits(items: AuditItem[]): void;
}

async function heartbeatLoop(context: JobContext, jobs: Map<string, Job>, offers: Offers): Promise<void> {
  const { config, client, identity, progress, restraints, received, signal } = context;
  let lastBytes = received.bytes;
  let lastAt = Date.now();
  let interval = (config.heartbeatSeconds ?? 60) * 1000;
  while (!signal.aborted) {
    // Measured on every byte received since the last beat, downloads that finished meanwhile included.
    const now = Date.now();
    const rate = (received.bytes - lastBytes) / Math.max(0.001, (now - lastAt) / 1000);
    [lastBytes, lastAt] = [received.bytes, now];
    try {
      const answer = await client.heartbeat(identity.node_id, {
        free_bytes: await freeBytes(config.dataDirectory),
        bytes_in_flight: [...jobs.values()].reduce((sum, job) => sum + Math.max(0, (job.task.sizeBytes ?? job.bytesDone) - job.bytesDone), 0),
        // No transfer since the last beat says nothing about the node's rate: the control plane keeps the last one.
        ...(rate > 0 ? { download_rate_bps: rate } : {}),
        allocations: [...jobs.values()].map((job) => ({ asset_id: job.task.id, bytes_done: job.bytesDone })),
      });
      interval = (config.heartbeatSeconds ?? answer.next_heartbeat_seconds) * 1000;
      if (answer.draining) progress.log('this node is being drained: no new work');
      for (const paused of answer.paused_sources ?? []) restraints.pause(paused.host, Date.now() + paused.retry_in_seconds * 1000);
      for (const assetId of answer.ended ?? []) jobs.get(assetId)?.controller.abort(ENDED_ELSEWHERE);
      offers.transfers(answer.transfers ?? []);
      offers.audits(answer.audits ?? []);
    } catch (error) {
      progress.log(`heartbeat failed: ${(error as Error).message}`);
    }
    await pause(interval, signal);
  }
}

async function freeBytes(directory: string): Promise<number> {
  const stats = await fs.statfs(directory);
  return stats.bavail * stats.bsize;
}
