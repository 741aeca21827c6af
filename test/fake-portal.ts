import crypto from 'node:crypto';
import fs from 'node:fs';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import path from 'node:path';
import { pathToFileURL } from 'node:url';

/**
 * A CKAN portal (and a new-style catalog.data.gov) on loopback, for import tests and benchmarks.
 *   /<portal>/api/3/action/package_search?q&fq&rows&start   CKAN paging over the portal's packages
 *   /<portal>/api/3/action/<other>                          400 with a bare JSON string, as CKAN does
 *   /<portal>/search?per_page&after&org_slug                data.gov's new API (cursor paging)
 *   /<portal>/data.json                                     a DCAT-US catalog set with `setDataJson`
 *   /<any>/files/<name>?size=N                              a file of N bytes (HEAD, GET, Range bytes=0-0)
 *   /<any>/no-head/<name>?size=N                            the same, but HEAD answers 405
 *   /<any>/redirect/<name>?size=N, /<any>/gone/<name>, /<any>/no-length/<name>, /<any>/hang/<name>
 *                                                           302, 410, no length, no answer at all
 * Portals `demo`, `envidat` and `birmingham` replay recorded package_search results (count = the
 * recorded packages, so each is a complete small portal); `setPackages` and `setRecords` make more.
 * `setPackages(portal, packages, { rowsMax })` caps that portal's pages silently, as CKAN's
 * `ckan.search.rows_max` does (1000 by default).
 * `fault(portal, …)` makes that portal's next requests fail, one fault per request; `pass` answers
 * normally, to fault a later request (`fault(p, 'pass', 'pass', 'server-error')`: the third fails).
 * `short` leaves the page's last dataset out, `empty` all of them (the count stays), and
 * `retry-after:N` answers 429 with `Retry-After: N`.
 */
export type Fault = 'pass' | 'rate-limited' | 'over-rate-limit' | 'server-error' | 'garbage' | 'refused' | 'short' | 'empty' | 'hang' | `retry-after:${number}`;

export interface FakePortal {
  url: string;
  /** Path and query of every request, in order. */
  requests: string[];
  /** Headers of every request, in order. */
  headers: http.IncomingHttpHeaders[];
  setPackages(portal: string, packages: object[], options?: { rowsMax?: number }): void;
  setRecords(portal: string, records: object[]): void;
  setDataJson(portal: string, catalog: object): void;
  fault(portal: string, ...faults: Fault[]): void;
  close(): Promise<void>;
}

const FIXTURES = path.resolve(import.meta.dirname, 'fixtures/catalog');

export function readFixturePackages(file: string): object[] {
  return (JSON.parse(fs.readFileSync(path.join(FIXTURES, file), 'utf8')) as { result: { results: object[] } }).result.results;
}

/** The data.gov documents recorded in the snapshot (the ndjson's bulk-index lines left out). */
export function readSnapshotRecords(): object[] {
  return fs
    .readFileSync(path.join(FIXTURES, 'datagov_catalog_opensearch_snapshot.ndjson'), 'utf8')
    .split('\n')
    .filter((line) => line.trim() !== '')
    .map((line) => JSON.parse(line) as Record<string, unknown>)
    .filter((document) => !('index' in document));
}

/**
 * N datasets of M resources with deterministic ids, URLs, sizes and checksums. With `sizesInUrl`,
 * the portal gives no size and the URL (on this fake portal's `/files/`) answers HEAD with it.
 */
export function generatePackages(datasets: number, resourcesPerDataset: number, base = 'https://files.example.org', sizesInUrl = false): object[] {
  return Array.from({ length: datasets }, (_, d) => ({
    id: `pkg-${d}`,
    name: `dataset-${String(d).padStart(6, '0')}`,
    organization: { name: `org-${d % 7}` },
    tracking_summary: { total: d, recent: d % 200 },
    resources: Array.from({ length: resourcesPerDataset }, (_, r) => ({
      id: `res-${d}-${r}`,
      url: `${base}/dataset-${d}/file-${r}.nc${sizesInUrl ? `?size=${(d * resourcesPerDataset + r + 1) * 1000}` : ''}`,
      name: `file-${r}.nc`,
      format: 'NetCDF',
      size: sizesInUrl ? null : (d * resourcesPerDataset + r + 1) * 1000,
      hash: crypto.createHash('sha256').update(`res-${d}-${r}`).digest('hex'),
    })),
  }));
}

