import crypto from 'node:crypto';
import fs from 'node:fs';
import fsp from 'node:fs/promises';
import { backoffDelay, pause, withJitter } from '../lib/backoff.js';
import { printable } from '../lib/printable.js';
import { describeRefusal, readError, type ControlPlaneError, type RestoreClient } from './restore-client.js';

export interface RestoreRequest {
  assetId: string;
  /** The file appears here only once its sha256 matched. */
  destination: string;
  /** Where bytes accumulate; `<partial>.json` keeps what a resume needs. Both go once the file is in place. */
  partial: string;
  /** Expected checksum; null: the relay's ETag, and the request never goes to the source (whose ETag is no checksum). */
  sha256: string | null;
  /** More bytes than this is a mismatch, stopped early (a source that sends without end); null: no bound known. */
  maxBytes: number | null;
}

/** How hard to try: cut connections are resumed with backoff, NO_HOLDER_ONLINE waited out a few times. */
export interface RestorePolicy {
  cutRetries: number;
  retryBaseMs: number;
  retryMaxMs: number;
  busyTries: number;
  maxRetryAfterMs: number;
}

export const DEFAULT_POLICY: RestorePolicy = { cutRetries: 5, retryBaseMs: 1000, retryMaxMs: 30_000, busyTries: 3, maxRetryAfterMs: 300_000 };

export interface DownloadEvents {
  /** A response with a body starts (or resumes at `done`); `total` when the answer announces it. */
  begin(total: number | null, done: number, via: string): void;
  progress(done: number): void;
  notice(line: string): void;
}

export type RestoreOutcome =
  | { ok: true; sha256: string; bytes: number }
  /** `fatal`: no other asset will fare better (the token is refused, the disk fails): stop the run. `code`: the server's, if it refused. */
  | { ok: false; reason: string; fatal: boolean; code?: string };

type Attempt =
  | { kind: 'done'; sha256: string; bytes: number }
  | { kind: 'again' }
  | { kind: 'cut'; reason: string }
  | { kind: 'mismatch'; reason: string }
  | { kind: 'busy'; error: ControlPlaneError }
  | { kind: 'refused'; reason: string; fatal: boolean; code?: string };

interface RunState {
  preferSource: boolean;
  /** The hash of the partial's first `bytes` bytes, kept across attempts so a resume does not re-read them. */
  hashed: { hash: crypto.Hash; bytes: number } | null;
}

/** Stops the stream when the bytes pass `maxBytes`. */
class TooLong extends Error {}

/**
 * Restores one asset: resumes a partial left by an earlier run (Range, If-Range), hashes the
 * partial's bytes then the new ones, and renames it into place only when the sha256 matches. A cut
 * connection is resumed with backoff; a mismatch starts over once without the source; a
 * NO_HOLDER_ONLINE is waited out (Retry-After) a few times. Throws only when `signal` aborts.
 */
export async function restoreAsset(
  client: RestoreClient,
  request: RestoreRequest,
  events: DownloadEvents,
  signal: AbortSignal,
  policy: RestorePolicy,
): Promise<RestoreOutcome> {
  const state: RunState = { preferSource: request.sha256 !== null, hashed: null };
  let [cuts, busy, mismatches] = [0, 0, 0];
  for (;;) {
    const result = await attempt(client, request, state, events, signal);
    if (signal.aborted) throw signal.reason;
    if (result.kind === 'done') return { ok: true, sha256: result.sha256, bytes: result.bytes };
    if (result.kind === 'refused') return { ok: false, reason: result.reason, fatal: result.fatal, ...(result.code ? { code: result.code } : {}) };
    if (result.kind === 'mismatch') {
      await discard(request);
      state.hashed = null;
      if ((mismatches += 1) > 1) return { ok: false, reason: result.reason, fatal: false };
      events.notice(`${result.reason}; starting over through the control plane (prefer_source=false)`);
      state.preferSource = false;
    } else if (result.kind === 'cut') {
      if ((cuts += 1) > policy.cutRetries) return { ok: false, reason: `${result.reason} (gave up after ${policy.cutRetries} resumes)`, fatal: false };
      const delay = withJitter(backoffDelay(cuts - 1, policy.retryBaseMs, policy.retryMaxMs));
      events.notice(`${result.reason}; resuming in ${(delay / 1000).toFixed(1)} s (${cuts}/${policy.cutRetries})`);
      await pause(delay, signal);
    } else if (result.kind === 'busy') {
      const described = describeRefusal(result.error, client.origin, client.hasToken);
      if ((busy += 1) >= policy.busyTries) return { ok: false, reason: `${described} (gave up after ${busy} tries)`, fatal: false, code: result.error.code };
      const delay = Math.min(policy.maxRetryAfterMs, result.error.retryAfterMs ?? 30_000);
      events.notice(`${described}; asking again in ${Math.ceil(delay / 1000)} s (${busy}/${policy.busyTries})`);
      await pause(delay, signal);
    }
  }
}

