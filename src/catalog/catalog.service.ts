import type { Db } from '../db/database.js';
import { storableResources } from './catalog-text.js';
import { upsertAssets, type AssetInput } from '../assets/assets.repository.js';
import type { AssetRow } from '../assets/assets.table.js';
import type { ReplicaDefault } from '../assets/assets.service.js';
import { appendEvents, type NewEvent } from '../events/events.repository.js';
import { supersedeStaleCopies, type SourceChange } from '../allocations/source-change.service.js';
import { findAssetIdsByUrls, findAssetsByIds, flagUnseenAssets, markAssetsSeen, upsertAssetLinks, type AssetLink } from './catalog.repository.js';
import type { CatalogPage, CatalogResource } from './catalog.types.js';
import { applyPriorityRules, type PriorityRule } from './priority-rules.js';
import { retryingBusyWrites } from './busy-writes.js';

export interface ImportSummary {
  source: string;
  pages: number;
  datasets: number;
  resources: number;
  /** Resources whose URL an earlier resource (this run or before) already brought: linked, not added. */
  duplicates: number;
  new: number;
  updated: number;
  unchanged: number;
  removed: number;
  /** Updated assets whose copies or claims a new URL or checksum made stale (`asset.source_changed`). */
  superseded: number;
  /** Values whose NUL characters or lone surrogates were removed (names, datasets, …). */
  stripped: number;
  /** Resources left out: their id or URL held control characters. */
  refused: number;
  seconds: number;
}

export interface ImportProgress {
  pages: number;
  datasets: number;
  total: number | null;
  resources: number;
  resourcesPerSecond: number;
  /** Since the run began (by `elapsedMs`). */
  seconds: number;
}

export interface ImportOptions {
  /** The portal URL (or file) assets are recorded as coming from; re-syncs compare by it. */
  source: string;
  actor: string;
  replicasFor: ReplicaDefault;
  removedPriorityBoost: number;
  /** CATALOG_PRIORITY_RULES, applied to new assets only. */
  priorityRules: PriorityRule[];
  /**
   * Which of the source's assets a complete run covers, so that unseen ones are flagged removed:
   * all of them, one organization's, or none (a run filtered by a query sees only part of a portal).
   */
  sweep: { organization?: string } | null;
  onProgress?: (progress: ImportProgress) => void;
  /** Wall-clock time for rates; the database times come from `now`. */
  elapsedMs?: () => number;
  /**
   * When the run began, if before `now`: a resumed run sweeps what neither part of it saw.
   * Defaults to `now`.
   */
  runStartedAt?: number;
  /** Inside each page's transaction, after its writes: a throw rolls the page back and stops the run. */
  afterPage?: (trx: Db, page: PageReport) => Promise<void>;
  /** Inside the last transaction (the sweep and the events), likewise. */
  afterRun?: (trx: Db, summary: ImportSummary) => Promise<void>;
  /** Added to the `catalog.imported` event's data. */
  eventData?: Record<string, unknown>;
  /**
   * Retries of a page's (or the sweep's) transaction that met a lock conflict: the SQLite file
   * still locked by another process after its busy timeout, or a PostgreSQL deadlock. Each waits
   * the catalog backoff (1 s, 2 s, …) through `sleep`, and says so through `report`.
   */
  lockRetries: number;
  sleep: (ms: number) => Promise<void>;
  report: (line: string) => void;
}

/** What one page did: its own counts, and where reading resumes after it. */
export interface PageReport {
  datasets: number;
  total: number | null;
  resources: number;
  duplicates: number;
  new: number;
  updated: number;
  unchanged: number;
  superseded: number;
  stripped: number;
  refused: number;
  next: string | null;
}

