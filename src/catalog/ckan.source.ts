import { CatalogError, CatalogHttpError, describeBody, type JsonFetcher } from './catalog-http.js';
import { basenameOf, isHttpUrl, priorityFromViews, toKeywords, toSha256, toSizeBytes, type CatalogPage, type CatalogResource } from './catalog.types.js';

/** CKAN silently caps `rows` at `ckan.search.rows_max`: 1000 unless the portal set it lower. */
export const CKAN_MAX_ROWS = 1000;

export interface CkanQuery {
  /** The portal's base URL, e.g. https://demo.ckan.org */
  portal: string;
  q?: string;
  fq?: string;
  org?: string;
  rows: number;
  /** Retries of a page that came back empty before `count` was reached. */
  emptyPageRetries: number;
}

interface CkanPackage {
  name?: string;
  organization?: { name?: string } | null;
  tracking_summary?: { recent?: number } | null;
  views_recent?: number;
  tags?: unknown;
  resources?: CkanResourceDict[];
}

interface CkanResourceDict {
  id?: string;
  url?: string;
  name?: string | null;
  format?: string | null;
  size?: unknown;
  hash?: unknown;
  tracking_summary?: { recent?: number } | null;
}

export function buildSearchUrl(query: CkanQuery, start: number): string {
  const url = new URL(`${query.portal.replace(/\/+$/, '')}/api/3/action/package_search`);
  if (query.q) url.searchParams.set('q', query.q);
  const filters = [query.fq, query.org ? `organization:${query.org}` : undefined].filter(Boolean);
  if (filters.length > 0) url.searchParams.set('fq', filters.join(' AND '));
  url.searchParams.set('rows', String(query.rows));
  url.searchParams.set('start', String(start));
  // A stable order, so that paging by offset neither skips nor repeats datasets between pages.
  url.searchParams.set('sort', 'name asc');
  return url.toString();
}

/** Each resource with an http(s) URL, as a catalog resource of this package. */
export function mapCkanPackage(pkg: CkanPackage): CatalogResource[] {
  const packageViews = pkg.tracking_summary?.recent ?? pkg.views_recent ?? null;
  const keywords = toKeywords(pkg.tags);
  return (pkg.resources ?? []).flatMap((resource) => {
    if (!isHttpUrl(resource.url) || !resource.id) return [];
    const url = resource.url.trim();
    return [
      {
        resourceId: resource.id,
        url,
        name: resource.name?.trim() || basenameOf(url),
        format: resource.format?.trim() || null,
        sizeBytes: toSizeBytes(resource.size),
        sha256: toSha256(resource.hash),
        dataset: pkg.name ?? null,
        organization: pkg.organization?.name ?? null,
        keywords,
        priority: priorityFromViews(resource.tracking_summary?.recent ?? packageViews),
      },
    ];
  });
}

/** Explains a CKAN error answer: the `success:false` envelope, or the bare-string unknown action. */
export function explainCkanError(error: CatalogHttpError): CatalogError {
  const body = error.body as { success?: boolean; error?: { __type?: string; message?: string } } | string;
  if (typeof body === 'string' && /action name not known/i.test(body)) {
    return new CatalogError(`${error.url} answered HTTP ${error.status} "${body}": is this a CKAN portal with the action API at /api/3/action/?`);
  }
  if (typeof body === 'object' && body !== null && body.success === false) {
    return new CatalogError(`CKAN refused ${error.url} (HTTP ${error.status}): ${describeCkanFailure(body.error)}`);
  }
  return error;
}

function describeCkanFailure(failure: { __type?: string; message?: string } | undefined): string {
  if (!failure) return 'success:false without an error';
  const { __type: type, message, ...fields } = failure;
  const detail = message ?? (Object.keys(fields).length > 0 ? describeBody(fields) : 'no message');
  return `${type ?? 'Error'}: ${detail}`;
}

interface SearchResult {
  count: number;
  results: CkanPackage[];
}

async function fetchSearchPage(fetcher: JsonFetcher, url: string): Promise<SearchResult> {
  let body: unknown;
  try {
    body = await fetcher.getJson(url);
  } catch (error) {
    throw error instanceof CatalogHttpError ? explainCkanError(error) : error;
  }
  const envelope = body as { success?: unknown; error?: { __type?: string; message?: string }; result?: { count?: unknown; results?: unknown } };
  if (typeof envelope !== 'object' || envelope === null || Array.isArray(envelope)) {
    throw new CatalogError(`${url} did not answer with a CKAN envelope: ${describeBody(body)}`);
  }
  if (envelope.success === false) throw new CatalogError(`CKAN refused ${url}: ${describeCkanFailure(envelope.error)}`);
  const result = envelope.result;
  if (typeof result?.count !== 'number' || !Array.isArray(result.results)) {
    throw new CatalogError(`${url} answered without result.count and result.results: ${describeBody(body)}`);
  }
  return { count: result.count, results: result.results as CkanPackage[] };
}

/**
 * Pages through `package_search` by `start` (from `resumeFrom`, an earlier page's `next`) until
 * `result.count` datasets were read. A page with fewer datasets than asked, before the count is
 * reached, is the portal's page cap (`ckan.search.rows_max`): reading goes on from the datasets it
 * did return, so none is skipped, asking for that many from then on, and says so once. A page with
 * none before the count is retried, then fails: taking it as the end would lose the rest.
 */
export async function* readCkanPages(fetcher: JsonFetcher, query: CkanQuery, resumeFrom?: string): AsyncGenerator<CatalogPage> {
  let start = resumeFrom === undefined ? 0 : Number(resumeFrom);
  if (!Number.isSafeInteger(start) || start < 0) throw new CatalogError(`cannot resume CKAN paging at "${resumeFrom}": not an offset`);
  let rows = query.rows;
  let capped = false;
  for (;;) {
    const url = buildSearchUrl({ ...query, rows }, start);
    let page = await fetchSearchPage(fetcher, url);
    for (let retry = 1; page.results.length === 0 && start < page.count && retry <= query.emptyPageRetries; retry += 1) {
      fetcher.report(`${new URL(url).host}: no datasets at start=${start} of ${page.count}, then retry ${retry} of ${query.emptyPageRetries}`);
      page = await fetchSearchPage(fetcher, url);
    }
    if (page.results.length === 0 && start < page.count) {
      throw new CatalogError(
        `empty page from ${url} before all ${page.count} datasets were read, after ${query.emptyPageRetries + 1} attempts; ` +
          'the portal may be overloaded: try again later',
      );
    }
    if (!capped && page.results.length > 0 && page.results.length < Math.min(rows, page.count - start)) {
      capped = true;
      rows = page.results.length;
      fetcher.report(`${query.portal} returns at most ${rows} datasets per page; continuing with --rows ${rows}`);
    }
    const nextStart = start + page.results.length;
    const last = nextStart >= page.count || page.results.length === 0;
    yield { resources: page.results.flatMap(mapCkanPackage), datasets: page.results.length, total: page.count, next: last ? null : String(nextStart) };
    if (last) return;
    start = nextStart;
  }
}
