import { isValidAssetId } from '../assets/assets.schemas.js';
import { basenameOf, type CatalogResource } from './catalog.types.js';

// NUL, which PostgreSQL cannot store in text, and lone surrogates, which the two databases store
// differently: a portal's metadata may carry either.
// (In a unicode pattern \p{Cs} matches only surrogates that are not half of a pair, as the request rule does.)
// eslint-disable-next-line no-control-regex -- NUL is what neither database stores
const UNSTORABLE = /\u0000|\p{Cs}/gu;

function clean(text: string): string {
  return text.replace(UNSTORABLE, '');
}

/**
 * A page's resources as they can be stored the same on both databases: NUL characters and lone
 * surrogates are removed from names and descriptive fields (counted in `stripped`); a resource
 * whose id or URL holds them, or other control characters, is left out (`refused`), since neither
 * can be changed without changing what it points at.
 */
export function storableResources(resources: CatalogResource[]): { resources: CatalogResource[]; stripped: number; refused: number } {
  let stripped = 0;
  let refused = 0;
  const kept: CatalogResource[] = [];
  const fix = (text: string) => {
    const cleaned = clean(text);
    if (cleaned !== text) stripped += 1;
    return cleaned;
  };
  const fixNullable = (text: string | null) => (text === null ? null : fix(text));
  for (const resource of resources) {
    // eslint-disable-next-line no-control-regex -- a URL with control characters is refused
    if (!isValidAssetId(resource.resourceId) || /[\u0000-\u001f\u007f]/.test(resource.url) || clean(resource.url) !== resource.url) {
      refused += 1;
      continue;
    }
    kept.push({
      ...resource,
      name: fix(resource.name) || basenameOf(resource.url),
      format: fixNullable(resource.format),
      dataset: fixNullable(resource.dataset),
      organization: fixNullable(resource.organization),
      keywords: resource.keywords.map(fix),
    });
  }
  return { resources: kept, stripped, refused };
}