async function attempt(client: RestoreClient, request: RestoreRequest, state: RunState, events: DownloadEvents, signal: AbortSignal): Promise<Attempt> {
  const resume = await readResume(request);
  let response: Response;
  try {
    response = await client.content(request.assetId, { preferSource: state.preferSource, from: resume.offset, validator: resume.validator, signal });
  } catch (error) {
    if (signal.aborted) throw signal.reason;
    return { kind: 'cut', reason: `network error: ${describeError(error)}` };
  }
  const { status } = response;
  if (status === 200 || status === 206) return receive(client, request, state, response, resume.offset, events, signal);
  if (status === 416 && resume.offset > 0) {
    await response.body?.cancel().catch(() => undefined);
    return finishWithoutBody(request);
  }
  const error = await readError(response);
  if (status === 503 || status === 429) return { kind: 'busy', error };
  if (status >= 500) return { kind: 'cut', reason: `the control plane answered ${status} ${error.code}` };
  return { kind: 'refused', reason: describeRefusal(error, client.origin, client.hasToken), fatal: status === 401 || status === 403, code: error.code };
}

async function receive(
  client: RestoreClient,
  request: RestoreRequest,
  state: RunState,
  response: Response,
  requested: number,
  events: DownloadEvents,
  signal: AbortSignal,
): Promise<Attempt> {
  const offset = response.status === 206 ? requested : 0;
  if (response.status === 206 && rangeStart(response) !== requested) {
    await response.body?.cancel().catch(() => undefined);
    await discard(request);
    return { kind: 'again' };
  }
  if (requested > 0 && offset === 0) events.notice('the server sent the whole file (it changed, or ignores ranges): starting over');
  const expected = request.sha256?.toLowerCase() ?? checksumFromEtag(response, client.origin);
  if (expected === null) {
    await response.body?.cancel().catch(() => undefined);
    return { kind: 'refused', reason: 'no sha256 to check against: the asset has none and the control plane sent no ETag', fatal: false };
  }
  const hash = offset > 0 ? await hashOfPartial(request.partial, state, offset) : crypto.createHash('sha256');
  await writeResume(request, response);
  const announced = announcedTotal(response, offset);
  const limit = Math.min(request.maxBytes ?? Infinity, announced ?? Infinity);
  events.begin(announced ?? request.maxBytes, offset, response.redirected ? `the source ${printable(new URL(response.url).host)}` : 'the control plane');
  const written = await writeBody(response, request.partial, offset, limit, hash, events);
  state.hashed = { hash, bytes: written.done };
  const { done, failed } = written;
  if (signal.aborted) throw signal.reason;
  if (failed instanceof TooLong) return { kind: 'mismatch', reason: `more than the ${limit} bytes expected arrived` };
  if (failed !== null && isDiskError(failed)) return { kind: 'refused', reason: `cannot write ${request.partial}: ${describeError(failed)}`, fatal: true };
  if (failed !== null) return { kind: 'cut', reason: `connection cut after ${done} bytes: ${describeError(failed)}` };
  if (announced !== null && done < announced) return { kind: 'cut', reason: `connection cut after ${done} of ${announced} bytes` };
  return settle(request, hash.digest('hex'), expected, done);
}

/**
 * Appends the body to the partial chunk by chunk, each written before the next is read and hashed
 * once written: when the connection breaks, every byte received is on disk and counted.
 */
async function writeBody(response: Response, partial: string, offset: number, limit: number, hash: crypto.Hash, events: DownloadEvents) {
  const output = await fsp.open(partial, offset > 0 ? 'a' : 'w');
  let [done, failed] = [offset, null as unknown];
  try {
    for await (const chunk of (response.body ?? []) as AsyncIterable<Uint8Array>) {
      if (done + chunk.length > limit) throw new TooLong();
      for (let at = 0; at < chunk.length;) at += (await output.write(chunk, at)).bytesWritten;
      hash.update(chunk);
      done += chunk.length;
      events.progress(done);
    }
  } catch (error) {
    failed = error;
  } finally {
    await output.close();
  }
  return { done, failed };
}

/** A 416 to a resume: the partial may hold the whole file already. */
async function finishWithoutBody(request: RestoreRequest): Promise<Attempt> {
  const stat = await fsp.stat(request.partial);
  if (request.sha256 === null) {
    await discard(request);
    return { kind: 'again' };
  }
  return settle(request, await sha256OfFile(request.partial), request.sha256.toLowerCase(), stat.size);
}

