import { spawn } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { root } from '../../test/cli-runner.js';
import type { RestorePolicy } from './asset-download.js';
import { exportBag } from './bag-export.js';
import { FetchStopped, fetchAssets, type FetchRunDeps } from './fetch-assets.js';
import { createFetchDisplay } from './fetch-progress.js';
import { createRestoreClient, type Selection } from './restore-client.js';

// The outside, for now: the three routes of the restore contract as the control plane will serve
// them (GET /assets, GET /assets/{id}, GET /assets/{id}/content), plus a source on another origin.
/**
 * `sha256`: the metadata's (default: the content's); `cutAfter`: cut the first full answer after so many bytes; `source`: redirect
 * (unless prefer_source=false) to a source serving these bytes; `busy`: first answer 503 NO_HOLDER_ONLINE so many times;
 * `corrupt`: the relay's bytes differ (a copy gone bad).
 */
type FakeBehaviour = { sha256?: string | null; cutAfter?: number; source?: Buffer; busy?: number; corrupt?: boolean };
type FakeAsset = { id: string; name: string; content: Buffer; organization?: string | null; dataset?: string | null; copies?: number } & FakeBehaviour;
type Seen = { server: 'api' | 'source'; path: string; query: URLSearchParams; range?: string; ifRange?: string; authorization?: string };

const TOKEN = 'user-token';
const sha = (bytes: Buffer) => crypto.createHash('sha256').update(bytes).digest('hex');
const bytes = (seed: string, size: number) =>
  Buffer.concat(Array.from({ length: Math.ceil(size / 32) }, (_, i) => crypto.createHash('sha256').update(`${seed}${i}`).digest())).subarray(0, size);

async function listen(handler: http.RequestListener): Promise<{ server: http.Server; url: string }> {
  const server = http.createServer(handler);
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return { server, url: `http://127.0.0.1:${(server.address() as AddressInfo).port}` };
}

function sendBytes(request: http.IncomingMessage, response: http.ServerResponse, body: Buffer, etag: string, cutAfter?: number): void {
  const range = /^bytes=(\d+)-$/.exec(request.headers.range ?? '');
  const start = range && (request.headers['if-range'] ?? etag) === etag ? Number(range[1]) : 0;
  if (start > 0 && start >= body.length) return void response.writeHead(416, { 'content-range': `bytes */${body.length}` }).end();
  const headers = { etag, 'accept-ranges': 'bytes', 'content-type': 'application/octet-stream', 'content-length': body.length - start };
  response.writeHead(start > 0 ? 206 : 200, start > 0 ? { ...headers, 'content-range': `bytes ${start}-${body.length - 1}/${body.length}` } : headers);
  if (cutAfter === undefined) return void response.end(body.subarray(start));
  // The cut comes a moment after the bytes, as when a holder goes away: the client has them by then.
  response.write(body.subarray(start, start + cutAfter), () => setTimeout(() => response.socket?.destroy(), 50));
}

