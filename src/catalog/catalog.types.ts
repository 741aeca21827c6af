/** One downloadable file as a portal describes it, before it becomes an asset. */
export interface CatalogResource {
  /** Stable across re-syncs: the portal's resource id, or one derived from dataset and URL. */
  resourceId: string;
  url: string;
  name: string;
  format: string | null;
  sizeBytes: number | null;
  sha256: string | null;
  dataset: string | null;
  organization: string | null;
  /** The dataset's tags or keywords, for CATALOG_PRIORITY_RULES. */
  keywords: string[];
  /** From the portal's signals (views, popularity), before CATALOG_PRIORITY_RULES. */
  priority: number;
}

/** One page read from a portal. */
export interface CatalogPage {
  resources: CatalogResource[];
  /** Datasets on this page. */
  datasets: number;
  /** Datasets the portal says match, when it says (CKAN does, data.gov's new API does not). */
  total: number | null;
  /** Where reading resumes after this page (an offset or a cursor); null after the last page. */
  next: string | null;
}

export const DEFAULT_PRIORITY = 5;

/** Popularity to priority: 5 without views, one more per ~4.6x views (10 → 6, 100 → 8, 10,000 → 10). */
export function priorityFromViews(views: number | null): number {
  if (views === null || !Number.isFinite(views) || views <= 0) return DEFAULT_PRIORITY;
  return Math.max(1, Math.min(10, DEFAULT_PRIORITY + Math.floor(Math.log10(views + 1) * 1.5)));
}

/** A dataset's keywords from a list of strings (DCAT `keyword`) or of tags (CKAN `tags[].name`). */
export function toKeywords(value: unknown): string[] {
  if (!Array.isArray(value)) return [];
  return value
    .map((entry: unknown) => (typeof entry === 'object' && entry !== null ? (entry as { name?: unknown }).name : entry))
    .filter((entry): entry is string => typeof entry === 'string' && entry.trim() !== '');
}

/** A positive integer byte count, or null (portals send null, "", strings and floats). */
export function toSizeBytes(value: unknown): number | null {
  const number = typeof value === 'string' && /^\d+$/.test(value.trim()) ? Number(value) : value;
  return typeof number === 'number' && Number.isSafeInteger(number) && number > 0 ? number : null;
}

/** A SHA-256 in lower-case hex, or null (CKAN's `hash` is often an MD5 or empty). */
export function toSha256(value: unknown): string | null {
  if (typeof value !== 'string') return null;
  const hex = value.trim().replace(/^sha256:/i, '');
  return /^[0-9a-fA-F]{64}$/.test(hex) ? hex.toLowerCase() : null;
}

/** The last path segment of a URL, for resources without a name. */
export function basenameOf(url: string): string {
  try {
    const segments = new URL(url).pathname.split('/').filter(Boolean);
    return decodeURIComponent(segments.at(-1) ?? '') || url;
  } catch {
    return url;
  }
}

export function isHttpUrl(value: unknown): value is string {
  return typeof value === 'string' && /^https?:\/\/\S+$/.test(value.trim());
}
