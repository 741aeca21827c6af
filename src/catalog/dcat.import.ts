import fs from 'node:fs/promises';
import path from 'node:path';
import type { Config } from '../config.js';
import type { Db } from '../db/database.js';
import { CatalogError, describeBody, type JsonFetcher } from './catalog-http.js';
import { runImport, type ImportIo, type RunSummary } from './catalog-import.js';
import { DEFAULT_PRIORITY, isHttpUrl, type CatalogPage } from './catalog.types.js';
import { mapDcatDistributions } from './datagov.source.js';

// Datasets per transaction: a federal data.json holds tens of thousands.
const DATASETS_PER_PAGE = 1000;

interface DcatDataset {
  identifier?: string;
  title?: string;
  publisher?: { name?: string } | null;
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

/** A DCAT-US catalog (`{dataset: [{identifier, distribution: […]}]}`) as pages of resources. */
export async function* readDcatPages(location: string, fetcher: JsonFetcher): AsyncGenerator<CatalogPage> {
  const catalog = (await readCatalog(location, fetcher)) as { dataset?: unknown };
  if (typeof catalog !== 'object' || catalog === null || !Array.isArray(catalog.dataset)) {
    throw new CatalogError(`${location} is not a DCAT-US catalog (no "dataset" list): ${describeBody(catalog)}`);
  }
  const datasets = catalog.dataset as DcatDataset[];
  for (let start = 0; start < datasets.length || start === 0; start += DATASETS_PER_PAGE) {
    const slice = datasets.slice(start, start + DATASETS_PER_PAGE);
    const resources = slice.flatMap((dataset) => {
      const identifier = dataset.identifier ?? dataset.title;
      if (typeof identifier !== 'string' || identifier === '') return [];
      return mapDcatDistributions(dataset.distribution, {
        identifier,
        name: identifier,
        organization: dataset.publisher?.name ?? null,
        priority: DEFAULT_PRIORITY,
      });
    });
    yield { resources, datasets: slice.length, total: datasets.length };
  }
}

/** `dispatcher import dcat URL|FILE`: every distribution of a data.json; the whole catalog is one source. */
export async function importDcat(db: Db, config: Config, io: ImportIo, location: string, flags: { discoverSizes?: boolean } = {}): Promise<RunSummary> {
  const source = isHttpUrl(location) ? location.trim() : path.resolve(location);
  return runImport(db, config, io, { source, sweep: {}, discoverSizes: flags.discoverSizes }, (fetcher) => readDcatPages(source, fetcher));
}
