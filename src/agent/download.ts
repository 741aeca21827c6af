import crypto from 'node:crypto';
import fs from 'node:fs';
import fsp from 'node:fs/promises';
import { Readable, Transform } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import type { ReadableStream as WebReadableStream } from 'node:stream/web';
import type { RateLimiter } from './rate-limiter.js';

export interface DownloadRequest {
  url: string;
  /** Where the finished file goes. */
  destination: string;
  /** Where bytes accumulate until the file is complete and checked; kept across restarts. */
  partial: string;
  expectedBytes: number | null;
  expectedSha256: string | null;
  signal: AbortSignal;
  onProgress(bytesDone: number): void;
  rateLimiter?: RateLimiter;
}

export type DownloadOutcome =
  | { ok: true; sha256: string; bytes: number }
  /** `gone`: the source answered 404/410; `retryable`: worth another try later (network, 5xx, 429). */
  | { ok: false; reason: string; gone: boolean; retryable: boolean; status?: number };

/** What is kept next to a partial file so a resumed request can ask "only if unchanged" (If-Range). */
interface PartialMeta {
  url: string;
  validator: string | null;
}

/**
 * Downloads `url` to disk, streaming: the file is never held in memory. A partial file left by an
 * interruption or a restart is resumed with an HTTP Range request (If-Range guards against a
 * changed source); sha256 is computed while bytes arrive (the partial's bytes are hashed first).
 * Redirects are followed. Size and checksum are checked before the file is moved into place.
 */
export async function download(request: DownloadRequest): Promise<DownloadOutcome> {
  const hash = crypto.createHash('sha256');
  let offset = await resumableOffset(request);
  if (offset > 0) await hashFile(request.partial, hash);
  const meta = offset > 0 ? await readMeta(request.partial) : null;

  let response: Response;
  try {
    response = await fetch(request.url, {
      redirect: 'follow',
      signal: request.signal,
      headers: offset > 0 ? { range: `bytes=${offset}-`, ...(meta?.validator ? { 'if-range': meta.validator } : {}) } : {},
    });
  } catch (error) {
    if (request.signal.aborted) throw error;
    return { ok: false, reason: `network error: ${(error as Error).message}`, gone: false, retryable: true };
  }

  if (response.status === 416 && request.expectedBytes === offset) return finish(request, hash, offset);
  if (response.status === 404 || response.status === 410) {
    await response.body?.cancel();
    return { ok: false, reason: `source answered ${response.status}`, gone: true, retryable: false, status: response.status };
  }
  if (response.status !== 200 && response.status !== 206) {
    await response.body?.cancel();
    const retryable = response.status >= 500 || response.status === 429 || response.status === 416;
    if (response.status === 416) await fsp.rm(request.partial, { force: true });
    return { ok: false, reason: `source answered ${response.status}`, gone: false, retryable, status: response.status };
  }
  if (response.status === 206 && !rangeStartsAt(response, offset)) {
    await response.body?.cancel();
    await fsp.rm(request.partial, { force: true });
    return { ok: false, reason: 'source answered a range we did not ask for', gone: false, retryable: true };
  }
  if (response.status === 200 && offset > 0) {
    // The source ignored the range or changed since (If-Range): start over.
    offset = 0;
    hash.destroy();
    return restart(request, response);
  }
  return receive(request, response, hash, offset);
}

async function restart(request: DownloadRequest, response: Response): Promise<DownloadOutcome> {
  return receive(request, response, crypto.createHash('sha256'), 0);
}

async function receive(request: DownloadRequest, response: Response, hash: crypto.Hash, offset: number): Promise<DownloadOutcome> {
  await writeMeta(request.partial, { url: request.url, validator: response.headers.get('etag') ?? response.headers.get('last-modified') });
  let done = offset;
  const counter = new Transform({
    transform(chunk: Buffer, _encoding, callback) {
      hash.update(chunk);
      done += chunk.length;
      request.onProgress(done);
      const wait = request.rateLimiter?.take(chunk.length) ?? 0;
      if (wait > 0) setTimeout(() => callback(null, chunk), wait);
      else callback(null, chunk);
    },
  });
  try {
    if (!response.body) throw new Error('empty response body');
    await pipeline(
      Readable.fromWeb(response.body as WebReadableStream<Uint8Array>),
      counter,
      fs.createWriteStream(request.partial, { flags: offset > 0 ? 'a' : 'w' }),
      { signal: request.signal },
    );
  } catch (error) {
    if (request.signal.aborted) throw error;
    // The partial file stays: the next attempt resumes from where this one stopped.
    return { ok: false, reason: `transfer interrupted: ${(error as Error).message}`, gone: false, retryable: true };
  }
  return finish(request, hash, done);
}

async function finish(request: DownloadRequest, hash: crypto.Hash, bytes: number): Promise<DownloadOutcome> {
  const sha256 = hash.digest('hex');
  if (request.expectedBytes !== null && bytes !== request.expectedBytes) {
    await fsp.rm(request.partial, { force: true });
    return { ok: false, reason: `size mismatch: got ${bytes} bytes, expected ${request.expectedBytes}`, gone: false, retryable: false };
  }
  if (request.expectedSha256 !== null && sha256 !== request.expectedSha256.toLowerCase()) {
    await fsp.rm(request.partial, { force: true });
    return { ok: false, reason: `checksum mismatch: got ${sha256}, expected ${request.expectedSha256}`, gone: false, retryable: false };
  }
  await fsp.rename(request.partial, request.destination);
  await fsp.rm(metaPath(request.partial), { force: true });
  return { ok: true, sha256, bytes };
}

/** The size of a partial file for the same URL, or 0 to start from scratch. */
async function resumableOffset(request: DownloadRequest): Promise<number> {
  const stat = await fsp.stat(request.partial).catch(() => null);
  if (!stat || stat.size === 0) return 0;
  const meta = await readMeta(request.partial);
  if (meta?.url !== request.url) {
    await fsp.rm(request.partial, { force: true });
    return 0;
  }
  return stat.size;
}

function rangeStartsAt(response: Response, offset: number): boolean {
  const match = /^bytes (\d+)-/.exec(response.headers.get('content-range') ?? '');
  return match !== null && Number(match[1]) === offset;
}

async function hashFile(file: string, hash: crypto.Hash): Promise<void> {
  for await (const chunk of fs.createReadStream(file)) hash.update(chunk as Buffer);
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
  await fsp.writeFile(metaPath(partial), JSON.stringify(meta));
}