async function startFakeControlPlane(assets: FakeAsset[], options: { pageSize?: number; publicContent?: boolean } = {}) {
  const seen: Seen[] = [];
  const record = (server: Seen['server'], request: http.IncomingMessage) => {
    const url = new URL(request.url ?? '/', 'http://x');
    const { range, authorization } = request.headers;
    const ifRange = request.headers['if-range'] as string | undefined;
    seen.push({ server, path: decodeURIComponent(url.pathname), query: url.searchParams, range, ifRange, authorization });
    return url;
  };
  const byId = new Map(assets.map((asset) => [asset.id, asset]));
  const summary = (asset: FakeAsset) => ({
    id: asset.id,
    name: asset.name,
    url: `https://data.example.org/${asset.id}`,
    size_bytes: asset.content.length,
    sha256: asset.sha256 === undefined ? sha(asset.content) : asset.sha256,
    organization: asset.organization ?? null,
    dataset: asset.dataset ?? null,
    copies: asset.copies ?? 1,
    state: (asset.copies ?? 1) > 0 ? 'rescued' : 'pending',
  });
  const json = (response: http.ServerResponse, status: number, body: unknown, headers: http.OutgoingHttpHeaders = {}) =>
    response.writeHead(status, { 'content-type': 'application/json', ...headers }).end(JSON.stringify(body));
  const source = await listen((request, response) => {
    const asset = byId.get(decodeURIComponent(record('source', request).pathname.slice('/files/'.length)));
    sendBytes(request, response, asset!.source!, `"source-${asset!.id}"`);
  });
  const api = await listen((request, response) => {
    const url = record('api', request);
    const [, id, content] = /^\/assets(?:\/([^/]+)(\/content)?)?$/.exec(url.pathname) ?? [];
    const asset = id === undefined ? undefined : byId.get(decodeURIComponent(id));
    if (request.headers.authorization !== `Bearer ${TOKEN}` && !(content && options.publicContent))
      return json(response, 401, { detail: 'Missing token.', code: 'UNAUTHORIZED' });
    if (id === undefined) {
      const [organization, dataset, cursor] = ['organization', 'dataset', 'cursor'].map((name) => url.searchParams.get(name));
      const matching = assets.filter((each) => (!organization || each.organization === organization) && (!dataset || each.dataset === dataset));
      const page = matching.filter((each) => !cursor || each.id > cursor).slice(0, options.pageSize ?? 2);
      const more = page.length > 0 && matching.indexOf(page[page.length - 1]!) < matching.length - 1;
      return json(response, 200, { items: page.map(summary), next_cursor: more ? page[page.length - 1]!.id : null });
    }
    if (!asset) return json(response, 404, { detail: `No asset has id "${id}".`, code: 'ASSET_NOT_FOUND' });
    const copy = { node_name: 'n1', ended_at: '2026-01-02T03:04:05.000Z', sha256: sha(asset.content), bytes: asset.content.length, verified: true };
    if (!content) return json(response, 200, { ...summary(asset), copies_detail: (asset.copies ?? 1) > 0 ? [copy] : [] });
    if (asset.copies === 0) return json(response, 404, { detail: 'No verified copy.', code: 'NO_COPY' });
    if (asset.busy && asset.busy-- > 0) {
      const holders = [
        { node: 'n1', last_seen: '2026-01-01T00:00:00.000Z' },
        { node: 'n2\u001b[31m', last_seen: null },
      ];
      return json(response, 503, { detail: 'No holder is online.', code: 'NO_HOLDER_ONLINE', copies: 2, holders }, { 'retry-after': '0' });
    }
    if (asset.source && url.searchParams.get('prefer_source') !== 'false') return void response.writeHead(302, { location: `${source.url}/files/${id}` }).end();
    const cut = asset.cutAfter;
    asset.cutAfter = undefined;
    sendBytes(request, response, asset.corrupt ? bytes('bad', asset.content.length) : asset.content, `"${sha(asset.content)}"`, cut);
  });
  return {
    url: api.url,
    seen,
    contentRequests: (id: string) => seen.filter((each) => each.path.startsWith(`/assets/${id}/content`) || each.path === `/files/${id}`),
    async close() {
      for (const { server } of [api, source]) await new Promise((resolve) => server.close(resolve).closeAllConnections());
    },
  };
}

const fast: RestorePolicy = { cutRetries: 3, retryBaseMs: 5, retryMaxMs: 20, busyTries: 3, maxRetryAfterMs: 50 };

function capture(): { deps: FetchRunDeps; stderr: string[]; stdout: string[] } {
  const [stderr, stdout] = [[] as string[], [] as string[]];
  const output = { isTTY: false, write: (text: string) => stderr.push(text) } as unknown as NodeJS.WriteStream;
  return {
    deps: { display: createFetchDisplay(output), report: (line) => stdout.push(line), signal: new AbortController().signal, policy: fast },
    stderr,
    stdout,
  };
}

let scratch: string;
let plane: Awaited<ReturnType<typeof startFakeControlPlane>> | undefined;
beforeEach(() => {
  scratch = fs.mkdtempSync(path.join(os.tmpdir(), 'dispatcher-fetch-'));
});
afterEach(async () => {
  await plane?.close();
  plane = undefined;
  fs.rmSync(scratch, { recursive: true, force: true });
});

