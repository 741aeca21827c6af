import crypto from 'node:crypto';
import { CatalogError, describeBody, type JsonFetcher } from './catalog-http.js';
import { basenameOf, isHttpUrl, priorityFromViews, toKeywords, toSizeBytes, type CatalogPage, type CatalogResource } from './catalog.types.js';

/** The new catalog.data.gov API caps per_page at 1000. */
export const DATAGOV_MAX_PER_PAGE = 1000;

export interface DatagovQuery {
  /** e.g. https://catalog.data.gov */
  baseUrl: string;
  q?: string;
  org?: string;
  perPage: number;
  apiKey?: string;
}

interface DcatDistribution {
  downloadURL?: string;
  accessURL?: string;
  mediaType?: string;
  format?: string;
  title?: string;
  byteSize?: unknown;
}

interface DatagovRecord {
  identifier?: string;
  slug?: string;
  popularity?: number;
  keyword?: unknown;
  organization?: { slug?: string; name?: string } | null;
  dcat?: { identifier?: string; keyword?: unknown; distribution?: unknown[] } | null;
}

export function buildDatagovSearchUrl(query: DatagovQuery, after: string | undefined): string {
  const url = new URL(`${query.baseUrl.replace(/\/+$/, '')}/search`);
  if (query.q) url.searchParams.set('q', query.q);
  if (query.org) url.searchParams.set('org_slug', query.org);
  url.searchParams.set('per_page', String(query.perPage));
  if (after) url.searchParams.set('after', after);
  return url.toString();
}

/** Distributions carry no id: a stable one is derived from the dataset identifier and the URL. */
export function deriveDistributionId(datasetIdentifier: string, url: string): string {
  return `dcat-${crypto.createHash('sha256').update(`${datasetIdentifier}\n${url}`).digest('hex').slice(0, 32)}`;
}

/** Each distribution with an http(s) downloadURL (else accessURL) of one dataset. */
export function mapDcatDistributions(
  distributions: unknown[] | undefined,
  dataset: { identifier: string; name: string | null; organization: string | null; keywords: string[]; priority: number },
): CatalogResource[] {
  return (distributions ?? []).flatMap((entry) => {
    if (typeof entry !== 'object' || entry === null) return [];
    const distribution = entry as DcatDistribution;
    const url = [distribution.downloadURL, distribution.accessURL].find(isHttpUrl)?.trim();
    if (!url) return [];
    return [
      {
        resourceId: deriveDistributionId(dataset.identifier, url),
        url,
        name: distribution.title?.trim() || basenameOf(url),
        format: distribution.format?.trim() || distribution.mediaType?.trim() || null,
        sizeBytes: toSizeBytes(distribution.byteSize),
        sha256: null,
        dataset: dataset.name,
        organization: dataset.organization,
        keywords: dataset.keywords,
        priority: dataset.priority,
      },
    ];
  });
}

function mapRecord(record: DatagovRecord): CatalogResource[] {
  const identifier = record.dcat?.identifier ?? record.identifier ?? record.slug;
  if (!identifier) return [];
  return mapDcatDistributions(record.dcat?.distribution, {
    identifier,
    name: record.slug ?? identifier,
    organization: record.organization?.slug ?? record.organization?.name ?? null,
    keywords: toKeywords(record.dcat?.keyword ?? record.keyword),
    priority: priorityFromViews(record.popularity ?? null),
  });
}

/**
 * Follows the `after` cursor (from `resumeFrom`, an earlier page's `next`) until a page comes
 * without one (the API gives no total count).
 */
export async function* readDatagovPages(fetcher: JsonFetcher, query: DatagovQuery, resumeFrom?: string): AsyncGenerator<CatalogPage> {
  const headers: Record<string, string> = query.apiKey ? { 'x-api-key': query.apiKey } : {};
  let after: string | undefined = resumeFrom;
  const seen = new Set<string>();
  for (;;) {
    const url = buildDatagovSearchUrl(query, after);
    const body = (await fetcher.getJson(url, headers)) as { results?: unknown; after?: unknown };
    if (typeof body !== 'object' || body === null || !Array.isArray(body.results)) {
      throw new CatalogError(`${url} answered without a results list: ${describeBody(body)}`);
    }
    const records = body.results as DatagovRecord[];
    const next = typeof body.after === 'string' && body.after !== '' && records.length > 0 ? body.after : null;
    yield { resources: records.flatMap(mapRecord), datasets: records.length, total: null, next };
    if (next === null) return;
    // A cursor that comes back would page forever.
    if (seen.has(next)) throw new CatalogError(`${url} returned a cursor it had already returned (${next}): stopping`);
    seen.add(next);
    after = next;
  }
}
