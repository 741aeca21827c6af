import { sql } from 'kysely';
import type { Db } from '../db/database.js';
import { PEERS_HOST } from '../sources/source-host.js';
import { sourceHostOf } from '../sources/source-host.js';
import type { AssetRow } from './assets.table.js';

export interface AssetInput {
  id: string;
  name: string;
  url: string;
  sizeBytes: number | null;
  priority: number;
  replicasTarget: number;
  source: string | null;
  dataset: string | null;
  organization: string | null;
  format: string | null;
  sha256: string | null;
}

// 16 bound parameters per row: 500 rows stay under SQLite's 32,766 and PostgreSQL's 65,535 limits.
const UPSERT_CHUNK = 500;

/**
 * Inserts or updates assets by id, keeping what the rescue already did: copies and holders stay,
 * replicas_target is never lowered below the copies and claims already counted (invariant 1),
 * and the state follows from copies against the new target.
 */
export async function upsertAssets(db: Db, assets: AssetInput[], now: number): Promise<number> {
  for (let start = 0; start < assets.length; start += UPSERT_CHUNK) {
    const rows = assets.slice(start, start + UPSERT_CHUNK).map((asset) => ({
      id: asset.id,
      name: asset.name,
      url: asset.url,
      size_bytes: asset.sizeBytes,
      priority: asset.priority,
      replicas_target: asset.replicasTarget,
      state: 'pending' as const,
      copies: 0,
      holders: 0,
      source: asset.source,
      dataset: asset.dataset,
      organization: asset.organization,
      format: asset.format,
      sha256: asset.sha256,
      source_host: sourceHostOf(asset.url),
      first_seen_at: now,
      last_seen_at: now,
      priority_changed_at: now,
    }));
    const target = sql<number>`case when excluded.replicas_target < assets.holders then assets.holders else excluded.replicas_target end`;
    // Other catalogued values than those the nodes found wrong resolve a suspect asset.
    const catalogChanged = sql<boolean>`(assets.size_bytes is distinct from excluded.size_bytes or assets.sha256 is distinct from excluded.sha256)`;
    await db
      .insertInto('assets')
      .values(rows)
      .onConflict((conflict) =>
        conflict.column('id').doUpdateSet((eb) => ({
          name: eb.ref('excluded.name'),
          url: eb.ref('excluded.url'),
          size_bytes: eb.ref('excluded.size_bytes'),
          priority: eb.ref('excluded.priority'),
          replicas_target: target,
          state: sql`case when assets.state = 'suspect' and not ${catalogChanged} then 'suspect' when assets.copies >= ${target} then 'rescued' else 'pending' end`,
          mismatches_since: sql`case when ${catalogChanged} then excluded.last_seen_at else assets.mismatches_since end`,
          // An asset repaired from its copies (PEERS_HOST) stays so until the catalog names another URL.
          source_host: sql`case when assets.source_host = ${PEERS_HOST} and assets.url = excluded.url then assets.source_host else excluded.source_host end`,
          source: eb.ref('excluded.source'),
          dataset: eb.ref('excluded.dataset'),
          organization: eb.ref('excluded.organization'),
          format: eb.ref('excluded.format'),
          sha256: eb.ref('excluded.sha256'),
          last_seen_at: eb.ref('excluded.last_seen_at'),
          priority_changed_at: sql`case when assets.priority <> excluded.priority then excluded.priority_changed_at else assets.priority_changed_at end`,
        })),
      )
      .execute();
  }
  return assets.length;
}

export interface AssetFilter {
  state?: string;
  minPriority?: number;
  maxPriority?: number;
  organization?: string;
  dataset?: string;
  text?: string;
  /** Ids after this one (the cursor of the previous page). */
  after?: string;
  limit: number;
}

/** Pages through assets in id order, so a cursor stays valid while priorities change. */
export async function listAssets(db: Db, filter: AssetFilter): Promise<AssetRow[]> {
  let query = db.selectFrom('assets').selectAll().orderBy('id').limit(filter.limit);
  if (filter.state) query = query.where('state', '=', filter.state as AssetRow['state']);
  if (filter.minPriority !== undefined) query = query.where('priority', '>=', filter.minPriority);
  if (filter.maxPriority !== undefined) query = query.where('priority', '<=', filter.maxPriority);
  if (filter.organization) query = query.where('organization', '=', filter.organization);
  if (filter.dataset) query = query.where('dataset', '=', filter.dataset);
  if (filter.after !== undefined) query = query.where('id', '>', filter.after);
  if (filter.text) {
    const pattern = `%${filter.text.toLowerCase().replace(/[\\%_]/g, (match) => `\\${match}`)}%`;
    query = query.where((eb) => eb.or(['id', 'name', 'url', 'dataset'].map((column) => sql<boolean>`lower(${sql.ref(column)}) like ${pattern} escape '\\'`)));
  }
  return query.execute();
}

export async function findAsset(db: Db, id: string): Promise<AssetRow | undefined> {
  return db.selectFrom('assets').selectAll().where('id', '=', id).executeTakeFirst();
}

/**
 * Moves each asset's holders by one per time it is listed, up for allocations just granted, down
 * for ones that just stopped being active: one UPDATE per distinct count (almost always one).
 * Relative, so concurrent changes compose: a recount from the allocations table read them from the
 * statement's snapshot, so under concurrent claims on PostgreSQL it could miss one that committed
 * while the UPDATE waited for the asset's row lock, and leave holders one short (seen by the
 * expiry race test in concurrency.test.ts).
 */
export async function changeHolders(db: Db, assetIds: string[], direction: 1 | -1): Promise<void> {
  const counts = new Map<string, number>();
  for (const id of assetIds) counts.set(id, (counts.get(id) ?? 0) + 1);
  for (const count of new Set(counts.values())) {
    const ids = [...counts].filter(([, n]) => n === count).map(([id]) => id);
    for (let start = 0; start < ids.length; start += 1000) {
      await db
        .updateTable('assets')
        .set((eb) => ({ holders: eb('holders', '+', direction * count) }))
        .where('id', 'in', ids.slice(start, start + 1000))
        .execute();
    }
  }
}
