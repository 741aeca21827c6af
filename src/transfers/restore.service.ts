import type { SafeFetch } from '../agent/safe-fetch.js';
import { findAsset } from '../assets/assets.repository.js';
import type { Db } from '../db/database.js';
import { AppError } from '../errors.js';
import { agreedHolders, isOnline, noHolderOnline, type RelayPlan } from './relay.js';
import { parseRange } from './transfers.schemas.js';
import { holdersOf } from './transfers.repository.js';

export interface RestoreDeps {
  /** Fetches from sources under the control plane's own address policy. */
  sourceFetch: SafeFetch;
  onlineWithinMs: number;
}

export interface RestoreInput {
  assetId: string;
  range: string | undefined;
  ifRange: string | undefined;
  preferSource: boolean;
}

export type RestorePlan = { kind: 'redirect'; url: string } | { kind: 'relay'; relayPlan: RelayPlan; partial: boolean; name: string };

/** How long the source check waits for the source's first answer. */
const SOURCE_CHECK_MS = 3000;
/** What a 503 NO_HOLDER_ONLINE asks the client to wait before it tries again. */
const RETRY_AFTER_SECONDS = 30;

/**
 * Decides how a restore is answered: 404 without the asset or a counted copy; a redirect to the
 * source while it still serves the same size (when preferred); 503 NO_HOLDER_ONLINE when no holder
 * of the agreed copy is online; else the plan of a relay of the range asked for (a Range whose
 * If-Range names another copy gets the whole copy).
 */
export async function planRestore(db: Db, deps: RestoreDeps, input: RestoreInput, now: number): Promise<RestorePlan> {
  const asset = await findAsset(db, input.assetId);
  if (!asset) throw new AppError('ASSET_NOT_FOUND', `No asset has id "${input.assetId}".`);
  const agreed = agreedHolders(await holdersOf(db, asset.id), asset.sha256);
  if (!agreed) throw new AppError('NO_COPY', `No verified copy of "${asset.id}" exists (copies: ${asset.copies}, state: ${asset.state}).`);
  const rangeApplies = input.ifRange === undefined || input.ifRange === `"${agreed.sha256}"`;
  const range = rangeApplies ? parseRange(input.range, agreed.size) : undefined;
  if (input.preferSource && (await sourceServes(deps.sourceFetch, asset.url, agreed.size))) return { kind: 'redirect', url: asset.url };
  const online = agreed.holders.filter((holder) => isOnline(holder, now, deps.onlineWithinMs));
  if (online.length === 0 && agreed.size > 0) throw noHolderOnline(asset.id, agreed.holders, RETRY_AFTER_SECONDS);
  return {
    kind: 'relay',
    partial: range !== undefined,
    name: asset.name,
    relayPlan: {
      assetId: asset.id,
      purpose: 'restore',
      sha256: agreed.sha256,
      size: agreed.size,
      start: range?.start ?? 0,
      end: range?.end ?? agreed.size,
      holders: online,
    },
  };
}

/** Whether a node holds an active allocation of an asset: what lets it restore the asset to repair it. */
export async function holdsActiveAllocation(db: Db, nodeId: number, assetId: string): Promise<boolean> {
  const row = await db
    .selectFrom('allocations')
    .select('id')
    .where('node_id', '=', nodeId)
    .where('asset_id', '=', assetId)
    .where('state', '=', 'active')
    .executeTakeFirst();
  return row !== undefined;
}

/**
 * Whether the source still serves the copy: it answers a one-byte range with 206 (or 200) and
 * names the counted size. Any doubt (no answer in time, another size, a refused address) relays.
 */
async function sourceServes(sourceFetch: SafeFetch, url: string, size: number): Promise<boolean> {
  try {
    const response = await sourceFetch(url, { headers: { range: 'bytes=0-0' }, signal: AbortSignal.timeout(SOURCE_CHECK_MS) });
    await response.body?.cancel();
    if (response.status === 206) return response.headers.get('content-range')?.endsWith(`/${size}`) === true;
    return response.status === 200 && response.headers.get('content-length') === String(size);
  } catch {
    return false;
  }
}
