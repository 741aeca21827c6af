import fs from 'node:fs/promises';
import path from 'node:path';
import type { Config } from '../config.js';
import type { Db } from '../db/database.js';
import { CatalogError, describeBody, type JsonFetcher } from './catalog-http.js';
import { runImport, type ImportIo, type ImportPlan, type RunSummary } from './catalog-import.js';
import { DEFAULT_PRIORITY, isHttpUrl, toKeywords, type CatalogPage } from './catalog.types.js';
import { mapDcatDistributions } from './datagov.source.js';

// Datasets per transaction: a federal data.json holds tens of thousands.
const DATASETS_PER_PAGE = 1000;

interface DcatDataset {
  identifier?: string;
  title?: string;
  publisher?: { name?: string } | null;
  keyword?: unknown;
  distribution?: unknown[];
}

async function readCatalog(location: string, fetcher: JsonFetcher): Promise<unknown> {
  if (isHttpUrl(location)) return fetcher.getJson(location);
  const text = await fs.readFile(location, 'utf8');
  try {
    return JSON.parse(text);
  } catch (error) {
    throw new CatalogError(`${location} is not valid JSON: ${(error as Error).message}`);
  }
}

/**
 * A DCAT-US catalog (`{dataset: [{identifier, distribution: […]}]}`) as pages of resources, from
 * the dataset index `resumeFrom` (an earlier page's `next`) when given.
 */
export async function* readDcatPages(location: string, fetcher: JsonFetcher, resumeFrom?: string): AsyncGenerator<CatalogPage> {
  const first = resumeFrom === undefined ? 0 : Number(resumeFrom);
  if (!Number.isSafeInteger(first) || first < 0) throw new CatalogError(`cannot resume reading ${location} at "${resumeFrom}": not a dataset index`);
  const catalog = (await readCatalog(location, fetcher)) as { dataset?: unknown };
  if (typeof catalog !== 'object' || catalog === null || !Array.isArray(catalog.dataset)) {
    throw new CatalogError(`${location} is not a DCAT-US catalog (no "dataset" list): ${describeBody(catalog)}`);
  }
  const datasets = catalog.dataset as DcatDataset[];
  for (let start = first; start < datasets.length || start === 0; start += DATASETS_PER_PAGE) {
    const slice = datasets.slice(start, start + DATASETS_PER_PAGE);
    const resources = slice.flatMap((dataset) => {
      const identifier = dataset.identifier ?? dataset.title;
      if (typeof identifier !== 'string' || identifier === '') return [];
      return mapDcatDistributions(dataset.distribution, {
        identifier,
        name: identifier,
        organization: dataset.publisher?.name ?? null,
        keywords: toKeywords(dataset.keyword),
        priority: DEFAULT_PRIORITY,
      });
    });
    const next = start + DATASETS_PER_PAGE < datasets.length ? String(start + DATASETS_PER_PAGE) : null;
    yield { resources, datasets: slice.length, total: datasets.length, next };
  }
}

/** A data.json at a URL or in a file; the whole catalog is one source, so a complete run sweeps it all. */
export function planDcatImport(location: string): ImportPlan {
  const source = isHttpUrl(location) ? location.trim() : path.resolve(location);
  return { source, sweep: {}, readPages: (fetcher, resumeFrom) => readDcatPages(source, fetcher, resumeFrom) };
}

/** `dispatcher import dcat URL|FILE`: every distribution of a data.json. */
export async function importDcat(db: Db, config: Config, io: ImportIo, location: string, flags: { discoverSizes?: boolean } = {}): Promise<RunSummary> {
  return runImport(db, config, io, planDcatImport(location), { discoverSizes: flags.discoverSizes });
}
