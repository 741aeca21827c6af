/**
 * Polite JSON fetching from public portals: a request rate, a per-request timeout, and retries with
 * exponential backoff on 429/5xx/timeouts honouring Retry-After. Other answers fail at once with
 * the status and the body, for the source to explain.
 */
export interface FetchPolicy {
  requestsPerSecond: number;
  timeoutMs: number;
  /** Retries after the first attempt, for 429, 5xx, timeouts and network errors. */
  maxRetries: number;
  /** First backoff delay; doubles with each retry, capped by maxDelayMs. */
  baseDelayMs: number;
  maxDelayMs: number;
  /** Injected so tests never wait. */
  sleep: (ms: number) => Promise<void>;
  /** Aborts a request in flight and stops retrying (an import job being stopped). */
  signal?: AbortSignal;
}

export const sleepFor = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

/** A sleep that ends early, rejecting with the signal's reason, when the signal aborts. */
export function sleepUnlessAborted(signal: AbortSignal): (ms: number) => Promise<void> {
  return (ms) =>
    new Promise<void>((resolve, reject) => {
      if (signal.aborted) return reject(signal.reason);
      const onAbort = () => {
        clearTimeout(timer);
        reject(signal.reason);
      };
      const timer = setTimeout(() => {
        signal.removeEventListener('abort', onAbort);
        resolve();
      }, ms);
      signal.addEventListener('abort', onAbort, { once: true });
    });
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
}

export function describeBody(body: unknown): string {
  const text = typeof body === 'string' ? body : JSON.stringify(body);
  return text.length > 300 ? `${text.slice(0, 300)}…` : text;
}

/** Seconds or an HTTP date; undefined when absent or unreadable. */
export function parseRetryAfter(value: string | null, now: number): number | undefined {
  if (value === null || value.trim() === '') return undefined;
  if (/^\d+$/.test(value.trim())) return Number(value) * 1000;
  const date = Date.parse(value);
  return Number.isNaN(date) ? undefined : Math.max(0, date - now);
}

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

export function createJsonFetcher(policy: FetchPolicy): JsonFetcher {
  const spacingMs = 1000 / policy.requestsPerSecond;
  let nextSlot = 0;
  let sent = 0;
  const waitForSlot = async () => {
    const now = Date.now();
    const wait = nextSlot - now;
    nextSlot = Math.max(now, nextSlot) + spacingMs;
    if (wait > 0) await policy.sleep(wait);
  };
  const backoff = (attempt: number) => Math.min(policy.maxDelayMs, policy.baseDelayMs * 2 ** attempt);

  async function getJson(url: string, headers: Record<string, string> = {}): Promise<unknown> {
    let lastProblem = '';
    for (let attempt = 0; attempt <= policy.maxRetries; attempt += 1) {
      await waitForSlot();
      sent += 1;
      let response: Response;
      let text: string;
      try {
        const timeout = AbortSignal.timeout(policy.timeoutMs);
        const signal = policy.signal ? AbortSignal.any([policy.signal, timeout]) : timeout;
        response = await fetch(url, { headers: { accept: 'application/json', ...headers }, signal, redirect: 'follow' });
        text = await response.text();
      } catch (error) {
        if (policy.signal?.aborted) throw policy.signal.reason;
        const timedOut = (error as Error).name === 'TimeoutError';
        lastProblem = timedOut ? `no answer within ${policy.timeoutMs} ms` : `network error: ${(error as Error).message}`;
        if (attempt < policy.maxRetries) await policy.sleep(backoff(attempt));
        continue;
      }
      if (response.status === 429 || response.status >= 500) {
        lastProblem = `HTTP ${response.status}: ${describeBody(parseBody(text))}`;
        const retryAfter = parseRetryAfter(response.headers.get('retry-after'), Date.now());
        if (attempt < policy.maxRetries) await policy.sleep(Math.min(retryAfter ?? backoff(attempt), policy.maxDelayMs));
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
  return { getJson, requests: () => sent };
}
