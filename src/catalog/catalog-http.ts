import { backoffDelay, sleep } from '../lib/backoff.js';
import { parseRetryAfter } from '../lib/retry-after.js';

/**
 * Polite JSON fetching from public portals: a request rate, a per-request timeout, and retries with
 * exponential backoff on 429/5xx/timeouts honouring Retry-After. Other answers fail at once with
 * the status and the body, for the source to explain. Every retry is reported with its reason.
 */
export interface FetchPolicy {
  requestsPerSecond: number;
  timeoutMs: number;
  /** Retries after the first attempt, for 429, 5xx, timeouts and network errors. */
  maxRetries: number;
  /** First backoff delay; doubles with each retry, capped by maxDelayMs. */
  baseDelayMs: number;
  maxDelayMs: number;
  /** The longest wait a Retry-After is granted (CATALOG_MAX_RETRY_WAIT_SECONDS): data.gov's hourly limit asks for up to an hour. */
  maxRetryWaitMs: number;
  /** Injected so tests never wait. */
  sleep: (ms: number) => Promise<void>;
  /** Where a line about the portal goes (a retry and why, a long wait's progress): stderr on the CLI, the log on the server. */
  report: (line: string) => void;
  /** Aborts a request in flight and stops retrying (an import job being stopped). */
  signal?: AbortSignal;
  /** CATALOG_MAX_PAGE_BYTES: an answer is read as a stream and refused past this many bytes. */
  maxBodyBytes: number;
}

/** The answer's text, read as it arrives and refused once it passes `limit` bytes: a page is never held whole before the check. */
async function readCapped(response: Response, limit: number, url: string): Promise<string> {
  const declared = Number(response.headers.get('content-length'));
  if (Number.isFinite(declared) && declared > limit) {
    await response.body?.cancel();
    throw new CatalogError(tooLarge(url, limit, `announces ${declared} bytes`));
  }
  if (!response.body) return '';
  const chunks: Buffer[] = [];
  let received = 0;
  for await (const chunk of response.body as AsyncIterable<Uint8Array>) {
    received += chunk.length;
    if (received > limit) {
      await response.body.cancel().catch(() => undefined);
      throw new CatalogError(tooLarge(url, limit, `sent more than that`));
    }
    chunks.push(Buffer.from(chunk));
  }
  return Buffer.concat(chunks).toString('utf8');
}

function tooLarge(url: string, limit: number, what: string): string {
  return `${url} ${what}: a page may be at most ${limit} bytes (CATALOG_MAX_PAGE_BYTES); ask for smaller pages (--rows, --per-page) or raise the limit`;
}

export const sleepUnlessAborted = (signal: AbortSignal) => (ms: number) => sleep(ms, signal);

/** `300 ms`, `42 s`, `42 min`, `2 h 5 min`: a wait as an operator reads it. */
export function formatWait(ms: number): string {
  if (ms < 1000) return `${Math.round(ms)} ms`;
  const seconds = Math.ceil(ms / 1000);
  if (seconds < 60) return `${seconds} s`;
  const minutes = Math.ceil(seconds / 60);
  if (minutes < 60) return `${minutes} min`;
  return `${Math.floor(minutes / 60)} h${minutes % 60 === 0 ? '' : ` ${minutes % 60} min`}`;
}

/** What a catalog import fails with: a message an operator can act on. */
export class CatalogError extends Error {}

/** A non-retryable HTTP answer (4xx other than 429), with its parsed body (JSON, else text). */
export class CatalogHttpError extends CatalogError {
  constructor(
    readonly url: string,
    readonly status: number,
    readonly body: unknown,
  ) {
    super(`${url} answered HTTP ${status}: ${describeBody(body)}`);
  }
}

export interface JsonFetcher {
  getJson(url: string, headers?: Record<string, string>): Promise<unknown>;
  /** Requests sent so far (retries included). */
  requests(): number;
  /** Tells the operator something about the portal (a page cap it imposes), where retries are reported. */
  report(line: string): void;
}

export function describeBody(body: unknown): string {
  const text = typeof body === 'string' ? body : JSON.stringify(body);
  return text.length > 300 ? `${text.slice(0, 300)}…` : text;
}

export { parseRetryAfter };

const NOT_JSON = Symbol('not JSON');

function tryParse(text: string): unknown {
  try {
    return JSON.parse(text);
  } catch {
    return NOT_JSON;
  }
}

/** The parsed JSON, or the text itself when it is not JSON. */
function parseBody(text: string): unknown {
  const parsed = tryParse(text);
  return parsed === NOT_JSON ? text : parsed;
}

