import type { Config } from '../config.js';
import type { Db } from '../db/database.js';
import { replicaDefaultFrom } from '../assets/assets.service.js';
import { createJsonFetcher, type FetchPolicy, type JsonFetcher } from './catalog-http.js';
import { appendEvents } from '../events/events.repository.js';
import { importCatalog, type ImportOptions, type ImportSummary } from './catalog.service.js';
import type { ImportDisplay } from './import-progress.js';
import { discoverSizes, type DiscoverySummary } from './size-discovery.js';
import type { CatalogPage } from './catalog.types.js';

/** What an import run needs from outside: time, waiting and where progress goes; tests replace them. */
export interface ImportIo {
  now: () => number;
  elapsedMs: () => number;
  sleep: (ms: number) => Promise<void>;
  /** Progress: a bar on a terminal, lines elsewhere (stderr on the CLI). */
  display: ImportDisplay;
}

export function fetchPolicyFrom(config: Config, io: ImportIo): FetchPolicy {
  return {
    requestsPerSecond: config.catalogRequestsPerSecond,
    timeoutMs: config.catalogTimeoutMs,
    maxRetries: config.catalogMaxRetries,
    baseDelayMs: 1000,
    maxDelayMs: 60_000,
    maxRetryWaitMs: config.catalogMaxRetryWaitMs,
    maxBodyBytes: config.catalogMaxPageBytes,
    sleep: io.sleep,
    report: (line) => io.display.notice(line),
  };
}

export function describeSummary(summary: RunSummary): string {
  const sizes = summary.sizes
    ? ` Sizes: ${summary.sizes.checked} checked, ${summary.sizes.discovered} found, ${summary.sizes.gone} answered 404/410, ${summary.sizes.unknown} still unknown.`
    : '';
  return (
    `Imported ${summary.resources} resources from ${summary.datasets} datasets (${summary.pages} pages) of ${summary.source} in ${summary.seconds.toFixed(1)} s: ` +
    `${summary.new} new, ${summary.updated} updated, ${summary.unchanged} unchanged, ${summary.duplicates} duplicate URLs linked, ${summary.removed} removed from source` +
    `${summary.superseded > 0 ? `, ${summary.superseded} with copies superseded by a new URL or checksum` : ''}` +
    `${summary.stripped > 0 ? `, ${summary.stripped} values with NUL characters removed` : ''}` +
    `${summary.refused > 0 ? `, ${summary.refused} resources with control characters in their id or URL left out` : ''}.${sizes}`
  );
}

/** One source ready to read: the CLI and the import jobs build it from the same flags. */
export interface ImportPlan {
  /** Names the source for re-syncs: the portal URL or the file. */
  source: string;
  sweep: ImportOptions['sweep'];
  /** The source's pages, from the start or from an earlier page's `next`. */
  readPages(fetcher: JsonFetcher, resumeFrom?: string): AsyncIterable<CatalogPage>;
}

export type RunSummary = ImportSummary & { sizes?: DiscoverySummary };

/** The import settings every run of a source shares, whoever starts it; `io` waits and reports. */
export function importOptionsFrom(config: Config, plan: ImportPlan, actor: string, io: Pick<ImportIo, 'sleep' | 'display'>): ImportOptions {
  return {
    source: plan.source,
    actor,
    replicasFor: replicaDefaultFrom(config),
    removedPriorityBoost: config.catalogRemovedPriorityBoost,
    priorityRules: config.catalogPriorityRules,
    sweep: plan.sweep,
    lockRetries: config.catalogMaxRetries,
    sleep: io.sleep,
    report: (line) => io.display.notice(line),
  };
}

/** Runs one source's pages into the database with progress lines, then discovers sizes if asked. */
export async function runImport(db: Db, config: Config, io: ImportIo, plan: ImportPlan, options: { discoverSizes?: boolean } = {}): Promise<RunSummary> {
  const fetcher = createJsonFetcher(fetchPolicyFrom(config, io));
  try {
    const summary: RunSummary = await importCatalog(
      db,
      plan.readPages(fetcher),
      { ...importOptionsFrom(config, plan, 'cli', io), elapsedMs: io.elapsedMs, onProgress: (progress) => io.display.pages(progress) },
      io.now(),
    );
    if (options.discoverSizes) {
      const started = io.elapsedMs();
      summary.sizes = await runSizeDiscovery(db, config, plan.source, 'cli', io.now(), (done, total) => {
        io.display.sizes(done, total, (io.elapsedMs() - started) / 1000);
      });
    }
    return summary;
  } finally {
    io.display.finish();
  }
}

/** Asks the source's files of unknown size for it, and records one `catalog.sizes_discovered` event. */
export async function runSizeDiscovery(
  db: Db,
  config: Config,
  source: string,
  actor: string,
  now: number,
  onProgress: (done: number, total: number) => void,
): Promise<DiscoverySummary> {
  const sizes = await discoverSizes(db, source, { concurrency: config.catalogHeadConcurrency, timeoutMs: config.catalogTimeoutMs, onProgress }, now);
  await appendEvents(db, now, [{ actor, kind: 'catalog.sizes_discovered', subjectType: 'import', subjectId: source, data: { ...sizes } }]);
  return sizes;
}
