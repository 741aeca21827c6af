import fs from 'node:fs';
import fsp from 'node:fs/promises';
import { once } from 'node:events';
import { Readable, Transform } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import type { ReadableStream as WebReadableStream } from 'node:stream/web';
import { createCopyHasher, type CopyHasher } from '../lib/merkle.js';
import { printable } from '../lib/printable.js';
import { parseRetryAfter } from '../lib/retry-after.js';
import type { RateLimiter } from './rate-limiter.js';

export type FetchLike = (url: string, init: { headers: Record<string, string>; signal: AbortSignal; redirect?: RequestRedirect }) => Promise<Response>;

export interface DownloadRequest {
  url: string;
  /** Where bytes accumulate until the file is complete and checked; kept across restarts, left in place on success. */
  partial: string;
  expectedBytes: number | null;
  expectedSha256: string | null;
  /** No more than this is ever written: the expected size when known, else the allocation's reserved estimate. */
  maxBytes: number;
  /** Free space the transfer must leave on the disk. */
  reserveBytes: number;
  freeBytes(): Promise<number>;
  signal: AbortSignal;
  onProgress(bytesDone: number): void;
  rateLimiter?: RateLimiter;
  /** Default: the global fetch. An Error with `code: 'REFUSED_DESTINATION'` means the URL may not be fetched. */
  fetch?: FetchLike;
  /** Sent with every request (e.g. User-Agent). */
  headers?: Record<string, string>;
  /** Who answers, as failure reasons name it: "source" unless told. */
  answerer?: string;
}

export type FailureKind =
  | 'source_unreachable' // network error, DNS, timeout, cut transfer
  | 'source_error' // another non-2xx answer, 5xx included
  | 'source_busy' // 429, or 503 with Retry-After
  | 'source_gone' // 404 or 410
  | 'size_mismatch'
  | 'checksum_mismatch'
  | 'oversize'
  | 'disk_full'
  | 'refused_destination';

export type DownloadOutcome =
  /** `merkleRoot` and `pieceLayer`: of the bytes received, as `createCopyHasher` gives them. */
  | { ok: true; sha256: string; bytes: number; merkleRoot: string; pieceLayer: Buffer; partial: string }
  | { ok: false; kind: FailureKind; reason: string; retryable: boolean; status?: number; retryAfterSeconds?: number };

type Failure = Extract<DownloadOutcome, { ok: false }>;

/** Free space is measured again at least this often while writing. */
const FREE_SPACE_CHECK_BYTES = 8 * 1024 * 1024;
const RETRY_AFTER_CAP_SECONDS = 86_400;
const PROBLEM_MAX_BYTES = 4096;
const PROBLEM_WAIT_MS = 2_000;
/** Partials being written by this process: one writer per partial. */
const writing = new Set<string>();

/** Stops a transfer from inside the stream, before the chunk that would break the rule is written. */
class TransferStopped extends Error {
  constructor(
    readonly kind: 'oversize' | 'disk_full',
    message: string,
  ) {
    super(message);
  }
}

/**
 * Downloads `url` into `partial`, streaming, hashing as bytes arrive, and never writing more than
 * `maxBytes` nor filling the disk past `reserveBytes`. A partial left by an interruption is resumed
 * with Range (If-Range guards against a changed source). A partial that broke a rule (size,
 * checksum, space) is deleted; one cut by the network is kept for the next attempt. Throws only when
 * `signal` aborts (the partial stays) or another download in this process writes the same partial.
 */
export async function download(request: DownloadRequest): Promise<DownloadOutcome> {
  if (writing.has(request.partial)) throw new Error(`another download is writing ${request.partial}`);
  writing.add(request.partial);
  try {
    return await attempt(request, true);
  } finally {
    writing.delete(request.partial);
  }
}

