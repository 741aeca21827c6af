import type { Db } from '../db/database.js';
import type { NewEvent } from '../events/events.repository.js';
import { endAllocations, type CopyCounts } from './end-allocations.js';

/** An asset whose source now publishes another URL or another checksum than before. */
export interface SourceChange {
  assetId: string;
  fromUrl: string;
  toUrl: string;
  fromSha256: string | null;
  /** The checksum the source now publishes; null when it publishes none (which invalidates nothing). */
  toSha256: string | null;
}

const LOOKUP_CHUNK = 1000;

/** The copies and claims a change makes stale: all of them on a new URL, else the copies that differ from a new checksum. */
function isStale(change: SourceChange, allocation: { state: string; sha256: string | null }): boolean {
  if (change.fromUrl !== change.toUrl) return true;
  return allocation.state === 'completed' && change.toSha256 !== null && allocation.sha256 !== change.toSha256;
}

/**
 * Takes stale copies out of the count after the assets were updated in the same transaction: a copy
 * or an active claim of the old URL, or a copy whose checksum differs from the one now published,
 * ends in state `superseded` (reason `source_changed`; the row, its checksum and its URI stay, and
 * the node may be given the asset again). Copies, holders and state are then recounted from what
 * still counts (endAllocations), so a rescued asset is pending again and holders only go down
 * (invariant 1).
 * Records one `asset.source_changed` event per asset that lost a copy or a claim; returns their ids.
 */
export async function supersedeStaleCopies(trx: Db, changes: SourceChange[], actor: string, now: number): Promise<string[]> {
  const byAsset = new Map(changes.map((change) => [change.assetId, change]));
  const ids = [...byAsset.keys()];
  const stale: { id: number; asset_id: string; node_id: number; state: string }[] = [];
  for (let start = 0; start < ids.length; start += LOOKUP_CHUNK) {
    const rows = await trx
      .selectFrom('allocations')
      .select(['id', 'asset_id', 'node_id', 'state', 'sha256'])
      .where('asset_id', 'in', ids.slice(start, start + LOOKUP_CHUNK))
      .where('state', 'in', ['active', 'completed'])
      .orderBy('id')
      .execute();
    stale.push(...rows.filter((row) => isStale(byAsset.get(row.asset_id) as SourceChange, row)));
  }
  const { counts } = await endAllocations(
    trx,
    { ids: stale.map((row) => row.id) },
    {
      state: 'superseded',
      reason: 'source_changed',
      actor,
      from: ['active', 'completed'],
      // One event per asset records its ended claims and copies.
      consequences: ({ counts }) =>
        affectedOf(stale, counts).map((assetId) =>
          sourceChangedEvent(
            byAsset.get(assetId) as SourceChange,
            stale.filter((row) => row.asset_id === assetId),
            counts.get(assetId) as CopyCounts,
            actor,
          ),
        ),
    },
    now,
  );
  return affectedOf(stale, counts);
}

/** The assets that lost a copy or a claim, in the order they were looked up. */
function affectedOf(stale: { asset_id: string }[], counts: Map<string, CopyCounts>): string[] {
  return [...new Set(stale.map((row) => row.asset_id))].filter((assetId) => counts.has(assetId));
}

function sourceChangedEvent(change: SourceChange, mine: { id: number; node_id: number; state: string }[], counts: CopyCounts, actor: string): NewEvent {
  return {
    actor,
    kind: 'asset.source_changed',
    subjectType: 'asset',
    subjectId: change.assetId,
    data: {
      reason: 'source_changed',
      url: change.fromUrl === change.toUrl ? null : { from: change.fromUrl, to: change.toUrl },
      sha256: change.fromSha256 === change.toSha256 ? null : { from: change.fromSha256, to: change.toSha256 },
      superseded_copies: mine.filter((row) => row.state === 'completed').map((row) => ({ allocation_id: row.id, node_id: row.node_id })),
      ended_claims: mine.filter((row) => row.state === 'active').map((row) => ({ allocation_id: row.id, node_id: row.node_id })),
      copies: counts.copies,
      state: counts.state,
    },
  };
}
