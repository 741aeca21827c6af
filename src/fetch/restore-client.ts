import type { AllocationView } from '../allocations/allocations.schemas.js';
import type { AssetView } from '../assets/assets.schemas.js';
import { backoffDelay, pause, withJitter } from '../lib/backoff.js';
import { printable } from '../lib/printable.js';
import { parseRetryAfter } from '../lib/retry-after.js';

/** What `dispatcher fetch` reads of an asset in a listing (GET /assets). */
export type AssetSummary = Pick<AssetView, 'id' | 'name' | 'url' | 'size_bytes' | 'sha256' | 'dataset' | 'organization' | 'copies' | 'state'>;
/** …and of one asset (GET /assets/{id}): its copies tell the size and when it was rescued. */
export type AssetDetail = AssetSummary & { copies_detail: Pick<AllocationView, 'node_name' | 'ended_at' | 'sha256' | 'bytes' | 'verified'>[] };

/** Which assets a bag holds: those of an organization, a dataset (exact names), both, or all (`{}`). */
export interface Selection {
  organization?: string;
  dataset?: string;
}

/** An answer of the control plane other than 2xx, with its `{detail, code}` and the rest of its body. */
export class ControlPlaneError extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
    readonly detail: string,
    readonly body: Record<string, unknown>,
    readonly retryAfterMs: number | undefined,
  ) {
    super(`${status} ${code}: ${detail}`);
  }
}

/** The control plane did not answer (network, timeout) after a few tries: no asset can be restored. */
export class ControlPlaneUnreachable extends Error {
  constructor(origin: string, cause: unknown) {
    const reason = cause instanceof Error ? `${cause.message}${cause.cause instanceof Error ? `: ${cause.cause.message}` : ''}` : String(cause);
    super(`cannot reach the control plane at ${origin}: ${printable(reason)}`);
  }
}

const CALL_TIMEOUT_MS = 60_000;
const CALL_ATTEMPTS = 4;

/**
 * The three routes of the restore contract. The token goes to API_ENDPOINT's origin only: fetch
 * drops Authorization when a redirect leaves that origin (fetch.test.ts checks that the source
 * never sees it).
 */
export function createRestoreClient(apiEndpoint: string, token: string | undefined) {
  const auth: Record<string, string> = token === undefined ? {} : { authorization: `Bearer ${token}` };
  const origin = new URL(apiEndpoint).origin;

  async function getJson<T>(route: string, signal: AbortSignal): Promise<T> {
    for (let attempt = 0; ; attempt += 1) {
      try {
        const response = await fetch(new URL(route, apiEndpoint), { headers: auth, signal: AbortSignal.any([signal, AbortSignal.timeout(CALL_TIMEOUT_MS)]) });
        if (!response.ok) throw await readError(response);
        return (await response.json()) as T;
      } catch (error) {
        // A network error, a timeout or a 5xx may pass; anything else is the answer.
        const transient = !(error instanceof ControlPlaneError) || error.status >= 500 || error.status === 429;
        if (signal.aborted || !transient) throw error;
        if (attempt + 1 >= CALL_ATTEMPTS) throw error instanceof ControlPlaneError ? error : new ControlPlaneUnreachable(origin, error);
        await pause(
          error instanceof ControlPlaneError && error.retryAfterMs !== undefined ? error.retryAfterMs : withJitter(backoffDelay(attempt, 1000, 10_000)),
          signal,
        );
      }
    }
  }

  return {
    origin,
    hasToken: token !== undefined,
    asset: (id: string, signal: AbortSignal) => getJson<AssetDetail>(`/assets/${encodeURIComponent(id)}`, signal),
    assets(selection: Selection, cursor: string | null, signal: AbortSignal) {
      const query = new URLSearchParams({ limit: '1000' });
      if (selection.organization !== undefined) query.set('organization', selection.organization);
      if (selection.dataset !== undefined) query.set('dataset', selection.dataset);
      if (cursor !== null) query.set('cursor', cursor);
      return getJson<{ items: AssetSummary[]; next_cursor: string | null }>(`/assets?${query}`, signal);
    },
    /** GET /assets/{id}/content, redirects followed; the caller reads the status. */
    content(id: string, request: { preferSource: boolean; from: number; validator: string | null; signal: AbortSignal }) {
      const url = new URL(`/assets/${encodeURIComponent(id)}/content`, apiEndpoint);
      if (!request.preferSource) url.searchParams.set('prefer_source', 'false');
      const range: Record<string, string> =
        request.from > 0 ? { range: `bytes=${request.from}-`, ...(request.validator ? { 'if-range': request.validator } : {}) } : {};
      // Identity: Content-Length then counts the bytes we store, and nothing decompresses them.
      return fetch(url, { headers: { ...auth, 'accept-encoding': 'identity', ...range }, signal: request.signal, redirect: 'follow' });
    },
  };
}

export type RestoreClient = ReturnType<typeof createRestoreClient>;

/** The `{detail, code}` of an answer that is not 2xx; a body that is not JSON becomes the detail. */
export async function readError(response: Response): Promise<ControlPlaneError> {
  const text = await response.text().catch(() => '');
  let body: Record<string, unknown> = {};
  try {
    const parsed = JSON.parse(text) as unknown;
    if (parsed !== null && typeof parsed === 'object' && !Array.isArray(parsed)) body = parsed as Record<string, unknown>;
  } catch {
    body = {};
  }
  const detail = typeof body.detail === 'string' ? body.detail : text || response.statusText;
  const code = typeof body.code === 'string' ? body.code : `HTTP_${response.status}`;
  return new ControlPlaneError(
    response.status,
    printable(code),
    printable(detail).slice(0, 1000),
    body,
    parseRetryAfter(response.headers.get('retry-after'), Date.now()),
  );
}

/** What to tell the user about a refusal: for 401 how to get a token, for 503 where the copies are. */
export function describeRefusal(error: ControlPlaneError, apiEndpoint: string, hasToken: boolean): string {
  if (error.status === 401) {
    const login = `curl -s ${apiEndpoint.replace(/\/$/, '')}/auth/login -H 'content-type: application/json' -d '{"username":"…","password":"…"}' | jq -r .token`;
    const why = hasToken ? 'refused the token (expired, revoked, or not a user token)' : 'needs a user token (RESTORE_ACCESS is not public)';
    return `the control plane ${why}: get one with\n  ${login}\nand pass it as DISPATCHER_TOKEN (or --token). Server said: ${error.detail}`;
  }
  if (error.status === 403) return `${error.detail} (with RESTORE_ACCESS=admins, only an admin's token may restore)`;
  if (error.code === 'ASSET_NOT_FOUND') return `no such asset (ASSET_NOT_FOUND): ${error.detail}`;
  if (error.code === 'NO_COPY') return `no verified copy anywhere (NO_COPY): ${error.detail}`;
  if (error.code === 'NO_HOLDER_ONLINE') {
    const holders = Array.isArray(error.body.holders) ? (error.body.holders as { node?: unknown; last_seen?: unknown }[]) : [];
    const seen = holders.map(
      (holder) => `${printable(String(holder.node))} (last seen ${typeof holder.last_seen === 'string' ? printable(holder.last_seen) : 'never'})`,
    );
    return `${error.detail} (NO_HOLDER_ONLINE): ${String(error.body.copies ?? holders.length)} cop(ies), held by ${seen.join(', ') || 'no node listed'}`;
  }
  return `${error.status} ${error.code}: ${error.detail}`;
}