describe('dispatcher fetch ASSET_ID…', () => {
  it('restores through the relay and the source, resumes a cut connection, numbers equal names, and keeps the token from the source', async () => {
    const [one, two, three] = [bytes('one', 300_000), bytes('two', 5000), bytes('three', 7000)];
    plane = await startFakeControlPlane([
      { id: 'a1', name: '../evil\u0007.csv', content: one, cutAfter: 100_000 },
      { id: 'a2', name: 'same.bin', content: two },
      { id: 'a3', name: 'same.bin', content: three, source: three },
    ]);
    const client = createRestoreClient(plane.url, TOKEN);
    const { deps, stdout } = capture();
    expect(await fetchAssets(client, ['a1', 'a2', 'a3'], scratch, deps)).toBe(true);
    expect(fs.readdirSync(scratch).sort()).toEqual(['___evil.csv', 'same-2.bin', 'same.bin']);
    expect(sha(fs.readFileSync(path.join(scratch, '___evil.csv')))).toBe(sha(one));
    expect(sha(fs.readFileSync(path.join(scratch, 'same.bin')))).toBe(sha(two));
    expect(sha(fs.readFileSync(path.join(scratch, 'same-2.bin')))).toBe(sha(three));
    expect(plane.contentRequests('a1').map(({ range, ifRange }) => [range, ifRange])).toEqual([
      [undefined, undefined],
      ['bytes=100000-', `"${sha(one)}"`],
    ]);
    expect(plane.seen.filter((each) => each.server === 'source').map((each) => each.authorization)).toEqual([undefined]);
    expect(plane.seen.filter((each) => each.server === 'api').every((each) => each.authorization === `Bearer ${TOKEN}`)).toBe(true);
    expect(stdout.join('\n')).toContain('sha256 ' + sha(three));

    const again = capture();
    plane.seen.length = 0;
    expect(await fetchAssets(client, ['a1', 'a2', 'a3'], scratch, again.deps)).toBe(true);
    expect(again.stdout.every((line) => line.startsWith('present '))).toBe(true);
    expect(plane.seen.filter((each) => each.path.endsWith('/content'))).toEqual([]);
  });

  it('starts over through the control plane when the source differs, and fails naming the asset when the relay differs too', async () => {
    const content = bytes('good', 4000);
    plane = await startFakeControlPlane([
      { id: 'changed', name: 'changed.bin', content, source: bytes('changed', 4000) },
      { id: 'rotten', name: 'rotten.bin', content, corrupt: true },
    ]);
    const { deps, stdout, stderr } = capture();
    expect(await fetchAssets(createRestoreClient(plane.url, TOKEN), ['changed', 'rotten'], scratch, deps)).toBe(false);
    expect(sha(fs.readFileSync(path.join(scratch, 'changed.bin')))).toBe(sha(content));
    expect(plane.contentRequests('changed').map((each) => each.query.get('prefer_source'))).toEqual([null, null, 'false']);
    expect(stderr.join('')).toContain('starting over through the control plane (prefer_source=false)');
    expect(stdout.at(-1)).toMatch(/^FAILED rotten: sha256 mismatch for rotten: got [0-9a-f]{64}, expected [0-9a-f]{64}$/);
    expect(fs.readdirSync(scratch)).toEqual(['changed.bin']);
  });

  it('resumes a partial an earlier run left, and starts over when the server answers its range with 200', async () => {
    const [kept, stale] = [bytes('kept', 50_000), bytes('stale', 50_000)];
    plane = await startFakeControlPlane([
      { id: 'kept', name: 'kept.bin', content: kept },
      { id: 'stale', name: 'stale.bin', content: stale },
    ]);
    fs.writeFileSync(path.join(scratch, 'kept.bin.part'), kept.subarray(0, 20_000));
    fs.writeFileSync(path.join(scratch, 'kept.bin.part.json'), JSON.stringify({ asset_id: 'kept', validator: `"${sha(kept)}"` }));
    fs.writeFileSync(path.join(scratch, 'stale.bin.part'), bytes('other', 20_000));
    fs.writeFileSync(path.join(scratch, 'stale.bin.part.json'), JSON.stringify({ asset_id: 'stale', validator: '"an older file"' }));
    const { deps } = capture();
    expect(await fetchAssets(createRestoreClient(plane.url, TOKEN), ['kept', 'stale'], scratch, deps)).toBe(true);
    expect(sha(fs.readFileSync(path.join(scratch, 'kept.bin')))).toBe(sha(kept));
    expect(sha(fs.readFileSync(path.join(scratch, 'stale.bin')))).toBe(sha(stale));
    expect(plane.contentRequests('kept').map((each) => each.range)).toEqual(['bytes=20000-']);
    expect(fs.readdirSync(scratch).sort()).toEqual(['kept.bin', 'stale.bin']);
  });

  it('stops when interrupted, keeps the partial, and the next run resumes it', async () => {
    const content = bytes('big', 1_000_000);
    plane = await startFakeControlPlane([{ id: 'big', name: 'big.bin', content }]);
    const client = createRestoreClient(plane.url, TOKEN);
    const [controller, { deps }] = [new AbortController(), capture()];
    const { display } = deps;
    const interrupting = {
      ...display,
      download: (label: string) => ({ ...display.download(label), progress: () => controller.abort(new Error('interrupted')) }),
    };
    await expect(fetchAssets(client, ['big'], scratch, { ...deps, display: interrupting, signal: controller.signal })).rejects.toThrow('interrupted');
    const kept = fs.statSync(path.join(scratch, 'big.bin.part')).size;
    expect(kept).toBeGreaterThan(0);
    expect(await fetchAssets(client, ['big'], scratch, capture().deps)).toBe(true);
    expect(plane.contentRequests('big').map((each) => each.range)).toEqual([undefined, `bytes=${kept}-`]);
    expect(sha(fs.readFileSync(path.join(scratch, 'big.bin')))).toBe(sha(content));
  });

  it('waits out NO_HOLDER_ONLINE, gives up naming the holders, and tells ASSET_NOT_FOUND from NO_COPY', async () => {
    const content = bytes('x', 100);
    plane = await startFakeControlPlane([
      { id: 'later', name: 'later.bin', content, busy: 1 },
      { id: 'offline', name: 'offline.bin', content, busy: 9 },
      { id: 'uncopied', name: 'uncopied.bin', content, copies: 0 },
    ]);
    const { deps, stdout } = capture();
    expect(await fetchAssets(createRestoreClient(plane.url, TOKEN), ['later', 'offline', 'uncopied', 'missing'], path.join(scratch, 'out/'), deps)).toBe(false);
    expect(stdout[0]).toMatch(/^saved .*later\.bin/);
    expect(stdout[1]).toBe(
      'FAILED offline: No holder is online. (NO_HOLDER_ONLINE): 2 cop(ies), held by n1 (last seen 2026-01-01T00:00:00.000Z), n2[31m (last seen never) (gave up after 3 tries)',
    );
    expect(stdout[2]).toBe('FAILED uncopied: no verified copy anywhere (NO_COPY): No verified copy.');
    expect(stdout[3]).toBe('FAILED missing: no such asset (ASSET_NOT_FOUND): No asset has id "missing".');
    expect(plane.contentRequests('offline')).toHaveLength(3);
  });

  it('without a token: restores from a public server against the ETag, and says how to log in where one is needed', async () => {
    const content = bytes('public', 3000);
    plane = await startFakeControlPlane([{ id: 'open data', name: 'ignored.bin', content, sha256: null }], { publicContent: true });
    const { deps } = capture();
    expect(await fetchAssets(createRestoreClient(plane.url, undefined), ['open data'], scratch, deps)).toBe(true);
    expect(sha(fs.readFileSync(path.join(scratch, 'open data')))).toBe(sha(content));
    expect(plane.contentRequests('open data').map((each) => each.query.get('prefer_source'))).toEqual(['false']);
    await plane.close();

    plane = await startFakeControlPlane([{ id: 'closed', name: 'closed.bin', content }]);
    const refused = fetchAssets(createRestoreClient(plane.url, undefined), ['closed'], scratch, capture().deps);
    await expect(refused).rejects.toThrow(FetchStopped);
    await expect(refused).rejects.toThrow(/needs a user token[\s\S]*\/auth\/login[\s\S]*DISPATCHER_TOKEN/);
  });
});

