import fs from 'node:fs/promises';
import os from 'node:os';
import { authorizeProvisioningKey, readHostKey, workerExecCommand } from '../workers/worker-setup.js';
import path from 'node:path';
import type { AgentConfig } from './agent.config.js';
import { ApiError, createClient, sleep, withBackoff, type Client } from './client.js';
import { download } from './download.js';
import { readIdentity, writeIdentity, type Identity } from './identity.js';
import type { Progress } from './progress.js';
import { createRateLimiter } from './rate-limiter.js';

export interface Task {
  id: string;
  name: string;
  url: string;
  sizeBytes: number | null;
  sha256: string | null;
}

export interface Job {
  task: Task;
  bytesDone: number;
  controller: AbortController;
}

const GIB = 1024 ** 3;

/**
 * The node agent: registers (retrying until the control plane answers), resumes its own unfinished
 * allocations, then heartbeats and takes work while it has room, downloading several assets at
 * once. On `signal` it takes nothing new, gives back what is unfinished, and returns.
 */
export async function runAgent(config: AgentConfig, progress: Progress, signal: AbortSignal): Promise<void> {
  await fs.mkdir(path.join(config.dataDir, 'assets'), { recursive: true });
  await fs.mkdir(path.join(config.dataDir, 'partial'), { recursive: true });
  let token = config.nodeToken ?? '';
  const client = createClient(config.apiEndpoint, () => token);
  const identity = await obtainIdentity(config, progress, signal);
  if (!identity) return;
  token = identity.node_token;
  progress.log(`registered as node ${identity.node_id} "${identity.name}" at ${config.apiEndpoint}`);

  const jobs = new Map<string, Job>();
  const limiter = config.bandwidthLimit ? createRateLimiter(config.bandwidthLimit) : undefined;
  let wake: () => void = () => undefined;
  const start = (task: Task) => {
    const job: Job = { task, bytesDone: 0, controller: new AbortController() };
    jobs.set(task.id, job);
    progress.started(job);
    void runJob(job, { config, client, identity, progress, limiter, signal }).finally(() => {
      jobs.delete(task.id);
      wake();
    });
  };

  for (const allocation of (await withBackoff(() => client.activeAllocations(identity.name), retryOptions(progress, signal))).items) {
    const asset = await client.asset(allocation.asset_id);
    progress.log(`resuming ${asset.id}`);
    start({ id: asset.id, name: asset.name, url: asset.url, sizeBytes: asset.size_bytes, sha256: asset.sha256 });
  }

  const heartbeats = heartbeatLoop(config, client, identity, jobs, progress, signal);
  const stopWatching = progress.watch(() => [...jobs.values()]);
  while (!signal.aborted) {
    let waitMs = config.pollSeconds * 1000;
    if (jobs.size < config.concurrency) {
      const free = await freeBytes(config.dataDir);
      try {
        const granted = await client.allocate({ node_id: identity.name, free_space_gb: Math.max(0, free - config.reserveBytes) / GIB, max_assets: config.concurrency - jobs.size });
        for (const asset of granted) start({ id: asset.id, name: asset.name, url: asset.url, sizeBytes: asset.size_bytes, sha256: asset.sha256 });
        if (granted.length > 0) waitMs = 0;
      } catch (error) {
        if (!(error instanceof ApiError && error.code === 'NO_ASSETS_AVAILABLE')) progress.log(`asking for work failed: ${(error as Error).message}`);
      }
    }
    if (waitMs > 0 || jobs.size >= config.concurrency) await new Promise<void>((resolve) => {
      wake = resolve;
      void sleep(jobs.size >= config.concurrency ? 3_600_000 : waitMs, signal).then(resolve);
    });
  }

  progress.log(`stopping: giving back ${jobs.size} unfinished allocation(s)`);
  for (const job of jobs.values()) job.controller.abort();
  while (jobs.size > 0) await new Promise<void>((resolve) => (wake = resolve));
  stopWatching();
  await heartbeats;
}

interface JobContext {
  config: AgentConfig;
  client: Client;
  identity: Identity;
  progress: Progress;
  limiter: ReturnType<typeof createRateLimiter> | undefined;
  signal: AbortSignal;
}

/** One asset: download (resuming, retrying), then report the copy, or give the asset back with the reason. */
async function runJob(job: Job, context: JobContext): Promise<void> {
  const { config, client, identity, progress } = context;
  const { task } = job;
  const stop = AbortSignal.any([job.controller.signal, context.signal]);
  const directory = path.join(config.dataDir, 'assets', safeName(task.id));
  await fs.mkdir(directory, { recursive: true });
  const destination = path.join(directory, safeName(task.name || path.basename(new URL(task.url).pathname) || 'data'));
  const release = (reason: string, sourceStatus?: number) =>
    client.release({ asset_id: task.id, node_id: identity.name, reason, ...(sourceStatus ? { source_status: sourceStatus } : {}) }).catch((error: unknown) =>
      progress.log(`could not give back ${task.id}: ${(error as Error).message}`),
    );
  let lastReason = 'not attempted';
  for (let attempt = 1; attempt <= config.retries; attempt += 1) {
    let outcome;
    try {
      outcome = await download({
        url: task.url,
        destination,
        partial: path.join(config.dataDir, 'partial', `${safeName(task.id)}.part`),
        expectedBytes: task.sizeBytes,
        expectedSha256: task.sha256,
        signal: stop,
        rateLimiter: context.limiter,
        onProgress: (bytes) => {
          job.bytesDone = bytes;
        },
      });
    } catch {
      // Aborted: the agent is stopping. The partial file stays for a later resume.
      await release('agent stopping');
      progress.finished(job, 'given back (agent stopping)');
      return;
    }
    if (outcome.ok) {
      const report = { asset_id: task.id, node_id: identity.name, sha256: outcome.sha256, bytes: outcome.bytes };
      try {
        // A control plane that is busy or restarting (5xx, 429, no answer) is asked again: the copy is good.
        const result = await withBackoff(() => client.complete(report), retryOptions(progress, context.signal));
        progress.finished(job, `done, sha256 ${outcome.sha256.slice(0, 12)}…, ${result.verified ? 'verified' : 'awaiting quorum'} (${result.copies}/${result.replicas_target} copies)`);
      } catch (error) {
        if (context.signal.aborted) {
          progress.finished(job, `stopped before the copy was reported; its allocation expires`);
          return;
        }
        // The control plane refused the copy (checksum or size): it is not a valid copy, so remove it.
        await fs.rm(destination, { force: true });
        progress.finished(job, `refused: ${(error as Error).message}`);
      }
      return;
    }
    lastReason = outcome.reason;
    if (outcome.gone || !outcome.retryable) {
      await release(outcome.reason, outcome.gone ? outcome.status : undefined);
      progress.finished(job, `given back: ${outcome.reason}`);
      return;
    }
    progress.log(`${task.id}: ${outcome.reason} (attempt ${attempt} of ${config.retries})`);
    if (attempt < config.retries) await sleep(Math.min(30_000, 1000 * 2 ** attempt), stop);
  }
  await release(`gave up after ${config.retries} attempts: ${lastReason}`);
  progress.finished(job, `given back after ${config.retries} attempts: ${lastReason}`);
}

