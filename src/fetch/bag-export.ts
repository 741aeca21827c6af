import crypto from 'node:crypto';
import fsp from 'node:fs/promises';
import path from 'node:path';
import { printable } from '../lib/printable.js';
import { restoreAsset, verifiedSize } from './asset-download.js';
import { bagInfoText, bagSize, encodeManifestPath, payloadOxum, readBagInfoField, removeBagManifests, writeBagTags, type PayloadFile } from './bagit.js';
import { FetchStopped, copySize, type FetchRunDeps } from './fetch-assets.js';
import { describeSelection } from './fetch.config.js';
import { claimName, safeSegment } from './file-names.js';
import { ControlPlaneError, describeRefusal, type AssetSummary, type RestoreClient, type Selection } from './restore-client.js';

/** Per-file provenance, a tag file of its own (listed in the tag manifest): ids and paths may hold spaces, so not bag-info fields. */
export const ASSETS_TAG_FILE = 'dispatcher-assets.tsv';
/** Partials of a bag live outside data/, so an interrupted export leaves no stray payload file; an unlisted tag directory. */
const PARTIAL_DIRECTORY = '.dispatcher-partial';
const NONE = '_none';

interface Exported extends PayloadFile {
  asset: AssetSummary;
  rescuedAt: string | null;
}

interface BagState {
  exported: Exported[];
  skipped: AssetSummary[];
  failed: { asset: AssetSummary; reason: string }[];
  taken: Set<string>;
  /** Whether the manifests of an earlier export still stand: they go before the first change to data/. */
  sealed: boolean;
}

/**
 * `dispatcher fetch --dataset/--organization/--all --bag DIR`: every listed asset into
 * `data/<organization>/<dataset>/<name>` of a BagIt bag (RFC 8493). Files already there and
 * verified are kept, partials resumed; the tag files are written at the end. Assets without a
 * verified copy are skipped (reported, not a failure). True when every other asset was exported.
 */
export async function exportBag(client: RestoreClient, bagDir: string, selection: Selection, deps: FetchRunDeps, now: number): Promise<boolean> {
  const root = path.resolve(bagDir);
  await refuseOtherExport(root, selection);
  await fsp.mkdir(path.join(root, 'data'), { recursive: true });
  await fsp.mkdir(path.join(root, PARTIAL_DIRECTORY), { recursive: true });
  const state: BagState = { exported: [], skipped: [], failed: [], taken: new Set(), sealed: true };
  let cursor: string | null = null;
  do {
    const page = await listPage(client, selection, cursor, deps.signal);
    for (const asset of page.items) await exportAsset(client, root, asset, state, deps);
    cursor = page.next_cursor;
  } while (cursor !== null);
  const strays = await findStrays(root, new Set(state.exported.map((file) => file.path)));
  for (const stray of strays) deps.report(`STRAY ${stray}: not part of this export; remove it (or use another --bag directory) to make the bag valid`);
  if (strays.length > 0) return false;
  await writeBagTags(root, state.exported, describeBag(client, selection, state, now), [{ name: ASSETS_TAG_FILE, text: assetsTable(state.exported) }]);
  if (state.failed.length === 0) await fsp.rm(path.join(root, PARTIAL_DIRECTORY), { recursive: true, force: true });
  const bytes = state.exported.reduce((sum, file) => sum + file.bytes, 0);
  deps.report(
    `bag ${root}: ${state.exported.length} file(s), ${bytes} bytes; ${state.skipped.length} skipped (no verified copy); ${state.failed.length} failed`,
  );
  return state.failed.length === 0;
}

async function listPage(client: RestoreClient, selection: Selection, cursor: string | null, signal: AbortSignal) {
  try {
    return await client.assets(selection, cursor, signal);
  } catch (error) {
    if (error instanceof ControlPlaneError) throw new FetchStopped(`listing assets: ${describeRefusal(error, client.origin, client.hasToken)}`);
    throw error;
  }
}

async function exportAsset(client: RestoreClient, root: string, asset: AssetSummary, state: BagState, deps: FetchRunDeps): Promise<void> {
  const id = printable(asset.id);
  const skip = () => {
    state.skipped.push(asset);
    deps.report(`skipped ${id}: no verified copy (state ${printable(asset.state)})`);
  };
  if (asset.copies === 0) return skip();
  const relative = claimPayloadPath(asset, state.taken);
  const file = path.join(root, ...relative.split('/'));
  let detail;
  try {
    detail = await client.asset(asset.id, deps.signal);
  } catch (error) {
    if (!(error instanceof ControlPlaneError)) throw error;
    if (error.status === 401 || error.status === 403) throw new FetchStopped(describeRefusal(error, client.origin, client.hasToken));
    if (error.status === 404) return skip();
    return fail(state, deps, asset, describeRefusal(error, client.origin, client.hasToken));
  }
  const rescuedAt = rescueDate(detail);
  const presentBytes = await verifiedSize(file, detail.sha256);
  if (presentBytes !== null) {
    state.exported.push({ path: relative, sha256: detail.sha256!.toLowerCase(), bytes: presentBytes, asset, rescuedAt });
    return deps.report(`present ${relative} (${id}, verified)`);
  }
  // Until this export finishes, the directory is no complete bag.
  if (state.sealed) {
    await removeBagManifests(root);
    state.sealed = false;
  }
  // Whatever else is at that path is an older or broken export of ours: it goes before the download.
  await fsp.rm(file, { force: true });
  await fsp.mkdir(path.dirname(file), { recursive: true });
  const partial = path.join(root, PARTIAL_DIRECTORY, `${crypto.createHash('sha256').update(asset.id).digest('hex').slice(0, 32)}.part`);
  const outcome = await restoreAsset(
    client,
    { assetId: asset.id, destination: file, partial, sha256: detail.sha256, maxBytes: copySize(detail) },
    deps.display.download(relative),
    deps.signal,
    deps.policy,
  );
  deps.display.clear();
  if (outcome.ok) {
    state.exported.push({ path: relative, sha256: outcome.sha256, bytes: outcome.bytes, asset, rescuedAt });
    return deps.report(`saved ${relative} (${id}, ${outcome.bytes} bytes, verified)`);
  }
  if (outcome.fatal) throw new FetchStopped(`${id}: ${outcome.reason}`);
  if (outcome.code === 'NO_COPY' || outcome.code === 'ASSET_NOT_FOUND') return skip();
  fail(state, deps, asset, outcome.reason);
}