/** An independent check of a bag (RFC 8493): every payload file listed with its sha256, Payload-Oxum right, tag manifest right. */
function validateBag(bag: string): { manifest: Map<string, string>; info: string; table: string[][] } {
  const read = (name: string) => fs.readFileSync(path.join(bag, name), 'utf8');
  const decode = (encoded: string) => encoded.replace(/%(0A|0D|25)/gi, (_, hex: string) => String.fromCharCode(parseInt(hex, 16)));
  const parse = (text: string) =>
    new Map(
      text
        .trimEnd()
        .split('\n')
        .filter(Boolean)
        .map((line) => /^([0-9a-f]{64})[ \t]+(.+)$/.exec(line)!.slice(1, 3).reverse().map(decode) as [string, string]),
    );
  expect(read('bagit.txt')).toBe('BagIt-Version: 1.0\nTag-File-Character-Encoding: UTF-8\n');
  const manifest = parse(read('manifest-sha256.txt'));
  const payload = fs.readdirSync(path.join(bag, 'data'), { recursive: true, withFileTypes: true }).filter((entry) => entry.isFile());
  const files = payload.map((entry) => path.relative(bag, path.join(entry.parentPath, entry.name)).split(path.sep).join('/')).sort();
  expect([...manifest.keys()].sort()).toEqual(files);
  for (const [file, checksum] of manifest) expect(sha(fs.readFileSync(path.join(bag, file))), file).toBe(checksum);
  const octets = files.reduce((sum, file) => sum + fs.statSync(path.join(bag, file)).size, 0);
  const info = read('bag-info.txt');
  expect(info).toContain(`\nPayload-Oxum: ${octets}.${files.length}\n`);
  const tags = parse(read('tagmanifest-sha256.txt'));
  expect([...tags.keys()].sort()).toEqual(['bag-info.txt', 'bagit.txt', 'dispatcher-assets.tsv', 'manifest-sha256.txt']);
  for (const [file, checksum] of tags) expect(sha(fs.readFileSync(path.join(bag, file))), file).toBe(checksum);
  return {
    manifest,
    info,
    table: read('dispatcher-assets.tsv')
      .trimEnd()
      .split('\n')
      .map((line) => line.split('\t')),
  };
}