/** data.gov /search records, each with `distributions` distributions (downloadURL, some with byteSize). */
export function generateRecords(count: number, distributions: number, base = 'https://files.example.gov'): object[] {
  return Array.from({ length: count }, (_, d) => ({
    identifier: `ds-${d}`,
    slug: `dataset-${d}`,
    popularity: d % 50,
    organization: { slug: `agency-${d % 3}`, name: `Agency ${d % 3}` },
    dcat: {
      identifier: `ds-${d}`,
      distribution: Array.from({ length: distributions }, (_, r) => ({
        '@type': 'dcat:Distribution',
        title: `Distribution ${r}`,
        mediaType: 'text/csv',
        ...(r % 2 === 0 ? { downloadURL: `${base}/ds-${d}/${r}.csv`, byteSize: String(1000 + r) } : { accessURL: `${base}/ds-${d}/${r}.html` }),
      })),
    },
  }));
}

/** A DCAT-US catalog of N datasets with M distributions each. */
export function generateDataJson(datasets: number, distributions: number, base = 'https://files.example.gov'): { dataset: object[] } {
  return {
    dataset: Array.from({ length: datasets }, (_, d) => ({
      identifier: `https://agency.example.gov/id/${d}`,
      title: `Dataset ${d}`,
      publisher: { '@type': 'org:Organization', name: `Agency ${d % 2}` },
      distribution: Array.from({ length: distributions }, (_, r) => ({
        '@type': 'dcat:Distribution',
        downloadURL: `${base}/dcat/${d}/${r}.zip`,
        mediaType: 'application/zip',
        format: 'ZIP',
        ...(r === 0 ? { byteSize: 4096 } : {}),
      })),
    })),
  };
}

const ckanError = (type: string, message: string) => ({
  help: 'http://fake/api/3/action/help_show?name=package_search',
  success: false,
  error: { __type: type, message },
});