const NETWORK_REASONS: Record<string, string> = {
  ECONNREFUSED: 'connection refused',
  ECONNRESET: 'connection reset',
  ENOTFOUND: 'host not found',
  EAI_AGAIN: 'host name lookup failed',
  ETIMEDOUT: 'connection timed out',
  UND_ERR_CONNECT_TIMEOUT: 'connection timed out',
  EHOSTUNREACH: 'host unreachable',
  ENETUNREACH: 'network unreachable',
  UND_ERR_SOCKET: 'connection closed by the portal',
};

/** fetch() says only "fetch failed": the reason is in its cause. */
function describeNetworkError(error: Error): string {
  const cause = (error as { cause?: { code?: string; message?: string } }).cause;
  return NETWORK_REASONS[cause?.code ?? ''] ?? `network error: ${cause?.message ?? error.message}`;
}

/** Why a retry waits as long as it does, for its report line. */
function describeRetryAfter(asked: number | undefined, waited: number): string {
  if (asked === undefined) return '';
  if (asked <= waited) return ' (Retry-After)';
  return ` (Retry-After asked ${formatWait(asked)}; CATALOG_MAX_RETRY_WAIT_SECONDS caps it)`;
}

/** Pacing, timeouts and retries for one run's requests to a portal. */
export function createJsonFetcher(policy: FetchPolicy): JsonFetcher {
  const spacingMs = 1000 / policy.requestsPerSecond;
  let nextSlot = 0;
  let sent = 0;
  const waitForSlot = async () => {
    const now = Date.now();
    const delay = nextSlot - now;
    nextSlot = Math.max(now, nextSlot) + spacingMs;
    if (delay > 0) await policy.sleep(delay);
  };

  /** Waits out a retry's delay, with a line every minute of a long one: silence for an hour looks like a hang. */
  async function waitBeforeRetry(host: string, problem: string, delayMs: number, retryAfterMs: number | undefined, retry: number): Promise<void> {
    policy.report(
      `${host}: ${problem}, waiting ${formatWait(delayMs)}${describeRetryAfter(retryAfterMs, delayMs)}, then retry ${retry} of ${policy.maxRetries}`,
    );
    for (let left = delayMs; ;) {
      const step = Math.min(left, 60_000);
      await policy.sleep(step);
      left -= step;
      if (left <= 0) return;
      policy.report(`waiting ${formatWait(left)} more for ${host}${retryAfterMs === undefined ? '' : ' (Retry-After)'}`);
    }
  }

  async function getJson(url: string, headers: Record<string, string> = {}): Promise<unknown> {
    const host = new URL(url).host;
    let lastProblem = '';
    // Why the last attempt failed decides how long the next one waits.
    let delayMs = 0;
    let retryAfterMs: number | undefined;
    for (let attempt = 0; attempt <= policy.maxRetries; attempt += 1) {
      if (attempt > 0) await waitBeforeRetry(host, lastProblem, delayMs, retryAfterMs, attempt);
      await waitForSlot();
      sent += 1;
      let response: Response;
      let text: string;
      try {
        const timeout = AbortSignal.timeout(policy.timeoutMs);
        const signal = policy.signal ? AbortSignal.any([policy.signal, timeout]) : timeout;
        response = await fetch(url, { headers: { accept: 'application/json', ...headers }, signal, redirect: 'follow' });
        text = await readCapped(response, policy.maxBodyBytes, url);
      } catch (error) {
        if (policy.signal?.aborted) throw policy.signal.reason;
        if (error instanceof CatalogError) throw error;
        const timedOut = (error as Error).name === 'TimeoutError';
        lastProblem = timedOut ? `no answer within ${formatWait(policy.timeoutMs)}` : describeNetworkError(error as Error);
        delayMs = backoffDelay(attempt, policy.baseDelayMs, policy.maxDelayMs);
        retryAfterMs = undefined;
        continue;
      }
      if (response.status === 429 || response.status >= 500) {
        lastProblem = `HTTP ${response.status}: ${describeBody(parseBody(text))}`;
        retryAfterMs = parseRetryAfter(response.headers.get('retry-after'), Date.now());
        delayMs = retryAfterMs === undefined ? backoffDelay(attempt, policy.baseDelayMs, policy.maxDelayMs) : Math.min(retryAfterMs, policy.maxRetryWaitMs);
        continue;
      }
      const body = tryParse(text);
      if (response.status >= 400) throw new CatalogHttpError(url, response.status, body === NOT_JSON ? text : body);
      if (body === NOT_JSON) {
        const type = response.headers.get('content-type') ?? 'no content type';
        throw new CatalogError(`${url} answered HTTP ${response.status} with a body that is not JSON (${type}): ${describeBody(text.trim())}`);
      }
      return body;
    }
    throw new CatalogError(`${url} failed after ${policy.maxRetries + 1} attempts; last: ${lastProblem}`);
  }
  return { getJson, requests: () => sent, report: policy.report };
}
