import type { Config } from '../config.js';
import type { Db } from '../db/database.js';
import { runImport, type ImportIo, type ImportPlan, type RunSummary } from './catalog-import.js';
import { readCkanPages, CKAN_MAX_ROWS } from './ckan.source.js';

export interface CkanFlags {
  q?: string;
  fq?: string;
  org?: string;
  rows?: number;
  discoverSizes?: boolean;
}

/** The portal's base URL without the action path or a trailing slash: what assets record as source. */
export function normalizePortalUrl(raw: string): string {
  const url = raw
    .trim()
    .replace(/\/api\/3(\/action(\/package_search)?)?\/?$/, '')
    .replace(/\/+$/, '');
  if (!/^https?:\/\/[^\s/]+\S*$/.test(url)) throw new Error(`the portal must be an http(s) URL, got "${raw}"`);
  return url;
}

/** A CKAN portal's matching datasets, paged by `start`; throws on a URL or flag that cannot work. */
export function planCkanImport(config: Config, portalUrl: string, flags: CkanFlags): ImportPlan {
  const portal = normalizePortalUrl(portalUrl);
  const rows = flags.rows ?? CKAN_MAX_ROWS;
  if (!Number.isInteger(rows) || rows < 1 || rows > CKAN_MAX_ROWS) throw new Error(`--rows must be an integer from 1 to ${CKAN_MAX_ROWS}`);
  const query = { portal, q: flags.q, fq: flags.fq, org: flags.org, rows, emptyPageRetries: config.catalogMaxRetries };
  // A run narrowed by a query covers an unknown part of the portal: it flags nothing as removed.
  const sweep = flags.q || flags.fq ? null : flags.org ? { organization: flags.org } : {};
  return { source: portal, sweep, readPages: (fetcher, resumeFrom) => readCkanPages(fetcher, query, resumeFrom) };
}

/** `dispatcher import ckan URL`: every resource of the matching datasets, paged by `start`. */
export async function importCkan(db: Db, config: Config, io: ImportIo, portalUrl: string, flags: CkanFlags): Promise<RunSummary> {
  return runImport(db, config, io, planCkanImport(config, portalUrl, flags), { discoverSizes: flags.discoverSizes });
}