async function attempt(request: DownloadRequest, mayResume: boolean): Promise<DownloadOutcome> {
  const limit = Math.min(request.maxBytes, request.expectedBytes ?? Infinity);
  const free = await request.freeBytes();
  if (free < request.reserveBytes) return discard(request, fail('disk_full', `only ${free} bytes free, ${request.reserveBytes} must stay free`));
  const offset = mayResume ? await resumableOffset(request, limit) : await startOver(request);
  // A resumed partial's bytes are hashed first: the tree covers the whole file.
  const hash = createCopyHasher();
  if (offset > 0) await hashFile(request.partial, hash);
  const validator = offset > 0 ? (await readMeta(request.partial))?.validator : null;
  const headers: Record<string, string> = {
    // A length the source announces must count the bytes we store.
    'accept-encoding': 'identity',
    ...request.headers,
    ...(offset > 0 ? { range: `bytes=${offset}-`, ...(validator ? { 'if-range': validator } : {}) } : {}),
  };
  let response: Response;
  try {
    response = await (request.fetch ?? fetch)(request.url, { headers, signal: request.signal, redirect: 'follow' });
  } catch (error) {
    if (request.signal.aborted) throw error;
    if (readErrorCode(error) === 'REFUSED_DESTINATION') return fail('refused_destination', describeError(error));
    return fail('source_unreachable', `network error: ${describeError(error)}`);
  }
  return handleAnswer(request, response, hash, offset, limit);
}

async function handleAnswer(request: DownloadRequest, response: Response, hash: CopyHasher, offset: number, limit: number): Promise<DownloadOutcome> {
  const { status } = response;
  if (status === 416 && offset > 0) {
    await dropBody(response);
    if (request.expectedBytes === offset) return finish(request, hash, offset);
    return restart(request);
  }
  if (status !== 200 && status !== 206) return failStatus(response, request.answerer ?? 'source', await readProblem(response));
  if (status === 206 && !rangeStartsAt(response, offset)) {
    await dropBody(response);
    if (offset > 0) return restart(request);
    return fail('source_error', `${request.answerer ?? 'source'} answered a range we did not ask for`, { status });
  }
  if (status === 200 && offset > 0) {
    // The source ignored the range or changed since (If-Range): this answer starts over.
    [hash, offset] = [createCopyHasher(), await startOver(request)];
  }
  const announced = readAnnouncedTotal(response, offset);
  if (announced !== null && request.expectedBytes !== null && announced !== request.expectedBytes) {
    await dropBody(response);
    return discard(request, fail('size_mismatch', `source announced ${announced} bytes, expected ${request.expectedBytes}`, { status }));
  }
  if (announced !== null && announced > limit) {
    await dropBody(response);
    return discard(request, fail('oversize', `source announced ${announced} bytes, more than the ${limit} allowed`, { status }));
  }
  return receive(request, response, hash, offset, Math.min(limit, announced ?? Infinity));
}

/** The partial no longer fits the source: one fresh attempt, which sends no Range and so cannot come back here. */
async function restart(request: DownloadRequest): Promise<DownloadOutcome> {
  return attempt(request, false);
}

async function receive(request: DownloadRequest, response: Response, hash: CopyHasher, offset: number, limit: number): Promise<DownloadOutcome> {
  await writeMeta(request.partial, { url: request.url, validator: response.headers.get('etag') ?? response.headers.get('last-modified') });
  // A fresh start creates the file exclusively: a second writer fails here instead of interleaving.
  const file = await fsp.open(request.partial, offset > 0 ? 'a' : 'wx', 0o600);
  const body = response.body ? Readable.fromWeb(response.body as WebReadableStream<Uint8Array>) : Readable.from([]);
  const output = file.createWriteStream();
  const meter = createMeter(request, hash, offset, limit, () => meter.bytes() - offset - output.bytesWritten);
  const failed = await pipeline(body, meter.stream, output, { signal: request.signal }).then(
    () => null,
    (error: unknown) => ({ error }),
  );
  // A write already under way when the transfer failed ends before anyone touches the partial again.
  if (!output.closed) await once(output, 'close').catch(() => undefined);
  if (failed === null) return finish(request, hash, meter.bytes());
  const { error } = failed;
  if (request.signal.aborted) throw error;
  if (error instanceof TransferStopped) return discard(request, fail(error.kind, error.message, { status: response.status }));
  const code = readErrorCode(error);
  if (code === 'ENOSPC' || code === 'EDQUOT') return discard(request, fail('disk_full', `disk full: ${describeError(error)}`, { status: response.status }));
  // The partial file stays: the next attempt resumes from where this one stopped.
  return fail('source_unreachable', `transfer interrupted: ${describeError(error)}`, { status: response.status });
}

