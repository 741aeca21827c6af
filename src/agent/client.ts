import { Readable } from 'node:stream';
import { request as undiciRequest, type Dispatcher } from 'undici';
import type { Static } from '@sinclair/typebox';
import type { AllocatedAsset, AllocationView, CompleteResponse } from '../allocations/allocations.schemas.js';
import type { ReleaseCause } from '../allocations/failure-policy.js';
import { backoffDelay, pause, withJitter } from '../lib/backoff.js';
import type { TransferItem as TransferItemSchema } from '../transfers/transfers.schemas.js';
import { RefusedDestinationError } from './safe-fetch.js';

export type Allocated = Static<typeof AllocatedAsset>;
/** An allocation as GET /allocations lists it; `restore_url` marks a repair from copies (as in POST /allocate's answer). */
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
  /** This node's open transfers (also what the long-poll answers). */
  transfers?: TransferItem[];
  /** This node's open audits: challenges about its copies, each answered once before its deadline. */
  audits?: AuditItem[];
}

/** "Show that you still hold your copy of `asset_id`": answered at `url` before `deadline`. */
export interface AuditItem {
  id: number;
  asset_id: string;
  kind: 'ranges' | 'block';
  /** kind 'ranges': a fresh random nonce (hex) and the byte ranges of the copy to hash with it. */
  nonce: string | null;
  ranges: { offset: number; length: number }[];
  /** kind 'block': the index of the 16 KiB block to return with its Merkle path. */
  block: number | null;
  /** ISO time. */
  deadline: string;
  /** Where to POST the answer, relative to the control plane, e.g. /api/audits/17. */
  url: string;
}

/**
 * kind 'ranges': one nonceHash per range, in order. kind 'block': the block's bytes in base64 and
 * its Merkle path (hex, leaf level first). Either kind: `missing` when the copy is not here.
 */
export type AuditAnswer = { hashes: string[] } | { block: string; proof: string[] } | { missing: true };

/** "Send bytes [offset, offset + length) of your copy of `asset_id`": a lease this node holds. */
export type TransferItem = Static<typeof TransferItemSchema>;

/** Why a copy cannot be served; `missing` and `corrupt` also mean that the copy is gone. */
export type CopyFault = 'missing' | 'corrupt' | 'unreadable';

export interface LostCopy {
  asset_id: string;
  reason: 'missing' | 'corrupt';
  detail: string;
}

/** Bytes [start, end] (end inclusive) of a copy of `size` bytes. */
export interface ChunkRange {
  start: number;
  end: number;
  size: number;
}

export interface ReleaseReport {
  asset_id: string;
  node_id: string;
  reason: string;
  cause: ReleaseCause;
  source_status?: number;
  retry_after_seconds?: number;
}

/** No call, a chunk of a transfer included, may take longer (a long-poll: this beyond its wait). */
const CALL_TIMEOUT_MS = 30_000;

interface CallOptions {
  bearer?: string;
  timeoutMs?: number;
  signal?: AbortSignal;
}

/** A request's body: JSON text, or bytes streamed as they are read. */
interface Payload {
  body?: string | Readable;
  headers?: Record<string, string>;
}

