import type { Config } from '../config.js';
import type { Db } from '../db/database.js';
import { runImport, type ImportIo, type ImportPlan, type RunSummary } from './catalog-import.js';
import { DATAGOV_MAX_PER_PAGE, readDatagovPages } from './datagov.source.js';
import { normalizePortalUrl } from './ckan.import.js';

export interface DatagovFlags {
  q?: string;
  org?: string;
  apiKey?: string;
  /** Overrides DATAGOV_API_URL. */
  url?: string;
  perPage?: number;
  discoverSizes?: boolean;
}

/** The new catalog.data.gov API's matching datasets, paged by cursor; throws on a flag that cannot work. */
export function planDatagovImport(config: Config, flags: DatagovFlags): ImportPlan {
  const baseUrl = normalizePortalUrl(flags.url ?? config.datagovApiUrl);
  const perPage = flags.perPage ?? DATAGOV_MAX_PER_PAGE;
  if (!Number.isInteger(perPage) || perPage < 1 || perPage > DATAGOV_MAX_PER_PAGE)
    throw new Error(`--per-page must be an integer from 1 to ${DATAGOV_MAX_PER_PAGE}`);
  const query = { baseUrl, q: flags.q, org: flags.org, perPage, apiKey: flags.apiKey ?? config.datagovApiKey };
  // As for CKAN: a text query covers an unknown part of the catalog, so nothing is flagged removed.
  const sweep = flags.q ? null : flags.org ? { organization: flags.org } : {};
  return { source: baseUrl, sweep, readPages: (fetcher, resumeFrom) => readDatagovPages(fetcher, query, resumeFrom) };
}

/** `dispatcher import datagov`: every distribution of the new catalog.data.gov API's matching datasets. */
export async function importDatagov(db: Db, config: Config, io: ImportIo, flags: DatagovFlags): Promise<RunSummary> {
  return runImport(db, config, io, planDatagovImport(config, flags), { discoverSizes: flags.discoverSizes });
}