function fail(state: BagState, deps: FetchRunDeps, asset: AssetSummary, reason: string): void {
  state.failed.push({ asset, reason });
  deps.report(`FAILED ${printable(asset.id)}: ${reason}`);
}

/** `data/<organization>/<dataset>/<name>`, each segment made safe, the name unique in this bag. */
export function claimPayloadPath(asset: Pick<AssetSummary, 'id' | 'name' | 'organization' | 'dataset'>, taken: Set<string>): string {
  const directory = `data/${safeSegment(asset.organization, NONE)}/${safeSegment(asset.dataset, NONE)}`;
  const name = claimName(safeSegment(asset.name, safeSegment(asset.id, 'asset')), taken, (variant) => `${directory}/${variant}`);
  return `${directory}/${name}`;
}

/** When the first verified copy was made. */
function rescueDate(detail: { copies_detail: { ended_at: string | null; verified: boolean }[] }): string | null {
  const dates = detail.copies_detail.filter((copy) => copy.verified && copy.ended_at !== null).map((copy) => copy.ended_at!);
  return dates.sort()[0] ?? null;
}

function describeBag(client: RestoreClient, selection: Selection, state: BagState, now: number): string {
  const endpoint = new URL(client.origin);
  const organizations = [...new Set(state.exported.map((file) => file.asset.organization).filter((name): name is string => Boolean(name)))].sort();
  return bagInfoText([
    ...organizations.map((name): [string, string] => ['Source-Organization', name]),
    [
      'External-Description',
      `Files rescued by Dispatcher nodes, exported by dispatcher fetch from ${endpoint.origin}; each file's asset id, source URL and rescue date are in ${ASSETS_TAG_FILE}.`,
    ],
    ['Bagging-Date', new Date(now).toISOString().slice(0, 10)],
    ['Bag-Size', bagSize(state.exported.reduce((sum, file) => sum + file.bytes, 0))],
    ['Payload-Oxum', payloadOxum(state.exported)],
    ['Dispatcher-Endpoint', endpoint.origin],
    ['Dispatcher-Selection', describeSelection(selection)],
    ['Dispatcher-Exported', String(state.exported.length)],
    ...state.skipped.map((asset): [string, string] => ['Dispatcher-Skipped', `${asset.id} (no verified copy)`]),
    ...state.failed.map(({ asset }): [string, string] => ['Dispatcher-Failed', `${asset.id} (not exported: run the export again)`]),
  ]);
}

/** One row per payload file: its path (encoded as in the manifest), asset id, checksum, size, source URL and rescue date. */
export function assetsTable(files: Exported[]): string {
  const cell = (value: string | number | null) => printable(String(value ?? ''));
  const rows = [...files]
    .sort((a, b) => (a.path < b.path ? -1 : 1))
    .map((file) =>
      [encodeManifestPath(file.path), file.asset.id, file.sha256, file.bytes, file.asset.url, file.rescuedAt, file.asset.organization, file.asset.dataset]
        .map(cell)
        .join('\t'),
    );
  return `${['path', 'asset_id', 'sha256', 'bytes', 'source_url', 'rescued_at', 'organization', 'dataset'].join('\t')}\n${rows.map((row) => `${row}\n`).join('')}`;
}

/** A bag exported with another selection is not resumed by this one: its files would be strays. */
async function refuseOtherExport(root: string, selection: Selection): Promise<void> {
  const info = await fsp.readFile(path.join(root, 'bag-info.txt'), 'utf8').catch(() => null);
  const earlier = info === null ? [] : readBagInfoField(info, 'Dispatcher-Selection');
  const wanted = printable(describeSelection(selection)).trim();
  if (earlier.length > 0 && !earlier.includes(wanted)) {
    throw new FetchStopped(`${root} holds an export of "${earlier[0]}", not "${wanted}": choose another --bag directory`);
  }
}

/** Files under data/ that this export did not write or verify. */
async function findStrays(root: string, kept: Set<string>): Promise<string[]> {
  const entries = await fsp.readdir(path.join(root, 'data'), { recursive: true, withFileTypes: true });
  return entries
    .filter((entry) => !entry.isDirectory())
    .map((entry) => path.relative(root, path.join(entry.parentPath, entry.name)).split(path.sep).join('/'))
    .filter((relative) => !kept.has(relative))
    .sort();
}
