import { sql } from 'kysely';
import type { Db } from '../db/database.js';
import type { AssetRow } from '../assets/assets.table.js';

// Lookups by a list of values stay below both databases' bound-parameter limits.
const LOOKUP_CHUNK = 1000;

async function selectInChunks<T>(values: string[], select: (chunk: string[]) => Promise<T[]>): Promise<T[]> {
  const rows: T[] = [];
  for (let start = 0; start < values.length; start += LOOKUP_CHUNK) rows.push(...(await select(values.slice(start, start + LOOKUP_CHUNK))));
  return rows;
}

export async function findAssetsByIds(db: Db, ids: string[]): Promise<AssetRow[]> {
  return selectInChunks(ids, (chunk) => db.selectFrom('assets').selectAll().where('id', 'in', chunk).execute());
}

/** The oldest asset for each URL that exists already. */
export async function findAssetIdsByUrls(db: Db, urls: string[]): Promise<Map<string, string>> {
  const rows = await selectInChunks(urls, (chunk) =>
    db.selectFrom('assets').select(['id', 'url']).where('url', 'in', chunk).orderBy('first_seen_at').orderBy('id').execute(),
  );
  const byUrl = new Map<string, string>();
  for (const row of rows) if (!byUrl.has(row.url)) byUrl.set(row.url, row.id);
  return byUrl;
}

/** Marks assets as seen by this run: last_seen_at moves, and a removal flag from an earlier run clears. */
export async function markAssetsSeen(db: Db, ids: string[], now: number): Promise<void> {
  await selectInChunks(ids, async (chunk) => {
    await db.updateTable('assets').set({ last_seen_at: now, removed_from_source_at: null }).where('id', 'in', chunk).execute();
    return [];
  });
}

export interface AssetLink {
  source: string;
  resourceId: string;
  assetId: string;
  dataset: string | null;
}

export async function upsertAssetLinks(db: Db, links: AssetLink[], now: number): Promise<void> {
  // 5 parameters per row.
  for (let start = 0; start < links.length; start += LOOKUP_CHUNK) {
    const rows = links.slice(start, start + LOOKUP_CHUNK).map((link) => ({
      source: link.source,
      resource_id: link.resourceId,
      asset_id: link.assetId,
      dataset: link.dataset,
      seen_at: now,
    }));
    await db
      .insertInto('asset_links')
      .values(rows)
      .onConflict((conflict) =>
        conflict.columns(['source', 'resource_id']).doUpdateSet((eb) => ({
          asset_id: eb.ref('excluded.asset_id'),
          dataset: eb.ref('excluded.dataset'),
          seen_at: eb.ref('excluded.seen_at'),
        })),
      )
      .execute();
  }
}

/**
 * Flags a source's assets that a complete run did not see (last seen before it started) as removed
 * from the source, raising their priority by `boost` within 1–10: vanished data is the most at risk.
 * Assets already flagged keep their first removal time and are not raised again. Returns their ids.
 */
export async function flagUnseenAssets(
  db: Db,
  input: { source: string; organization?: string; runStartedAt: number; boost: number },
  now: number,
): Promise<string[]> {
  let query = db
    .updateTable('assets')
    .set({
      removed_from_source_at: now,
      priority: sql<number>`case when priority + ${input.boost} > 10 then 10 else priority + ${input.boost} end`,
      priority_changed_at: sql<number>`case when ${input.boost} > 0 and priority < 10 then ${now} else priority_changed_at end`,
    })
    .where('source', '=', input.source)
    .where('last_seen_at', '<', input.runStartedAt)
    .where('removed_from_source_at', 'is', null);
  if (input.organization !== undefined) query = query.where('organization', '=', input.organization);
  const rows = await query.returning('id').execute();
  return rows.map((row) => row.id);
}

/** The source's assets still pending without a size, for size discovery. */
export async function findAssetsOfUnknownSize(db: Db, source: string): Promise<{ id: string; url: string }[]> {
  return db
    .selectFrom('assets')
    .select(['id', 'url'])
    .where('source', '=', source)
    .where('size_bytes', 'is', null)
    .where('state', '=', 'pending')
    .where('removed_from_source_at', 'is', null)
    .orderBy('priority', 'desc')
    .orderBy('id')
    .execute();
}

/** Sets a discovered size, unless one became known meanwhile. */
export async function recordDiscoveredSize(db: Db, id: string, bytes: number): Promise<void> {
  await db.updateTable('assets').set({ size_bytes: bytes }).where('id', '=', id).where('size_bytes', 'is', null).execute();
}

/** Notes what the source answered; the asset stays, and only nodes' confirmations make it gone. */
export async function recordSourceError(db: Db, id: string, error: string, now: number): Promise<void> {
  await db.updateTable('assets').set({ source_error: error, source_error_at: now }).where('id', '=', id).execute();
}
