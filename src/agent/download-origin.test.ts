import crypto from 'node:crypto';
import fsp from 'node:fs/promises';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { PEERS_HOST } from '../sources/source-host.js';
import { download, type DownloadOutcome, type FetchLike } from './download.js';
import { createControlPlaneFetch, originOf, releaseFor, restraintFor } from './download-origin.js';

type Failure = Extract<DownloadOutcome, { ok: false }>;
type Handler = (request: http.IncomingMessage, response: http.ServerResponse) => void;

const refuse: FetchLike = async () => {
  throw new Error('not this fetch');
};
const fetches = { source: refuse, controlPlane: refuse };
const failure = (kind: Failure['kind'], extra: Partial<Failure> = {}): Failure => ({ ok: false, kind, reason: `${kind} happened`, retryable: false, ...extra });

describe('where a task is downloaded from', () => {
  it('is its source, paused and deferred under the source host, unless the control plane gave a restore_url', () => {
    const source = originOf({ url: 'https://data.example.org/sst.nc', restoreUrl: null }, 'https://dispatcher.example.org', fetches);
    expect(source).toEqual({ url: 'https://data.example.org/sst.nc', host: 'data.example.org', fromCopies: false, fetch: fetches.source, name: source.url });

    const repair = originOf({ url: 'https://data.example.org/sst.nc', restoreUrl: '/assets/sst/content?prefer_source=false' }, 'http://10.0.0.5:8000', fetches);
    expect(repair).toEqual({
      url: 'http://10.0.0.5:8000/assets/sst/content?prefer_source=false',
      host: PEERS_HOST,
      fromCopies: true,
      fetch: fetches.controlPlane,
      name: "the control plane's copies",
    });
  });
});