async function settle(request: RestoreRequest, actual: string, expected: string, bytes: number): Promise<Attempt> {
  if (actual !== expected) return { kind: 'mismatch', reason: `sha256 mismatch for ${printable(request.assetId)}: got ${actual}, expected ${expected}` };
  await fsp.rename(request.partial, request.destination);
  await fsp.rm(resumePath(request), { force: true });
  return { kind: 'done', sha256: actual, bytes };
}

async function hashOfPartial(partial: string, state: RunState, offset: number): Promise<crypto.Hash> {
  if (state.hashed?.bytes === offset) return state.hashed.hash;
  const hash = crypto.createHash('sha256');
  for await (const chunk of fs.createReadStream(partial, { end: offset - 1 })) hash.update(chunk as Buffer);
  return hash;
}

/** The sha256 of a whole file, streamed. */
export async function sha256OfFile(file: string): Promise<string> {
  const hash = crypto.createHash('sha256');
  for await (const chunk of fs.createReadStream(file)) hash.update(chunk as Buffer);
  return hash.digest('hex');
}

/** The size of the file at `file` when it holds the asset (its sha256 matches), else null. */
export async function verifiedSize(file: string, sha256: string | null): Promise<number | null> {
  const stat = sha256 === null ? null : await fsp.stat(file).catch(() => null);
  if (!stat?.isFile()) return null;
  return (await sha256OfFile(file)) === sha256!.toLowerCase() ? stat.size : null;
}

/** The relay's ETag is the file's sha256; a source's (after a redirect) is not. */
function checksumFromEtag(response: Response, apiOrigin: string): string | null {
  if (response.redirected && new URL(response.url).origin !== apiOrigin) return null;
  const match = /^"([0-9a-fA-F]{64})"$/.exec(response.headers.get('etag')?.trim() ?? '');
  return match ? match[1]!.toLowerCase() : null;
}

function rangeStart(response: Response): number | null {
  const match = /^bytes (\d+)-/.exec(response.headers.get('content-range') ?? '');
  return match ? Number(match[1]) : null;
}

function announcedTotal(response: Response, offset: number): number | null {
  const total = response.status === 206 ? /\/(\d+)\s*$/.exec(response.headers.get('content-range') ?? '') : null;
  if (total) return Number(total[1]);
  const length = response.headers.get('content-length')?.trim() ?? '';
  return /^\d+$/.test(length) ? offset + Number(length) : null;
}

/** What is kept beside a partial: whose bytes they are, and the validator to resume them with (If-Range). */
interface ResumeRecord {
  asset_id: string;
  validator: string | null;
}

const resumePath = (request: RestoreRequest) => `${request.partial}.json`;

/** The partial's size if it holds bytes of this asset, else 0 after removing it. */
async function readResume(request: RestoreRequest): Promise<{ offset: number; validator: string | null }> {
  const stat = await fsp.stat(request.partial).catch(() => null);
  const record = stat && stat.size > 0 ? await readRecord(resumePath(request)) : null;
  if (stat && record?.asset_id === request.assetId) return { offset: stat.size, validator: record.validator };
  await discard(request);
  return { offset: 0, validator: null };
}

async function readRecord(file: string): Promise<ResumeRecord | null> {
  try {
    return JSON.parse(await fsp.readFile(file, 'utf8')) as ResumeRecord;
  } catch {
    return null;
  }
}

async function writeResume(request: RestoreRequest, response: Response): Promise<void> {
  // If-Range takes a strong validator only: a weak ETag would make every resume start over.
  const etag = response.headers.get('etag');
  const validator = etag && !etag.startsWith('W/') ? etag : response.headers.get('last-modified');
  const record: ResumeRecord = { asset_id: request.assetId, validator };
  await fsp.writeFile(resumePath(request), JSON.stringify(record));
}

async function discard(request: RestoreRequest): Promise<void> {
  await fsp.rm(request.partial, { force: true });
  await fsp.rm(resumePath(request), { force: true });
}

function isDiskError(error: unknown): boolean {
  const code = (error as { code?: unknown }).code;
  return typeof code === 'string' && ['ENOSPC', 'EDQUOT', 'EACCES', 'EPERM', 'EROFS', 'EISDIR', 'ENOENT', 'EIO'].includes(code);
}

function describeError(error: unknown): string {
  if (!(error instanceof Error)) return printable(String(error));
  return printable(error.cause instanceof Error ? `${error.message}: ${error.cause.message}` : error.message);
}
