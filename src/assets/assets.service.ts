import { toIso } from '../clock.js';
import type { Config } from '../config.js';
import type { Db } from '../db/database.js';
import { appendEvents } from '../events/events.repository.js';
import { MIB } from '../http/schemas.js';
import { upsertAssets, type AssetInput as AssetRecord } from './assets.repository.js';
import type { AssetInput, AssetView } from './assets.schemas.js';
import type { AssetRow } from './assets.table.js';

/** How many copies an asset wants when it does not say: by priority when configured, else one default. */
export type ReplicaDefault = (priority: number) => number;

export function replicaDefaultFrom(config: Pick<Config, 'replicasByPriority' | 'defaultReplicasTarget'>): ReplicaDefault {
  const rules = config.replicasByPriority;
  if (!rules) return () => config.defaultReplicasTarget;
  return (priority) => rules.find(([threshold]) => priority >= threshold)?.[1] ?? config.defaultReplicasTarget;
}

/** Seed-format assets to rows: size_bytes wins over size_mb (MiB); a later duplicate id wins. */
export function toAssetRecords(inputs: AssetInput[], defaults: { replicasFor: ReplicaDefault }): AssetRecord[] {
  const byId = new Map<string, AssetRecord>();
  for (const input of inputs) {
    const sizeBytes = input.size_bytes ?? (input.size_mb === null || input.size_mb === undefined ? null : Math.round(input.size_mb * MIB));
    byId.set(input.id, {
      id: input.id,
      name: input.name,
      url: input.url,
      sizeBytes,
      priority: input.priority,
      replicasTarget: input.replicas_target ?? defaults.replicasFor(input.priority),
      source: input.source ?? null,
      dataset: input.dataset ?? null,
      organization: input.organization ?? null,
      format: input.format ?? null,
      sha256: input.sha256?.toLowerCase() ?? null,
    });
  }
  return [...byId.values()];
}

/** Upserts assets by id in one transaction and records one `assets.imported` event. */
export async function importAssets(
  db: Db,
  inputs: AssetInput[],
  options: { replicasFor: ReplicaDefault; actor: string; source: string },
  now: number,
): Promise<number> {
  const records = toAssetRecords(inputs, options);
  await db.transaction().execute(async (trx) => {
    await upsertAssets(trx, records, now);
    await appendEvents(trx, now, [
      { actor: options.actor, kind: 'assets.imported', subjectType: 'import', subjectId: options.source, data: { count: records.length } },
    ]);
  });
  return records.length;
}

/** Verified copies that must share a checksum before it stands for an asset that has none: the quorum's minimum. */
export const AGREED_CHECKSUM_COPIES = 2;

/**
 * The checksum an asset's verified copies agree on, when at least `AGREED_CHECKSUM_COPIES` of them
 * do; null otherwise. Verified copies share one checksum (the quorum verifies only its winner).
 */
export function agreedChecksum(copies: { verified: boolean; sha256: string | null }[]): string | null {
  const counts = new Map<string, number>();
  for (const copy of copies) if (copy.verified && copy.sha256) counts.set(copy.sha256.toLowerCase(), (counts.get(copy.sha256.toLowerCase()) ?? 0) + 1);
  const [best] = [...counts].sort((a, b) => b[1] - a[1]);
  return best && best[1] >= AGREED_CHECKSUM_COPIES ? best[0] : null;
}

export function toAssetView(row: AssetRow): AssetView {
  return {
    id: row.id,
    name: row.name,
    url: row.url,
    size_mb: row.size_bytes === null ? null : Math.round((row.size_bytes / MIB) * 1000) / 1000,
    size_bytes: row.size_bytes,
    priority: row.priority,
    replicas_target: row.replicas_target,
    state: row.state,
    copies: row.copies,
    active_allocations: row.holders - row.copies,
    dataset: row.dataset,
    organization: row.organization,
    format: row.format,
    sha256: row.sha256,
    source: row.source,
    first_seen: toIso(row.first_seen_at),
    last_seen: toIso(row.last_seen_at),
    removed_from_source: toIso(row.removed_from_source_at),
    source_errors: row.source_errors,
    source_error: row.source_error,
  };
}