/** What a re-sync may change on an existing asset; priority and replicas_target stay the rescue's. */
function differs(row: AssetRow, resource: CatalogResource): boolean {
  return (
    row.name !== resource.name ||
    row.url !== resource.url ||
    row.size_bytes !== resource.sizeBytes ||
    row.format !== resource.format ||
    row.sha256 !== resource.sha256 ||
    row.dataset !== resource.dataset ||
    row.organization !== resource.organization
  );
}

/** The updated assets whose URL or published checksum is new: their earlier copies may no longer count. */
function sourceChanges(changed: CatalogResource[], existing: Map<string, AssetRow>): SourceChange[] {
  return changed.flatMap((resource) => {
    const row = existing.get(resource.resourceId);
    if (!row || (row.url === resource.url && (resource.sha256 === null || row.sha256 === resource.sha256))) return [];
    return [{ assetId: row.id, fromUrl: row.url, toUrl: resource.url, fromSha256: row.sha256, toSha256: resource.sha256 }];
  });
}

function toAssetInput(resource: CatalogResource, existing: AssetRow | undefined, options: ImportOptions): AssetInput {
  // The portal's signals and the rules give only an initial priority: aging, admins and removal
  // move it afterwards, and a re-sync must not undo them.
  const priority = existing?.priority ?? applyPriorityRules(resource.priority, resource, options.priorityRules);
  return {
    id: resource.resourceId,
    name: resource.name,
    url: resource.url,
    sizeBytes: resource.sizeBytes,
    priority,
    replicasTarget: existing?.replicas_target ?? options.replicasFor(priority),
    source: existing?.source ?? options.source,
    dataset: resource.dataset,
    organization: resource.organization,
    format: resource.format,
    sha256: resource.sha256,
  };
}

/**
 * Writes one page in one transaction: URL de-duplication, upserts of what changed, links, seen
 * marks, then `afterPage`. `urlToAsset` carries the run's URL owners from page to page; it learns
 * this page's only once the transaction committed, so a rolled-back attempt can run again.
 */
async function importPage(db: Db, page: CatalogPage, urlToAsset: Map<string, string>, options: ImportOptions, now: number): Promise<PageReport> {
  const { resources, stripped, refused } = storableResources(page.resources);
  const report: PageReport = {
    datasets: page.datasets,
    total: page.total,
    resources: page.resources.length,
    duplicates: 0,
    new: 0,
    updated: 0,
    unchanged: 0,
    superseded: 0,
    stripped,
    refused,
    next: page.next,
  };
  const pageOwners = new Map<string, string>();
  const ownerOf = (url: string) => pageOwners.get(url) ?? urlToAsset.get(url);
  await db.transaction().execute(async (trx) => {
    const unknownUrls = [...new Set(resources.map((resource) => resource.url).filter((url) => !urlToAsset.has(url)))];
    for (const [url, id] of await findAssetIdsByUrls(trx, unknownUrls)) pageOwners.set(url, id);
    const owners = new Map<string, CatalogResource>();
    const links: AssetLink[] = [];
    for (const resource of resources) {
      const owner = ownerOf(resource.url);
      if (owner === undefined || owner === resource.resourceId) {
        if (!owners.has(resource.resourceId)) owners.set(resource.resourceId, resource);
        pageOwners.set(resource.url, resource.resourceId);
      } else {
        report.duplicates += 1;
      }
      links.push({ source: options.source, resourceId: resource.resourceId, assetId: ownerOf(resource.url) as string, dataset: resource.dataset });
    }
    const existing = new Map((await findAssetsByIds(trx, [...owners.keys()])).map((row) => [row.id, row]));
    // A size found by discovery, or a checksum the copies agreed on, stays while the portal still
    // says nothing about it and the URL is the same.
    for (const resource of owners.values()) {
      const row = existing.get(resource.resourceId);
      if (resource.sizeBytes === null && row?.url === resource.url) resource.sizeBytes = row.size_bytes;
      if (resource.sha256 === null && row?.url === resource.url) resource.sha256 = row.sha256;
    }
    const changed = [...owners.values()].filter((resource) => {
      const row = existing.get(resource.resourceId);
      if (!row) report.new += 1;
      else if (differs(row, resource)) report.updated += 1;
      else report.unchanged += 1;
      return !row || differs(row, resource);
    });
    await upsertAssets(
      trx,
      changed.map((resource) => toAssetInput(resource, existing.get(resource.resourceId), options)),
      now,
    );
    report.superseded = (await supersedeStaleCopies(trx, sourceChanges(changed, existing), options.actor, now)).length;
    await markAssetsSeen(trx, [...new Set(links.map((link) => link.assetId))], now);
    await upsertAssetLinks(trx, links, now);
    await options.afterPage?.(trx, report);
  });
  for (const [url, id] of pageOwners) urlToAsset.set(url, id);
  return report;
}