async function obtainIdentity(config: AgentConfig, progress: Progress, signal: AbortSignal): Promise<Identity | null> {
  const kept = await readIdentity(config.dataDir);
  const token = kept?.api_endpoint === config.apiEndpoint ? kept.node_token : config.nodeToken;
  const client = createClient(config.apiEndpoint, () => token ?? '');
  const worker = config.worker ? { ssh_host_key: await readHostKey(config.worker.hostKeyFile), ssh_user: config.worker.user } : {};
  const body = {
    hostname: os.hostname().replace(/[^A-Za-z0-9_.-]/g, '-').slice(0, 253) || 'node',
    node_id: config.nodeName,
    ...(config.sshPort ? { ssh_port: config.sshPort } : {}),
    tags: config.tags,
    ...worker,
  };
  const retry = retryOptions(progress, signal);
  if (signal.aborted) return null;
  const registration = token
    ? await withBackoff(() => client.refresh({ ...body, node_id: kept?.name ?? config.nodeName }), retry)
    : config.enrollmentToken
      ? await withBackoff(() => client.register(config.enrollmentToken as string, body), retry)
      : null;
  if (!registration) throw new Error('No credential: set NODE_ENROLLMENT_TOKEN (first start) or NODE_TOKEN.');
  const identity = { api_endpoint: config.apiEndpoint, node_id: registration.node_id, name: registration.name, node_token: token ?? registration.node_token };
  await writeIdentity(config.dataDir, identity);
  if (config.worker) {
    // A worker lets the control plane in for provisioning only: its key, restricted to worker-exec.
    const provisioning = await withBackoff(() => createClient(config.apiEndpoint, () => identity.node_token).provisioningKey(), retry);
    await authorizeProvisioningKey(config.worker.authorizedKeysFile, provisioning.public_key, workerExecCommand());
    progress.log(`worker: provisioning key authorized in ${config.worker.authorizedKeysFile}`);
  }
  return identity;
}

/** Retry while the control plane is unreachable or busy; a refusal (4xx other than 429) is final. */
function retryOptions(progress: Progress, signal: AbortSignal) {
  return {
    signal,
    retryable: (error: unknown) => !(error instanceof ApiError) || error.status >= 500 || error.status === 429,
    onRetry: (error: unknown, delay: number) => progress.log(`control plane not reachable (${(error as Error).message}); retrying in ${Math.round(delay / 1000)} s`),
  };
}

async function heartbeatLoop(config: AgentConfig, client: Client, identity: Identity, jobs: Map<string, Job>, progress: Progress, signal: AbortSignal): Promise<void> {
  let lastBytes = 0;
  let lastAt = Date.now();
  let interval = (config.heartbeatSeconds ?? 60) * 1000;
  while (!signal.aborted) {
    const done = [...jobs.values()].reduce((sum, job) => sum + job.bytesDone, 0);
    const now = Date.now();
    const rate = Math.max(0, done - lastBytes) / Math.max(0.001, (now - lastAt) / 1000);
    [lastBytes, lastAt] = [done, now];
    try {
      const answer = await client.heartbeat(identity.node_id, {
        free_bytes: await freeBytes(config.dataDir),
        bytes_in_flight: [...jobs.values()].reduce((sum, job) => sum + Math.max(0, (job.task.sizeBytes ?? job.bytesDone) - job.bytesDone), 0),
        download_rate_bps: rate,
        allocations: [...jobs.values()].map((job) => ({ asset_id: job.task.id, bytes_done: job.bytesDone })),
      });
      interval = (config.heartbeatSeconds ?? answer.next_heartbeat_seconds) * 1000;
      if (answer.draining) progress.log('this node is being drained: no new work');
    } catch (error) {
      progress.log(`heartbeat failed: ${(error as Error).message}`);
    }
    await sleep(interval, signal);
  }
}

async function freeBytes(directory: string): Promise<number> {
  const stats = await fs.statfs(directory);
  return stats.bavail * stats.bsize;
}

/** A file or directory name from untrusted text: safe characters only, never a path. */
export function safeName(raw: string): string {
  const cleaned = raw.replace(/[^A-Za-z0-9._-]/g, '_').replace(/^\.+/, '_').slice(0, 200);
  return cleaned || '_';
}