/** The CLI from source, with every server module forbidden (test/no-native-sqlite.mjs): fetch needs none of them. */
function runFetch(args: string[], env: Record<string, string>): Promise<{ code: number | null; stdout: string; stderr: string }> {
  const child = spawn(
    process.execPath,
    ['--import', 'tsx', '--import', path.join(root, 'test/no-native-sqlite.mjs'), path.join(root, 'src/cli.ts'), 'fetch', ...args],
    {
      cwd: root,
      env: { PATH: process.env.PATH, HOME: process.env.HOME, ...env },
    },
  );
  const [stdout, stderr] = [[] as Buffer[], [] as Buffer[]];
  child.stdout.on('data', (chunk: Buffer) => stdout.push(chunk));
  child.stderr.on('data', (chunk: Buffer) => stderr.push(chunk));
  return new Promise((resolve) =>
    child.on('close', (code) => resolve({ code, stdout: Buffer.concat(stdout).toString(), stderr: Buffer.concat(stderr).toString() })),
  );
}

describe('dispatcher fetch --bag', () => {
  const noaa = (id: string, name: string, dataset: string | null, extra: Partial<FakeAsset> = {}): FakeAsset => ({
    id,
    name,
    organization: 'NOAA',
    dataset,
    content: bytes(id, 1000 + id.length * 777),
    ...extra,
  });

  it('exports an organization as a valid bag (a real process), skips assets without a copy, and a second run keeps what is verified', async () => {
    plane = await startFakeControlPlane([
      noaa('b1', 'a.nc', 'sst', { cutAfter: 500 }),
      noaa('b2', 'a.nc', 'sst'),
      noaa('b3', '100% \u0007real.csv', null),
      noaa('b4', 'never.nc', 'sst', { copies: 0 }),
      { id: 'b5', name: 'other.nc', organization: 'NASA', content: bytes('b5', 10) },
      noaa('b6 spaced id', 'sourced.nc', 'wind', { source: bytes('b6 spaced id', 1000 + 12 * 777) }),
    ]);
    const env = { API_ENDPOINT: plane.url, DISPATCHER_TOKEN: TOKEN };
    const first = await runFetch(['--organization', 'NOAA', '--bag', path.join(scratch, 'bag')], env);
    expect(first.code, first.stderr).toBe(0);
    const bag = path.join(scratch, 'bag');
    const { manifest, info, table } = validateBag(bag);
    expect([...manifest.keys()].sort()).toEqual(['data/NOAA/_none/100% real.csv', 'data/NOAA/sst/a-2.nc', 'data/NOAA/sst/a.nc', 'data/NOAA/wind/sourced.nc']);
    expect(fs.readFileSync(path.join(bag, 'manifest-sha256.txt'), 'utf8')).toContain('  data/NOAA/_none/100%25 real.csv\n');
    expect(info).toMatch(/^Source-Organization: NOAA\n/);
    expect(info).toContain('Dispatcher-Selection: organization=NOAA\nDispatcher-Exported: 4\nDispatcher-Skipped: b4 (no verified copy)\n');
    expect(table[0]).toEqual(['path', 'asset_id', 'sha256', 'bytes', 'source_url', 'rescued_at', 'organization', 'dataset']);
    expect(table).toContainEqual([
      'data/NOAA/wind/sourced.nc',
      'b6 spaced id',
      manifest.get('data/NOAA/wind/sourced.nc'),
      String(1000 + 12 * 777),
      'https://data.example.org/b6 spaced id',
      '2026-01-02T03:04:05.000Z',
      'NOAA',
      'wind',
    ]);
    expect(first.stdout).toContain('skipped b4: no verified copy');
    expect(plane.seen.filter((each) => each.path === '/assets').map((each) => each.query.get('organization'))).toEqual(['NOAA', 'NOAA', 'NOAA']);
    expect(plane.contentRequests('b1').map((each) => each.range)).toEqual([undefined, 'bytes=500-']);
    expect(fs.readdirSync(bag).sort()).toEqual(['bag-info.txt', 'bagit.txt', 'data', 'dispatcher-assets.tsv', 'manifest-sha256.txt', 'tagmanifest-sha256.txt']);

    plane.seen.length = 0;
    const second = await runFetch(['--organization', 'NOAA', '--bag', path.join(scratch, 'bag')], env);
    expect(second.code, second.stderr).toBe(0);
    expect(plane.seen.filter((each) => each.path.endsWith('/content') || each.server === 'source')).toEqual([]);
    validateBag(bag);
  });

  it('downloads again only a file that no longer matches, refuses another selection, and reports strays instead of an invalid bag', async () => {
    plane = await startFakeControlPlane([noaa('c1', 'one.bin', 'sst'), noaa('c2', 'two.bin', 'sst', { busy: 9 })]);
    const client = createRestoreClient(plane.url, TOKEN);
    const bag = path.join(scratch, 'bag');
    const selection: Selection = { dataset: 'sst' };
    const first = capture();
    expect(await exportBag(client, bag, selection, first.deps, Date.parse('2026-03-04T05:06:07Z'))).toBe(false);
    expect(first.stdout.at(-1)).toBe(`bag ${bag}: 1 file(s), ${1000 + 2 * 777} bytes; 0 skipped (no verified copy); 1 failed`);
    expect(validateBag(bag).info).toContain('Bagging-Date: 2026-03-04\n');
    expect(validateBag(bag).info).toContain('Dispatcher-Failed: c2 (not exported: run the export again)\n');

    fs.writeFileSync(path.join(bag, 'data/NOAA/sst/one.bin'), 'rotten');
    fs.writeFileSync(path.join(bag, 'data/NOAA/stray.txt'), 'not ours');
    plane.seen.length = 0;
    const second = capture();
    expect(await exportBag(client, bag, selection, second.deps, Date.now())).toBe(false);
    expect(plane.contentRequests('c1')).toHaveLength(1);
    expect(second.stdout).toContain('STRAY data/NOAA/stray.txt: not part of this export; remove it (or use another --bag directory) to make the bag valid');
    expect(fs.existsSync(path.join(bag, 'manifest-sha256.txt'))).toBe(false);

    fs.rmSync(path.join(bag, 'data/NOAA/stray.txt'));
    expect(await exportBag(client, bag, selection, capture().deps, Date.now())).toBe(false);
    validateBag(bag);
    await expect(exportBag(client, bag, { organization: 'NOAA' }, capture().deps, Date.now())).rejects.toThrow('holds an export of "dataset=sst"');
    const refused = exportBag(createRestoreClient(plane.url, 'expired'), bag, selection, capture().deps, Date.now());
    await expect(refused).rejects.toThrow(/refused the token/);
    validateBag(bag);
  });

  it('exits non-zero naming the asset whose sha256 does not match (a real process)', async () => {
    const content = bytes('cli', 2000);
    plane = await startFakeControlPlane([
      { id: 'fine', name: 'fine.bin', content },
      { id: 'rotten', name: 'rotten.bin', content, corrupt: true },
    ]);
    const run = await runFetch(['fine', 'rotten', '--out', path.join(scratch, 'out')], { API_ENDPOINT: plane.url, DISPATCHER_TOKEN: TOKEN });
    expect(run.code).toBe(1);
    expect(run.stdout).toMatch(/^saved .*out\/fine\.bin \(fine, 2000 bytes, sha256 [0-9a-f]{64} verified\)\nFAILED rotten: sha256 mismatch for rotten/);
    expect(fs.readdirSync(path.join(scratch, 'out'))).toEqual(['fine.bin']);
  });
});
