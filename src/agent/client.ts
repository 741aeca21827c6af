import type { Static } from '@sinclair/typebox';
import type { AllocatedAsset, AllocationView, CompleteResponse } from '../allocations/allocations.schemas.js';
import type { ReleaseCause } from '../allocations/failure-policy.js';
import { backoffDelay, pause, withJitter } from '../lib/backoff.js';

export type Allocated = Static<typeof AllocatedAsset>;
export type AllocationRecord = Static<typeof AllocationView>;
export type Completion = Static<typeof CompleteResponse>;

export interface Registration {
  message: string;
  node_id: number;
  name: string;
  /** Absent when the control plane issued none: this machine was registered before, with its own token. */
  node_token?: string;
}

/** An answer of the control plane other than 2xx, with its `{detail, code}`. */
export class ApiError extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
    detail: string,
  ) {
    super(`${status} ${code}: ${detail}`);
  }
}

export interface HeartbeatAnswer {
  node_status: string;
  draining: boolean;
  next_heartbeat_seconds: number;
  /** Allocations reported that are no longer this node's (expired, reclaimed): drop them. */
  ended?: string[];
  paused_sources?: { host: string; retry_in_seconds: number }[];
}

export interface ReleaseReport {
  asset_id: string;
  node_id: string;
  reason: string;
  cause: ReleaseCause;
  source_status?: number;
  retry_after_seconds?: number;
}

const CALL_TIMEOUT_MS = 30_000;

/** The control plane's API as the agent uses it: typed from the server's own schemas. */
export function createClient(baseUrl: string, token: () => string) {
  async function call<T>(method: string, path: string, body?: unknown, bearer = token(), timeoutMs = CALL_TIMEOUT_MS): Promise<T> {
    const response = await fetch(new URL(path, baseUrl), {
      method,
      headers: { authorization: `Bearer ${bearer}`, ...(body === undefined ? {} : { 'content-type': 'application/json' }) },
      body: body === undefined ? undefined : JSON.stringify(body),
      signal: AbortSignal.timeout(timeoutMs),
    });
    const text = await response.text();
    const parsed = text ? (JSON.parse(text) as unknown) : undefined;
    if (!response.ok) {
      const error = parsed as { detail?: unknown; code?: string } | undefined;
      throw new ApiError(response.status, error?.code ?? 'UNKNOWN', typeof error?.detail === 'string' ? error.detail : text);
    }
    return parsed as T;
  }
  return {
    register: (enrollmentToken: string, body: RegistrationBody) => call<Registration>('POST', '/api/workers/register', body, enrollmentToken),
    refresh: (body: RegistrationBody) => call<Registration>('POST', '/api/workers/register', body),
    provisioningKey: () => call<{ public_key: string }>('GET', '/api/provisioning-key'),
    heartbeat: (
      nodeId: number,
      body: { free_bytes: number; bytes_in_flight: number; download_rate_bps?: number; allocations: { asset_id: string; bytes_done: number }[] },
    ) => call<HeartbeatAnswer>('POST', `/api/nodes/${nodeId}/heartbeat`, body),
    allocate: (body: { node_id: string; free_space_gb: number; max_assets: number }) => call<Allocated[]>('POST', '/allocate', body),
    complete: (body: { asset_id: string; node_id: string; sha256: string; bytes: number }) => call<Completion>('POST', '/complete', body),
    /** `timeoutMs`: shorter while stopping, so an unreachable control plane cannot hold the stop up. */
    release: (body: ReleaseReport, timeoutMs?: number) => call<unknown>('POST', '/release', body, token(), timeoutMs),
    offline: (nodeId: number, timeoutMs?: number) => call<unknown>('POST', `/api/nodes/${nodeId}/offline`, undefined, token(), timeoutMs),
    allocations: (nodeName: string, state: 'active' | 'completed', cursor?: number) =>
      call<{ items: AllocationRecord[]; next_cursor: number | null }>(
        'GET',
        `/allocations?node=${encodeURIComponent(nodeName)}&state=${state}&limit=1000${cursor === undefined ? '' : `&cursor=${cursor}`}`,
      ),
    asset: (id: string) =>
      call<{ id: string; url: string; name: string; size_bytes: number | null; sha256: string | null; priority: number }>(
        'GET',
        `/assets/${encodeURIComponent(id)}`,
      ),
  };
}

export type Client = ReturnType<typeof createClient>;

export interface RegistrationBody {
  hostname: string;
  node_id: string;
  ssh_port?: number;
  tags?: Record<string, string>;
  ssh_host_key?: string;
  ssh_user?: string;
}

/** Retries `work` with capped exponential backoff (1 s, 2 s, 4 s … 60 s) until it succeeds or `signal` aborts. */
export async function withBackoff<T>(
  work: () => Promise<T>,
  options: { signal: AbortSignal; onRetry(error: unknown, delayMs: number): void; retryable?(error: unknown): boolean },
): Promise<T> {
  for (let attempt = 0; ; attempt += 1) {
    try {
      return await work();
    } catch (error) {
      if (options.signal.aborted || (options.retryable && !options.retryable(error))) throw error;
      const delay = withJitter(backoffDelay(attempt, 1000, 60_000));
      options.onRetry(error, delay);
      await pause(delay, options.signal);
    }
  }
}
