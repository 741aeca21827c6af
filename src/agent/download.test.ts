import crypto from 'node:crypto';
import fs from 'node:fs';
import fsp from 'node:fs/promises';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { mountTmpfs, tmpfsUnavailable } from '../../test/tmpfs.js';
import { createCopyHasher } from '../lib/merkle.js';
import { download, type DownloadRequest } from './download.js';

const MIB = 1024 * 1024;
const TIB = 1024 ** 4;

type Handler = (request: http.IncomingMessage, response: http.ServerResponse) => void;

let dataDirectory: string;
let server: http.Server;
let origin: string;
let handle: Handler;
/** Every request the hostile source received. */
let seen: http.IncomingMessage[];

beforeEach(async () => {
  dataDirectory = await fsp.mkdtemp(path.join(os.tmpdir(), 'download-'));
  seen = [];
  server = http.createServer((request, response) => {
    seen.push(request);
    response.on('error', () => undefined);
    handle(request, response);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  origin = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
});

afterEach(async () => {
  server.closeAllConnections();
  await new Promise((resolve) => server.close(resolve));
  await fsp.rm(dataDirectory, { recursive: true, force: true });
});

const sha256 = (content: Buffer) => crypto.createHash('sha256').update(content).digest('hex');
/** What a download that received `content` reports: its digest, Merkle tree included. */
const receivedWhole = (content: Buffer) => {
  const hasher = createCopyHasher();
  hasher.update(content);
  return { ok: true, ...hasher.digest(), partial: partialOf() };
};
const partialOf = () => path.join(dataDirectory, 'asset.part');
const exists = (file: string) =>
  fsp.access(file).then(
    () => true,
    () => false,
  );

/** Remembers the largest size the partial ever had, looked at whenever the download calls back. */
function watchPartial(free: () => number = () => TIB) {
  let largest = 0;
  let progressCalls = 0;
  const look = () => {
    const size = fs.statSync(partialOf(), { throwIfNoEntry: false })?.size ?? 0;
    largest = Math.max(largest, size);
    return size;
  };
  return {
    onProgress: () => {
      progressCalls += 1;
      look();
    },
    freeBytes: async () => {
      look();
      return free();
    },
    look,
    largest: () => largest,
    progressCalls: () => progressCalls,
  };
}

function requestFor(url: string, overrides: Partial<DownloadRequest> = {}): DownloadRequest {
  const watch = watchPartial();
  return {
    url,
    partial: partialOf(),
    expectedBytes: null,
    expectedSha256: null,
    maxBytes: 64 * MIB,
    reserveBytes: 0,
    freeBytes: watch.freeBytes,
    signal: new AbortController().signal,
    onProgress: watch.onProgress,
    ...overrides,
  };
}

/** A body that never ends, 64 KiB at a time, for as long as the client reads. */
function sendEndless(response: http.ServerResponse, headers: http.OutgoingHttpHeaders = {}): void {
  response.writeHead(200, headers);
  const chunk = Buffer.alloc(64 * 1024, 7);
  const pump = () => {
    while (!response.destroyed && response.write(chunk));
    if (!response.destroyed) response.once('drain', pump);
  };
  pump();
}

/** A file with Range and If-Range, optionally cutting the connection after some bytes of a full transfer. */
function serveFile(content: Buffer, options: { cutAfter?: number; ignoreRange?: boolean } = {}): Handler {
  const etag = `"${sha256(content).slice(0, 16)}"`;
  return (request, response) => {
    const range = /^bytes=(\d+)-$/.exec(request.headers.range ?? '');
    if (range && !options.ignoreRange && request.headers['if-range'] === etag) {
      const start = Number(range[1]);
      response.writeHead(206, { etag, 'content-length': content.length - start, 'content-range': `bytes ${start}-${content.length - 1}/${content.length}` });
      return response.end(content.subarray(start));
    }
    response.writeHead(200, { etag, 'content-length': content.length });
    if (options.cutAfter === undefined) return response.end(content);
    response.write(content.subarray(0, options.cutAfter), () => response.socket?.destroy());
  };
}

describe('download from a hostile source', () => {
  it('downloads into the partial and leaves it there, sending the given headers', async () => {
    const content = crypto.randomBytes(3 * MIB + 17);
    handle = serveFile(content);
    const outcome = await download(
      requestFor(`${origin}/sst.nc`, { expectedBytes: content.length, expectedSha256: sha256(content), headers: { 'user-agent': 'dispatcher-agent/test' } }),
    );
    expect(outcome).toEqual(receivedWhole(content));
    expect(outcome).toMatchObject({ sha256: sha256(content), bytes: content.length });
    expect((await fsp.readFile(partialOf())).equals(content)).toBe(true);
    expect(seen[0]?.headers['user-agent']).toBe('dispatcher-agent/test');
    expect((await fsp.stat(partialOf())).mode & 0o777).toBe(0o600);
  });

  it('stops an endless body at the expected size: nothing past it is ever written', async () => {
    handle = (_request, response) => sendEndless(response);
    const watch = watchPartial();
    const outcome = await download(
      requestFor(`${origin}/endless`, { expectedBytes: MIB, maxBytes: MIB, onProgress: watch.onProgress, freeBytes: watch.freeBytes }),
    );
    expect(outcome).toMatchObject({ ok: false, kind: 'oversize', retryable: false });
    expect(watch.progressCalls()).toBeGreaterThan(0);
    expect(watch.largest()).toBeGreaterThan(0);
    expect(watch.largest()).toBeLessThanOrEqual(MIB);
    expect(await exists(partialOf())).toBe(false);
    expect(await exists(`${partialOf()}.json`)).toBe(false);
  });

  it('caps a body of unknown size at maxBytes (the reserved estimate)', async () => {
    handle = (_request, response) => sendEndless(response);
    const watch = watchPartial();
    const outcome = await download(requestFor(`${origin}/endless`, { maxBytes: 3 * MIB, onProgress: watch.onProgress, freeBytes: watch.freeBytes }));
    expect(outcome).toMatchObject({ ok: false, kind: 'oversize' });
    expect(watch.largest()).toBeGreaterThan(2 * MIB);
    expect(watch.largest()).toBeLessThanOrEqual(3 * MIB);
    expect(await exists(partialOf())).toBe(false);
  });

  it('fails at once, reading no body, when Content-Length contradicts the expected size or exceeds maxBytes', async () => {
    // Headers, one chunk, then silence: waiting for the body would never end.
    handle = (_request, response) => {
      response.writeHead(200, { 'content-length': 2 * MIB });
      response.write(Buffer.alloc(64 * 1024));
    };
    const watch = watchPartial();
    const mismatch = await download(requestFor(`${origin}/liar`, { expectedBytes: MIB, maxBytes: MIB, onProgress: watch.onProgress }));
    expect(mismatch).toMatchObject({ ok: false, kind: 'size_mismatch', retryable: false, status: 200 });
    const oversize = await download(requestFor(`${origin}/big`, { maxBytes: MIB, onProgress: watch.onProgress }));
    expect(oversize).toMatchObject({ ok: false, kind: 'oversize', retryable: false });
    expect(watch.progressCalls()).toBe(0);
    expect(await exists(partialOf())).toBe(false);
  });

  it('stops with disk_full, deleting the partial, when writing on would eat into the reserve', async () => {
    const content = crypto.randomBytes(8 * MIB);
    handle = serveFile(content);
    const reserveBytes = 100 * MIB;
    // A disk with 2 MiB above the reserve, filled by this download alone.
    const watch = watchPartial(() => reserveBytes + 2 * MIB - watch.look());
    const outcome = await download(
      requestFor(`${origin}/sst.nc`, {
        expectedBytes: content.length,
        maxBytes: content.length,
        reserveBytes,
        freeBytes: watch.freeBytes,
        onProgress: watch.onProgress,
      }),
    );
    expect(outcome).toMatchObject({ ok: false, kind: 'disk_full', retryable: false });
    expect(watch.largest()).toBeLessThanOrEqual(2 * MIB);
    expect(await exists(partialOf())).toBe(false);
    expect(await exists(`${partialOf()}.json`)).toBe(false);
  });

  it.skipIf(tmpfsUnavailable)('turns ENOSPC from a disk that really fills up into disk_full, deleting the partial', async () => {
    const disk = mountTmpfs(2 * MIB);
    try {
      const partial = path.join(disk.directory, 'asset.part');
      handle = serveFile(crypto.randomBytes(8 * MIB));
      const outcome = await download(requestFor(`${origin}/sst.nc`, { partial, expectedBytes: 8 * MIB, maxBytes: 8 * MIB }));
      expect(outcome).toMatchObject({ ok: false, kind: 'disk_full', retryable: false });
      expect(await fsp.readdir(disk.directory)).toEqual([]);
    } finally {
      disk.unmount();
    }
  });

  it('measures free space again at least every 8 MiB, catching a disk another program filled', async () => {
    const content = crypto.randomBytes(24 * MIB);
    handle = serveFile(content);
    let calls = 0;
    const watch = watchPartial(() => (++calls <= 2 ? TIB : 0));
    const outcome = await download(
      requestFor(`${origin}/sst.nc`, {
        expectedBytes: content.length,
        maxBytes: content.length,
        reserveBytes: MIB,
        freeBytes: watch.freeBytes,
        onProgress: watch.onProgress,
      }),
    );
    expect(outcome).toMatchObject({ ok: false, kind: 'disk_full' });
    expect(calls).toBe(3);
    expect(watch.largest()).toBeLessThanOrEqual(8 * MIB);
    expect(await exists(partialOf())).toBe(false);
  });

  it('does not start when the disk is already at its reserve', async () => {
    handle = serveFile(Buffer.from('data'));
    const outcome = await download(requestFor(`${origin}/x`, { reserveBytes: MIB, freeBytes: async () => MIB - 1 }));
    expect(outcome).toMatchObject({ ok: false, kind: 'disk_full' });
    expect(seen).toHaveLength(0);
  });

  it.each([
    [429, { 'retry-after': '30' }, { kind: 'source_busy', retryable: true, retryAfterSeconds: 30 }],
    [429, { 'retry-after': '999999999' }, { kind: 'source_busy', retryable: true, retryAfterSeconds: 86_400 }],
    [429, { 'retry-after': 'soon' }, { kind: 'source_busy', retryable: true, retryAfterSeconds: undefined }],
    [503, {}, { kind: 'source_error', retryable: true }],
    [500, {}, { kind: 'source_error', retryable: true }],
    [403, {}, { kind: 'source_error', retryable: false }],
    [404, {}, { kind: 'source_gone', retryable: false }],
    [410, {}, { kind: 'source_gone', retryable: false }],
  ])('maps %i %j to its kind', async (status, headers, expected) => {
    handle = (_request, response) => response.writeHead(status, headers).end('nope');
    const outcome = await download(requestFor(`${origin}/x`));
    expect(outcome).toEqual({ ok: false, status, reason: expect.stringContaining(`source answered ${status}`), ...expected });
  });

  it('reads an HTTP-date Retry-After relative to now', async () => {
    handle = (_request, response) => response.writeHead(503, { 'retry-after': new Date(Date.now() + 120_000).toUTCString() }).end();
    const outcome = await download(requestFor(`${origin}/x`));
    expect(outcome).toMatchObject({ ok: false, kind: 'source_busy', retryable: true, status: 503 });
    const seconds = (outcome as { retryAfterSeconds: number }).retryAfterSeconds;
    expect(seconds).toBeGreaterThan(60);
    expect(seconds).toBeLessThanOrEqual(120);
  });

  it('reports a refused connection as source_unreachable', async () => {
    const closed = http.createServer();
    await new Promise<void>((resolve) => closed.listen(0, '127.0.0.1', resolve));
    const { port } = closed.address() as AddressInfo;
    await new Promise((resolve) => closed.close(resolve));
    const outcome = await download(requestFor(`http://127.0.0.1:${port}/x`));
    expect(outcome).toMatchObject({ ok: false, kind: 'source_unreachable', retryable: true });
  });

  it('maps a refused destination from the injected fetch, and strips control characters from the reason', async () => {
    const refuse = async () => {
      throw Object.assign(new Error('10.0.0.1\x1b]0;owned\x07 is private\u202e\x9b2J'), { code: 'REFUSED_DESTINATION' });
    };
    const outcome = await download(requestFor(`${origin}/x`, { fetch: refuse }));
    expect(outcome).toEqual({ ok: false, kind: 'refused_destination', retryable: false, reason: '10.0.0.1]0;owned is private2J' });
    expect(seen).toHaveLength(0);
  });

  it('resumes a cut transfer with Range and If-Range', async () => {
    const content = crypto.randomBytes(4 * MIB);
    handle = serveFile(content, { cutAfter: MIB });
    const request = requestFor(`${origin}/sst.nc`, { expectedBytes: content.length, expectedSha256: sha256(content) });
    expect(await download(request)).toMatchObject({ ok: false, kind: 'source_unreachable', retryable: true });
    const kept = (await fsp.stat(partialOf())).size;
    expect(kept).toBeGreaterThan(0);

    handle = serveFile(content);
    // The bytes kept from the first attempt are in the sha256 and the Merkle tree too.
    expect(await download(request)).toEqual(receivedWhole(content));
    expect(seen[1]?.headers.range).toBe(`bytes=${kept}-`);
    expect((await fsp.readFile(partialOf())).equals(content)).toBe(true);
  });

  it('starts over when the source ignores the range, and drops a stale partial of another URL', async () => {
    const content = crypto.randomBytes(MIB);
    await fsp.writeFile(partialOf(), 'left by another url');
    await fsp.writeFile(`${partialOf()}.json`, JSON.stringify({ url: `${origin}/other`, validator: null }));
    handle = serveFile(content, { ignoreRange: true });
    expect(await download(requestFor(`${origin}/sst.nc`, { expectedSha256: sha256(content) }))).toMatchObject({ ok: true, bytes: MIB });
    expect(seen[0]?.headers.range).toBeUndefined();

    await fsp.truncate(partialOf(), 1000);
    expect(await download(requestFor(`${origin}/sst.nc`, { expectedSha256: sha256(content) }))).toMatchObject({ ok: true, bytes: MIB });
    expect(seen[1]?.headers.range).toBe('bytes=1000-');
    expect((await fsp.readFile(partialOf())).equals(content)).toBe(true);
  });

  it('deletes the partial on a wrong checksum', async () => {
    handle = serveFile(crypto.randomBytes(MIB));
    const outcome = await download(requestFor(`${origin}/sst.nc`, { expectedBytes: MIB, expectedSha256: 'ab'.repeat(32) }));
    expect(outcome).toMatchObject({ ok: false, kind: 'checksum_mismatch', retryable: false });
    expect(await exists(partialOf())).toBe(false);
    expect(await exists(`${partialOf()}.json`)).toBe(false);
  });

  it('refuses a second writer on the same partial', async () => {
    handle = (_request, response) => {
      response.writeHead(200);
      response.write(Buffer.alloc(1000));
    };
    const controller = new AbortController();
    let started: () => void = () => undefined;
    const writing = new Promise<void>((resolve) => (started = resolve));
    const first = download(requestFor(`${origin}/slow`, { signal: controller.signal, onProgress: () => started() }));
    await writing;
    await expect(download(requestFor(`${origin}/slow`))).rejects.toThrow(/another download is writing/);
    controller.abort();
    await expect(first).rejects.toThrow();
    // Stopping keeps the partial for a later resume; the second writer never touched it.
    expect((await fsp.stat(partialOf())).size).toBeLessThanOrEqual(1000);
  });
});