/**
 * Imports every page of a source, each page in its own transaction. Only a run that read every page
 * flags the source's unseen assets as removed (never deleted); a failed run leaves them alone.
 * Records one `catalog.imported` event, and one `catalog.removed_from_source` when assets vanished.
 */
export async function importCatalog(db: Db, pages: AsyncIterable<CatalogPage>, options: ImportOptions, now: number): Promise<ImportSummary> {
  const elapsedMs = options.elapsedMs ?? (() => 0);
  const startedMs = elapsedMs();
  const summary: ImportSummary = {
    source: options.source,
    pages: 0,
    datasets: 0,
    resources: 0,
    duplicates: 0,
    new: 0,
    updated: 0,
    unchanged: 0,
    removed: 0,
    superseded: 0,
    stripped: 0,
    refused: 0,
    seconds: 0,
  };
  const urlToAsset = new Map<string, string>();
  for await (const page of pages) {
    const report = await retryingBusyWrites(options, `page ${summary.pages + 1}`, () => importPage(db, page, urlToAsset, options, now));
    summary.pages += 1;
    summary.datasets += report.datasets;
    summary.resources += report.resources;
    summary.duplicates += report.duplicates;
    summary.new += report.new;
    summary.updated += report.updated;
    summary.unchanged += report.unchanged;
    summary.superseded += report.superseded;
    summary.stripped += report.stripped;
    summary.refused += report.refused;
    if (report.stripped + report.refused > 0) {
      options.report(
        `page ${summary.pages}: ${report.stripped} value(s) had NUL characters or lone surrogates removed, ${report.refused} resource(s) with control characters in their id or URL left out`,
      );
    }
    const seconds = (elapsedMs() - startedMs) / 1000;
    options.onProgress?.({
      pages: summary.pages,
      datasets: summary.datasets,
      total: page.total,
      resources: summary.resources,
      resourcesPerSecond: seconds > 0 ? summary.resources / seconds : 0,
      seconds,
    });
  }
  await retryingBusyWrites(options, 'the end of the run', () =>
    db.transaction().execute(async (trx) => {
      const removed =
        options.sweep === null
          ? []
          : await flagUnseenAssets(
              trx,
              { source: options.source, ...options.sweep, runStartedAt: options.runStartedAt ?? now, boost: options.removedPriorityBoost },
              now,
            );
      summary.removed = removed.length;
      summary.seconds = (elapsedMs() - startedMs) / 1000;
      const { source, seconds: _seconds, ...counts } = summary;
      const events: NewEvent[] = [
        { actor: options.actor, kind: 'catalog.imported', subjectType: 'import', subjectId: source, data: { ...counts, ...options.eventData } },
      ];
      if (removed.length > 0) {
        events.push({
          actor: options.actor,
          kind: 'catalog.removed_from_source',
          subjectType: 'import',
          subjectId: source,
          data: { count: removed.length, priority_boost: options.removedPriorityBoost, asset_ids: removed.slice(0, 100) },
        });
      }
      await appendEvents(trx, now, events);
      await options.afterRun?.(trx, summary);
    }),
  );
  return summary;
}