export async function startFakePortal(): Promise<FakePortal> {
  const packages = new Map<string, object[]>([
    ['demo', readFixturePackages('demo.ckan.org-package_search.json')],
    ['envidat', readFixturePackages('envidat.ch-package_search.json')],
    ['birmingham', readFixturePackages('data.birmingham.gov.uk-package_search.json')],
  ]);
  const records = new Map<string, object[]>([
    ['datagov-snapshot', readSnapshotRecords()],
    ['datagov-doc', (JSON.parse(fs.readFileSync(path.join(FIXTURES, 'search_response_doc_example.json'), 'utf8')) as { results: object[] }).results],
  ]);
  const dataJson = new Map<string, object>();
  const rowsMax = new Map<string, number>();
  const faults = new Map<string, Fault[]>();
  const requests: string[] = [];
  const headers: http.IncomingHttpHeaders[] = [];
  const json = (response: http.ServerResponse, status: number, body: unknown, extra: Record<string, string> = {}) =>
    response.writeHead(status, { 'content-type': 'application/json', ...extra }).end(JSON.stringify(body));

  const server = http.createServer((request, response) => {
    requests.push(request.url ?? '/');
    headers.push(request.headers);
    const url = new URL(request.url ?? '/', 'http://localhost');
    const [, portal = '', ...rest] = url.pathname.split('/');
    const route = rest.join('/');
    if (answerFile(request, response, rest[0] ?? '', portal, url)) return;
    const fault = faults.get(portal)?.shift();
    if (fault === 'hang') return; // never answers: the client's timeout must fire
    if (fault === 'rate-limited') return json(response, 429, ckanError('Rate Limit', 'slow down'), { 'retry-after': '0' });
    if (fault?.startsWith('retry-after:'))
      return json(response, 429, ckanError('Rate Limit', 'slow down'), { 'retry-after': fault.slice('retry-after:'.length) });
    if (fault === 'over-rate-limit')
      return json(response, 429, { error: { code: 'OVER_RATE_LIMIT', message: 'API rate limit exceeded' } }, { 'retry-after': '0' });
    if (fault === 'server-error') return json(response, 500, ckanError('Internal Server Error', 'Solr went away'));
    if (fault === 'garbage') return response.writeHead(200, { 'content-type': 'text/html' }).end('<html><body>Maintenance</body></html>');
    if (fault === 'refused') return json(response, 403, ckanError('Authorization Error', 'Access denied: private dataset'));
    if (route === 'data.json' && dataJson.has(portal)) return json(response, 200, dataJson.get(portal));
    if (route === 'search' && records.has(portal)) return answerSearch(response, records.get(portal) as object[], url);
    if (route === 'api/3/action/package_search' && packages.has(portal)) {
      return answerPackageSearch(response, packages.get(portal) as object[], url, rowsMax.get(portal) ?? 1000, fault);
    }
    if (route.startsWith('api/3/action/')) return json(response, 400, `Bad request: Action name not known: ${route.slice('api/3/action/'.length)}`);
    json(response, 404, ckanError('Not Found Error', 'Not found'));
  });

  /** The files that catalogs point to, for size discovery; false when the path is not one. */
  function answerFile(request: http.IncomingMessage, response: http.ServerResponse, kind: string, portal: string, url: URL): boolean {
    const size = Number(url.searchParams.get('size') ?? '0');
    const name = url.pathname.split('/').slice(3).join('/');
    if (kind === 'hang') return true; // never answers
    if (kind === 'redirect') response.writeHead(302, { location: `/${portal}/files/${name}?size=${size}` }).end();
    else if (kind === 'gone') response.writeHead(410).end();
    else if (kind === 'no-length') response.writeHead(200, { 'transfer-encoding': 'chunked' }).end('x');
    else if (kind === 'no-head' && request.method === 'HEAD') response.writeHead(405).end();
    else if ((kind === 'files' || kind === 'no-head') && request.headers.range === 'bytes=0-0') {
      response.writeHead(206, { 'content-range': `bytes 0-0/${size}`, 'content-length': 1 }).end('x');
    } else if (kind === 'files' || kind === 'no-head') {
      response.writeHead(200, { 'content-length': size }).end(request.method === 'HEAD' ? undefined : Buffer.alloc(size));
    } else return false;
    return true;
  }

  function answerPackageSearch(response: http.ServerResponse, all: object[], url: URL, max: number, fault: Fault | undefined) {
    const org = /organization:(\S+)/.exec(url.searchParams.get('fq') ?? '')?.[1];
    const matching = org ? all.filter((pkg) => (pkg as { organization?: { name?: string } }).organization?.name === org) : all;
    const rows = Math.min(max, Number(url.searchParams.get('rows') ?? '10'));
    const start = Number(url.searchParams.get('start') ?? '0');
    const results = fault === 'empty' ? [] : matching.slice(start, start + rows);
    if (fault === 'short' && results.length > 0) results.pop();
    json(response, 200, {
      help: 'http://fake/api/3/action/help_show?name=package_search',
      success: true,
      result: { count: matching.length, sort: 'name asc', results, search_facets: {} },
    });
  }

  function answerSearch(response: http.ServerResponse, all: object[], url: URL) {
    const org = url.searchParams.get('org_slug');
    const matching = org ? all.filter((record) => (record as { organization?: { slug?: string } }).organization?.slug === org) : all;
    const perPage = Math.min(1000, Number(url.searchParams.get('per_page') ?? '10'));
    const after = url.searchParams.get('after');
    const start = after ? Number(Buffer.from(after, 'base64url').toString()) : 0;
    const results = matching.slice(start, start + perPage);
    const next = start + perPage < matching.length ? Buffer.from(String(start + perPage)).toString('base64url') : undefined;
    json(response, 200, { results, sort: 'relevance', ...(next ? { after: next } : {}) });
  }

  await new Promise<void>((resolve) => server.listen(Number(process.env.FAKE_PORTAL_PORT ?? 0), '127.0.0.1', resolve));
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    requests,
    headers,
    setPackages: (portal, list, options = {}) => {
      packages.set(portal, list);
      if (options.rowsMax === undefined) rowsMax.delete(portal);
      else rowsMax.set(portal, options.rowsMax);
    },
    setRecords: (portal, list) => void records.set(portal, list),
    setDataJson: (portal, catalog) => void dataJson.set(portal, catalog),
    fault: (portal, ...list) => void faults.set(portal, [...(faults.get(portal) ?? []), ...list]),
    close: () =>
      new Promise((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}

// For benchmarks: `npx tsx test/fake-portal.ts DATASETS RESOURCES_PER_DATASET` serves a generated
// CKAN portal at /generated (sizes given), /unsized (sizes found by HEAD at /host/files/…) and a
// data.gov one at /datagov until interrupted.
if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) {
  const [datasets = 1000, perDataset = 100] = process.argv.slice(2).map(Number);
  const portal = await startFakePortal();
  portal.setPackages('generated', generatePackages(datasets, perDataset));
  portal.setPackages('unsized', generatePackages(datasets, perDataset, `${portal.url}/host/files`, true));
  portal.setRecords('datagov', generateRecords(datasets, perDataset));
  console.log(`${portal.url}/generated (${datasets * perDataset} resources); ${portal.url}/datagov`);
}