/**
 * Counts, hashes and paces the bytes, and admits a chunk only if it keeps the size and the disk within
 * bounds. Free space is what the disk reports less what was admitted but not yet written (`unwritten`).
 */
function createMeter(request: DownloadRequest, hash: CopyHasher, offset: number, limit: number, unwritten: () => number) {
  let done = offset;
  let free = 0;
  let sinceCheck = Infinity;
  const admit = async (length: number) => {
    if (done + length > limit) throw new TransferStopped('oversize', `the source sent more than the ${limit} bytes allowed`);
    if (sinceCheck + length > FREE_SPACE_CHECK_BYTES || free - length < request.reserveBytes) {
      [free, sinceCheck] = [(await request.freeBytes()) - unwritten(), 0];
    }
    if (free - length < request.reserveBytes) throw new TransferStopped('disk_full', `writing on would leave less than ${request.reserveBytes} bytes free`);
    [free, sinceCheck] = [free - length, sinceCheck + length];
  };
  const stream = new Transform({
    transform(chunk: Buffer, _encoding, callback) {
      admit(chunk.length).then(() => {
        hash.update(chunk);
        done += chunk.length;
        request.onProgress(done);
        const wait = request.rateLimiter?.take(chunk.length) ?? 0;
        if (wait > 0) setTimeout(() => callback(null, chunk), wait);
        else callback(null, chunk);
      }, callback);
    },
  });
  return { stream, bytes: () => done };
}

async function finish(request: DownloadRequest, hash: CopyHasher, bytes: number): Promise<DownloadOutcome> {
  const { sha256, merkleRoot, pieceLayer } = hash.digest();
  if (request.expectedBytes !== null && bytes !== request.expectedBytes) {
    return discard(request, fail('size_mismatch', `size mismatch: got ${bytes} bytes, expected ${request.expectedBytes}`));
  }
  if (request.expectedSha256 !== null && sha256 !== request.expectedSha256.toLowerCase()) {
    return discard(request, fail('checksum_mismatch', `checksum mismatch: got ${sha256}, expected ${request.expectedSha256}`));
  }
  return { ok: true, sha256, bytes, merkleRoot, pieceLayer, partial: request.partial };
}

function failStatus(response: Response, answerer: string, problem: string): Failure {
  const { status } = response;
  const reason = `${answerer} answered ${status}${response.statusText ? ` ${response.statusText}` : ''}${problem}`;
  if (status === 404 || status === 410) return fail('source_gone', reason, { status });
  const retryAfterSeconds = status === 429 || status === 503 ? retryAfterSecondsOf(response.headers.get('retry-after')) : undefined;
  if (status === 429 || (status === 503 && retryAfterSeconds !== undefined)) {
    return fail('source_busy', reason, { status, ...(retryAfterSeconds !== undefined ? { retryAfterSeconds } : {}) });
  }
  return fail('source_error', reason, { status });
}

/** Worth another try later: the network, a busy source, a 5xx. Reasons are made safe to print. */
function fail(kind: FailureKind, reason: string, extra: { status?: number; retryAfterSeconds?: number } = {}): Failure {
  const retryable = kind === 'source_unreachable' || kind === 'source_busy' || (kind === 'source_error' && (extra.status ?? 0) >= 500);
  return { ok: false, kind, reason: printable(reason).slice(0, 500), retryable, ...extra };
}

/** Seconds from a Retry-After header (delta-seconds or an HTTP-date), capped at a day. */

/** The whole file's size as the answer announces it; null when unknown or counted in encoded bytes. */
function readAnnouncedTotal(response: Response, offset: number): number | null {
  const encoding = response.headers.get('content-encoding');
  if (encoding && encoding.trim().toLowerCase() !== 'identity') return null;
  const total = response.status === 206 ? /\/(\d+)\s*$/.exec(response.headers.get('content-range') ?? '') : null;
  if (total) return Number(total[1]);
  const length = response.headers.get('content-length')?.trim() ?? '';
  return /^\d+$/.test(length) ? offset + Number(length) : null;
}

