import { PEERS_HOST, sourceHostOf } from '../sources/source-host.js';
import { controlPlaneUrl, type ReleaseReport } from './client.js';
import type { DownloadOutcome, FetchLike } from './download.js';

/** What the origin of a download depends on in a task. */
export interface OriginTask {
  url: string;
  /** Set for a repair from copies: where the control plane restores them, relative to it. */
  restoreUrl: string | null;
}

/**
 * Where a task's bytes come from: the asset's source, or, for an asset repaired from its copies,
 * the control plane's restore of them, fetched with the node's token.
 */
export interface Origin {
  url: string;
  /** The host as the control plane counts and pauses it (heartbeat paused_sources name it so): PEERS_HOST for a repair. */
  host: string;
  fromCopies: boolean;
  fetch: FetchLike;
  /** What log lines and reasons call it. */
  name: string;
}

export interface OriginFetches {
  /** Refuses private addresses (AGENT_ALLOW_PRIVATE_NETWORKS) and never sends credentials. */
  source: FetchLike;
  /** Sends the node's token, to the control plane's origin only. */
  controlPlane: FetchLike;
}

export const COPIES_NAME = "the control plane's copies";

/** A task with a restore_url is fetched from the control plane, never from its source. */
export function originOf(task: OriginTask, apiEndpoint: string, fetches: OriginFetches): Origin {
  if (task.restoreUrl === null) return { url: task.url, host: sourceHostOf(task.url) ?? task.url, fromCopies: false, fetch: fetches.source, name: task.url };
  // Resolved as the client resolves its paths; one leaving the control plane's origin is refused when fetched.
  const url = new URL(task.restoreUrl, apiEndpoint).href;
  return { url, host: PEERS_HOST, fromCopies: true, fetch: fetches.controlPlane, name: COPIES_NAME };
}

/**
 * A fetch for the control plane's restore: the node's token and the agent's User-Agent on every
 * request, only to API_ENDPOINT's origin (the client's rule), and no redirect followed, so the
 * token cannot be carried elsewhere. The control plane is trusted wherever it is, loopback and
 * private networks included.
 */
export function createControlPlaneFetch(apiEndpoint: string, token: () => string, userAgent: string, fetchImpl: typeof fetch = fetch): FetchLike {
  return async (url, init) => {
    const target = controlPlaneUrl(apiEndpoint, url);
    return fetchImpl(target, {
      headers: { ...init.headers, 'user-agent': userAgent, authorization: `Bearer ${token()}` },
      signal: init.signal,
      redirect: 'manual',
    });
  };
}

type Failure = Extract<DownloadOutcome, { ok: false }>;
export type Release = Omit<ReleaseReport, 'asset_id' | 'node_id'>;

/** A busy origin waits this long when it named no Retry-After. */
export const BUSY_DEFAULT_SECONDS = 60;

/**
 * How a failed download is given back. From the source: its kind and status, as they are. From the
 * copies: nothing is said about the source or the catalogued values (the control plane checks
 * what it relays). A full disk is the node's; everything else, a restore without a holder online
 * (503 NO_HOLDER_ONLINE) included, is `other`: a cooldown of this node and asset only, where
 * `source_busy` would pause every repair of the fleet for one asset's missing holders.
 */
export function releaseFor(outcome: Failure, origin: Pick<Origin, 'fromCopies'>, attempts: number): Release {
  const tries = outcome.retryable && outcome.kind !== 'source_busy' ? ` after ${attempts} attempts` : '';
  const busy = outcome.kind === 'source_busy' ? { retry_after_seconds: outcome.retryAfterSeconds ?? BUSY_DEFAULT_SECONDS } : {};
  if (!origin.fromCopies) return { cause: outcome.kind, reason: `${outcome.reason}${tries}`, source_status: outcome.status, ...busy };
  const cause = outcome.kind === 'disk_full' ? outcome.kind : 'other';
  return { cause, reason: `${COPIES_NAME}: ${outcome.reason}${tries}` };
}

/**
 * What the agent keeps to itself after giving an asset back: a busy host is left alone for its
 * Retry-After, a gone source costs nothing (the control plane decides), any other failure keeps the
 * asset away from this origin for a while.
 */
export function restraintFor(release: Release): 'pause' | 'defer' | 'none' {
  if (release.cause === 'source_busy') return 'pause';
  return release.cause === 'source_gone' ? 'none' : 'defer';
}