/** The control plane's API as the agent uses it: typed from the server's own schemas. */
export function createClient(baseUrl: string, token: () => string) {
  const call = <T>(method: string, path: string, body?: unknown, options?: CallOptions) =>
    request<T>(method, path, body === undefined ? {} : { body: JSON.stringify(body), headers: { 'content-type': 'application/json' } }, options);
  async function request<T>(method: string, path: string, payload: Payload, options: CallOptions = {}): Promise<T> {
    const url = controlPlaneUrl(baseUrl, path);
    const timeout = AbortSignal.timeout(options.timeoutMs ?? CALL_TIMEOUT_MS);
    const headers = { authorization: `Bearer ${options.bearer ?? token()}`, ...payload.headers };
    const signal = options.signal ? AbortSignal.any([timeout, options.signal]) : timeout;
    let status: number;
    let text: string;
    if (payload.body instanceof Readable) {
      // Bytes of a copy go through undici's own request, which writes the file's buffers to the
      // socket as they are read; fetch would pass each one through web streams first.
      const answer = await undiciRequest(url, { method: method as Dispatcher.HttpMethod, headers, body: payload.body, signal });
      [status, text] = [answer.statusCode, await answer.body.text()];
    } else {
      const response = await fetch(url, { method, headers, body: payload.body, signal });
      [status, text] = [response.status, await response.text()];
    }
    const parsed = text ? (JSON.parse(text) as unknown) : undefined;
    if (status < 200 || status > 299) {
      const error = parsed as { detail?: unknown; code?: string } | undefined;
      throw new ApiError(status, error?.code ?? 'UNKNOWN', typeof error?.detail === 'string' ? error.detail : text);
    }
    return parsed as T;
  }
  return {
    register: (enrollmentToken: string, body: RegistrationBody) => call<Registration>('POST', '/api/workers/register', body, { bearer: enrollmentToken }),
    refresh: (body: RegistrationBody) => call<Registration>('POST', '/api/workers/register', body),
    provisioningKey: () => call<{ public_key: string }>('GET', '/api/provisioning-key'),
    heartbeat: (
      nodeId: number,
      body: { free_bytes: number; bytes_in_flight: number; download_rate_bps?: number; allocations: { asset_id: string; bytes_done: number }[] },
    ) => call<HeartbeatAnswer>('POST', `/api/nodes/${nodeId}/heartbeat`, body),
    allocate: (body: { node_id: string; free_space_gb: number; max_assets: number }) => call<Allocated[]>('POST', '/allocate', body),
    /** `merkle_root`: the copy's BEP 52 pieces root, 64 lowercase hex digits. */
    complete: (body: { asset_id: string; node_id: string; sha256: string; bytes: number; merkle_root: string }) => call<Completion>('POST', '/complete', body),
    /** `timeoutMs`: shorter while stopping, so an unreachable control plane cannot hold the stop up. */
    release: (body: ReleaseReport, timeoutMs?: number) => call<unknown>('POST', '/release', body, { timeoutMs }),
    offline: (nodeId: number, timeoutMs?: number) => call<unknown>('POST', `/api/nodes/${nodeId}/offline`, undefined, { timeoutMs }),
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
    /** Long-poll: answers when this node has open transfers, else after `waitSeconds` with none. */
    transfers: async (nodeId: number, waitSeconds: number, signal: AbortSignal) =>
      (
        await call<{ transfers: TransferItem[] }>('GET', `/api/nodes/${nodeId}/transfers?wait=${waitSeconds}`, undefined, {
          timeoutMs: waitSeconds * 1000 + CALL_TIMEOUT_MS,
          signal,
        })
      ).transfers ?? [],
    /** One chunk of a transfer: `body` yields exactly the bytes of `range`, read as they are sent. */
    sendChunk: (url: string, range: ChunkRange, body: Readable, signal: AbortSignal) =>
      request<{ received: number; done: boolean }>(
        'PUT',
        url,
        {
          body,
          headers: {
            'content-type': 'application/octet-stream',
            'content-range': `bytes ${range.start}-${range.end}/${range.size}`,
            'content-length': String(range.end - range.start + 1),
          },
        },
        { signal },
      ),
    /** `url`: the audit's own, resolved against the control plane and refused elsewhere, as every path is. */
    answerAudit: (url: string, body: AuditAnswer, signal?: AbortSignal) => call<unknown>('POST', url, body, { signal }),
    failTransfer: (id: number, reason: CopyFault, detail: string, signal?: AbortSignal) =>
      call<{ status: string }>('POST', `/api/transfers/${id}/fail`, { reason, detail: detail.slice(0, 500) }, { signal }),
    /** At most 1000 of each; ids this node holds no counted copy of are ignored. */
    reportCopies: (nodeId: number, body: { checked?: string[]; lost?: LostCopy[] }, signal?: AbortSignal) =>
      call<{ checked: number; lost: number }>(
        'POST',
        `/api/nodes/${nodeId}/copies`,
        { checked: body.checked, lost: body.lost?.map((copy) => ({ ...copy, detail: copy.detail.slice(0, 500) })) },
        { signal },
      ),
  };
}

/**
 * `path` resolved against the control plane's URL, refused (code REFUSED_DESTINATION) when it
 * leaves the control plane's origin: paths come from its answers too (a transfer's url, a
 * restore_url), and the node's token goes nowhere else.
 */
export function controlPlaneUrl(baseUrl: string, path: string): URL {
  const url = new URL(path, baseUrl);
  const origin = new URL(baseUrl).origin;
  if (url.origin !== origin) throw new RefusedDestinationError(`refusing to send this node's token to ${url.origin}`);
  return url;
}

/** Every page of this node's allocations in `state`. */
export async function listAllocations(client: Client, nodeName: string, state: 'active' | 'completed'): Promise<AllocationRecord[]> {
  const items = [];
  let cursor: number | undefined;
  do {
    const page = await client.allocations(nodeName, state, cursor);
    items.push(...page.items);
    cursor = page.next_cursor ?? undefined;
  } while (cursor !== undefined);
  return items;
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