/** The size of a partial file for the same URL that is within bounds, or 0 after removing it. */
async function resumableOffset(request: DownloadRequest, limit: number): Promise<number> {
  const stat = await fsp.stat(request.partial).catch(() => null);
  const meta = stat && stat.size > 0 ? await readMeta(request.partial) : null;
  if (stat && meta?.url === request.url && stat.size <= limit) return stat.size;
  return startOver(request);
}

async function startOver(request: DownloadRequest): Promise<0> {
  await fsp.rm(request.partial, { force: true });
  await fsp.rm(metaPath(request.partial), { force: true });
  return 0;
}

async function discard(request: DownloadRequest, failure: Failure): Promise<Failure> {
  await startOver(request);
  return failure;
}

/**
 * ` (CODE: detail)` of a small JSON error answer, such as the control plane's `{detail, code}`, else
 * ''. At most PROBLEM_MAX_BYTES are read, for at most PROBLEM_WAIT_MS: the body is then closed.
 */
async function readProblem(response: Response): Promise<string> {
  const reader = /\bjson\b/i.test(response.headers.get('content-type') ?? '') ? response.body?.getReader() : undefined;
  if (!reader) return dropBody(response).then(() => '');
  const pieces: Uint8Array[] = [];
  let timer: NodeJS.Timeout | undefined;
  const late = new Promise<'late'>((resolve) => (timer = setTimeout(() => resolve('late'), PROBLEM_WAIT_MS)));
  try {
    let bytes = 0;
    while (bytes < PROBLEM_MAX_BYTES) {
      const read = await Promise.race([reader.read(), late]);
      if (read === 'late' || read.done) break;
      pieces.push(read.value);
      bytes += read.value.length;
    }
    const { code, detail } = JSON.parse(Buffer.concat(pieces).toString('utf8')) as { code?: unknown; detail?: unknown };
    return typeof code === 'string' ? ` (${code}${typeof detail === 'string' ? `: ${detail}` : ''})` : '';
  } catch {
    return '';
  } finally {
    clearTimeout(timer);
    await reader.cancel().catch(() => undefined);
  }
}

/** Closes an answer's body unread; a body the source already broke off needs no closing. */
async function dropBody(response: Response): Promise<void> {
  await response.body?.cancel().catch(() => undefined);
}

function rangeStartsAt(response: Response, offset: number): boolean {
  const match = /^bytes (\d+)-/.exec(response.headers.get('content-range') ?? '');
  return match !== null && Number(match[1]) === offset;
}

function readErrorCode(error: unknown): unknown {
  const { code, cause } = (error ?? {}) as { code?: unknown; cause?: { code?: unknown } };
  return code ?? cause?.code;
}

function describeError(error: unknown): string {
  if (!(error instanceof Error)) return String(error);
  return error.cause instanceof Error ? `${error.message}: ${error.cause.message}` : error.message;
}

async function hashFile(file: string, hash: CopyHasher): Promise<void> {
  for await (const chunk of fs.createReadStream(file)) hash.update(chunk as Buffer);
}

/** What is kept next to a partial file so a resumed request can ask "only if unchanged" (If-Range). */
interface PartialMeta {
  url: string;
  validator: string | null;
}

const metaPath = (partial: string) => `${partial}.json`;

async function readMeta(partial: string): Promise<PartialMeta | null> {
  try {
    return JSON.parse(await fsp.readFile(metaPath(partial), 'utf8')) as PartialMeta;
  } catch {
    return null;
  }
}

async function writeMeta(partial: string, meta: PartialMeta): Promise<void> {
  await fsp.writeFile(metaPath(partial), JSON.stringify(meta), { mode: 0o600 });
}

/** The source's Retry-After in whole seconds, capped (a pause longer than a day is not believed). */
function retryAfterSecondsOf(value: string | null): number | undefined {
  const ms = parseRetryAfter(value, Date.now());
  return ms === undefined ? undefined : Math.min(RETRY_AFTER_CAP_SECONDS, Math.ceil(ms / 1000));
}