describe('how a failed download is given back', () => {
  const source = { fromCopies: false };
  const copies = { fromCopies: true };

  it.each([
    [failure('source_gone', { status: 404 }), { cause: 'source_gone', reason: 'source_gone happened', source_status: 404 }],
    [
      failure('source_busy', { status: 429, retryable: true }),
      { cause: 'source_busy', reason: 'source_busy happened', source_status: 429, retry_after_seconds: 60 },
    ],
    [
      failure('source_unreachable', { retryable: true }),
      { cause: 'source_unreachable', reason: 'source_unreachable happened after 3 attempts', source_status: undefined },
    ],
    [failure('checksum_mismatch'), { cause: 'checksum_mismatch', reason: 'checksum_mismatch happened', source_status: undefined }],
  ])('from the source: its kind and status as they are (%j)', (outcome, expected) => {
    expect(releaseFor(outcome, source, 3)).toEqual(expected);
  });

  it.each([
    [failure('source_busy', { status: 503, retryable: true, retryAfterSeconds: 30 }), { cause: 'other' }],
    [failure('disk_full'), { cause: 'disk_full' }],
    [failure('source_gone', { status: 404 }), { cause: 'other' }],
    [failure('source_error', { status: 403 }), { cause: 'other' }],
    [failure('source_unreachable', { retryable: true }), { cause: 'other' }],
    [failure('checksum_mismatch'), { cause: 'other' }],
    [failure('size_mismatch'), { cause: 'other' }],
    [failure('refused_destination'), { cause: 'other' }],
  ])('from the copies: busy, a full disk, or other, never a word about the source or the catalog (%j)', (outcome, expected) => {
    const release = releaseFor(outcome, copies, 3);
    expect(release).toEqual({ ...expected, reason: expect.stringMatching(/^the control plane's copies: /) });
    expect(release).not.toHaveProperty('source_status');
  });

  it('pauses the host after a busy answer, costs nothing after a gone source, and defers the asset from this origin otherwise', () => {
    expect(restraintFor({ cause: 'source_busy', reason: '' })).toBe('pause');
    expect(restraintFor({ cause: 'source_gone', reason: '' })).toBe('none');
    for (const cause of ['other', 'source_unreachable', 'checksum_mismatch', 'disk_full'] as const) expect(restraintFor({ cause, reason: '' })).toBe('defer');
  });
});

describe("downloading from the control plane's copies", () => {
  let server: http.Server;
  let base: string;
  let handle: Handler;
  let seen: http.IncomingMessage[];
  let dataDirectory: string;

  beforeEach(async () => {
    seen = [];
    dataDirectory = await fsp.mkdtemp(path.join(os.tmpdir(), 'download-origin-'));
    server = http.createServer((request, response) => {
      seen.push(request);
      response.on('error', () => undefined);
      handle(request, response);
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  });
  afterEach(async () => {
    server.closeAllConnections();
    await new Promise((resolve) => server.close(resolve));
    await fsp.rm(dataDirectory, { recursive: true, force: true });
  });

  const restoreOf = (content: Buffer, cutAfter?: number): Handler => {
    const etag = `"${crypto.createHash('sha256').update(content).digest('hex')}"`;
    return (request, response) => {
      const range = /^bytes=(\d+)-$/.exec(request.headers.range ?? '');
      const start = range && request.headers['if-range'] === etag ? Number(range[1]) : 0;
      const headers = {
        etag,
        'content-length': String(content.length - start),
        ...(start > 0 ? { 'content-range': `bytes ${start}-${content.length - 1}/${content.length}` } : {}),
      };
      response.writeHead(start > 0 ? 206 : 200, headers);
      if (cutAfter === undefined) response.end(content.subarray(start));
      else response.write(content.subarray(start, cutAfter), () => response.destroy());
    };
  };
  const problem =
    (status: number, body: Record<string, unknown>, headers: Record<string, string> = {}): Handler =>
    (_request, response) =>
      response.writeHead(status, { 'content-type': 'application/json; charset=utf-8', ...headers }).end(JSON.stringify(body));

  const fetchFromControlPlane = () => createControlPlaneFetch(base, () => 'node-token', 'dispatcher-agent/test (+ops@example.org)');
  const requestFor = (content: Buffer) => ({
    url: `${base}/assets/sst/content?prefer_source=false`,
    fetch: fetchFromControlPlane(),
    answerer: 'the control plane',
    partial: path.join(dataDirectory, 'sst.part'),
    expectedBytes: content.length,
    expectedSha256: crypto.createHash('sha256').update(content).digest('hex'),
    maxBytes: content.length,
    reserveBytes: 0,
    freeBytes: async () => 1024 ** 4,
    signal: new AbortController().signal,
    onProgress: () => undefined,
  });

  it("resumes a cut restore with Range and If-Range on the control plane's ETag, sending the node token each time", async () => {
    const content = crypto.randomBytes(1024 * 1024);
    handle = restoreOf(content, 300_000);
    expect(await download(requestFor(content))).toMatchObject({ ok: false, kind: 'source_unreachable', retryable: true });
    handle = restoreOf(content);
    expect(await download(requestFor(content))).toMatchObject({ ok: true, bytes: content.length });

    const etag = `"${crypto.createHash('sha256').update(content).digest('hex')}"`;
    expect(seen).toHaveLength(2);
    expect(seen[1]?.headers).toMatchObject({ range: expect.stringMatching(/^bytes=[1-9]\d*-$/), 'if-range': etag });
    for (const request of seen) {
      expect(request.headers).toMatchObject({ authorization: 'Bearer node-token', 'user-agent': 'dispatcher-agent/test (+ops@example.org)' });
    }
    expect((await fsp.readFile(path.join(dataDirectory, 'sst.part'))).equals(content)).toBe(true);
  });

  it('names the code of a 503 NO_HOLDER_ONLINE and gives it back as a cooldown of this asset only; a 404 NO_COPY is not a gone source', async () => {
    const content = Buffer.from('sst');
    handle = problem(503, { detail: 'No node holding a copy of "sst" is online; retry later.', code: 'NO_HOLDER_ONLINE', copies: 2 }, { 'retry-after': '30' });
    const busy = (await download(requestFor(content))) as Failure;
    expect(busy).toMatchObject({ kind: 'source_busy', status: 503, retryAfterSeconds: 30 });
    expect(busy.reason).toMatch(/^the control plane answered 503 Service Unavailable \(NO_HOLDER_ONLINE: No node holding/);
    expect(releaseFor(busy, { fromCopies: true }, 3)).toEqual({ cause: 'other', reason: expect.stringContaining('NO_HOLDER_ONLINE') });

    handle = problem(404, { detail: 'No verified copy of "sst" exists.', code: 'NO_COPY' });
    const none = (await download(requestFor(content))) as Failure;
    expect(releaseFor(none, { fromCopies: true }, 3)).toEqual({
      cause: 'other',
      reason: `the control plane's copies: the control plane answered 404 Not Found (NO_COPY: No verified copy of "sst" exists.)`,
    });
  });

  it("never sends the token to another origin, and follows no redirect (the token stays on the control plane's origin)", async () => {
    const fetchImpl = fetchFromControlPlane();
    const signal = new AbortController().signal;
    await expect(fetchImpl('http://elsewhere.example/assets/sst/content', { headers: {}, signal })).rejects.toMatchObject({ code: 'REFUSED_DESTINATION' });
    expect(seen).toHaveLength(0);

    handle = (request, response) => {
      if (request.url === '/moved') return response.writeHead(302, { location: `${base}/elsewhere` }).end();
      response.writeHead(200).end('followed');
    };
    const answer = await fetchImpl(`${base}/moved`, { headers: {}, signal });
    expect(answer.status).toBe(302);
    await answer.body?.cancel();
    expect(seen.map((request) => request.url)).toEqual(['/moved']);
  });
});
