import fsp from 'node:fs/promises';
import path from 'node:path';
import { printable } from '../lib/printable.js';
import { restoreAsset, verifiedSize, type RestorePolicy } from './asset-download.js';
import type { FetchDisplay } from './fetch-progress.js';
import { claimName, nameVariants, safeSegment } from './file-names.js';
import { ControlPlaneError, describeRefusal, type AssetDetail, type RestoreClient } from './restore-client.js';

export interface FetchRunDeps {
  display: FetchDisplay;
  /** One line per asset's outcome (stdout). */
  report(line: string): void;
  signal: AbortSignal;
  policy: RestorePolicy;
}

/** A refusal that every other asset would meet too (the token, the disk): the run stops. */
export class FetchStopped extends Error {}

/** What a download needs to know about an asset, from GET /assets/{id} or, without it, nothing. */
export interface Wanted {
  id: string;
  name: string;
  sha256: string | null;
  maxBytes: number | null;
}

/**
 * `dispatcher fetch ID…`: each asset into `out`: a file for one id (replaced once the new one is
 * verified) unless it is a directory; a directory for several, default the current one. There a
 * file is named after its asset, and a name is never taken twice nor over a file that is not this
 * asset: those get `-2`, `-3`…. True when every asset was restored or already there, verified.
 */
export async function fetchAssets(client: RestoreClient, ids: string[], out: string | undefined, deps: FetchRunDeps): Promise<boolean> {
  const unique = [...new Set(ids)];
  const target = await resolveTarget(unique.length, out);
  const taken = new Set<string>();
  let ok = true;
  for (const id of unique) {
    const wanted = await describeWanted(client, id, deps.signal);
    if (typeof wanted === 'string') {
      deps.report(`FAILED ${printable(id)}: ${wanted}`);
      ok = false;
      continue;
    }
    const chosen = target.kind === 'file' ? await presentAt(target.path, wanted) : await chooseFile(target.path, wanted, taken);
    if (chosen.present) {
      deps.report(`present ${chosen.file} (${printable(id)}, sha256 ${wanted.sha256} verified)`);
      continue;
    }
    const outcome = await restoreAsset(
      client,
      { assetId: id, destination: chosen.file, partial: `${chosen.file}.part`, sha256: wanted.sha256, maxBytes: wanted.maxBytes },
      deps.display.download(path.basename(chosen.file)),
      deps.signal,
      deps.policy,
    );
    deps.display.clear();
    if (outcome.ok) deps.report(`saved ${chosen.file} (${printable(id)}, ${outcome.bytes} bytes, sha256 ${outcome.sha256} verified)`);
    else if (outcome.fatal) throw new FetchStopped(`${printable(id)}: ${outcome.reason}`);
    else {
      deps.report(`FAILED ${printable(id)}: ${outcome.reason}`);
      ok = false;
    }
  }
  return ok;
}

/**
 * The asset as GET /assets/{id} describes it, or why not (a string). Without a token a 401 there
 * is no failure: a server with RESTORE_ACCESS=public may still restore, named after the id and
 * checked against the relay's ETag.
 */
export async function describeWanted(client: RestoreClient, id: string, signal: AbortSignal): Promise<Wanted | string> {
  let detail: AssetDetail;
  try {
    detail = await client.asset(id, signal);
  } catch (error) {
    if (!(error instanceof ControlPlaneError)) throw error;
    if (error.status === 401 && !client.hasToken) return { id, name: safeSegment(id, 'asset'), sha256: null, maxBytes: null };
    const refusal = describeRefusal(error, client.origin, client.hasToken);
    if (error.status === 401 || error.status === 403) throw new FetchStopped(refusal);
    return refusal;
  }
  return { id, name: safeSegment(detail.name, safeSegment(id, 'asset')), sha256: detail.sha256, maxBytes: copySize(detail) };
}

/** The size of a verified copy with the asset's checksum: more bytes than that cannot be the file. */
export function copySize(detail: AssetDetail): number | null {
  const copy = detail.copies_detail.find((each) => each.verified && each.bytes !== null && (detail.sha256 === null || each.sha256 === detail.sha256));
  return copy?.bytes ?? null;
}

async function resolveTarget(count: number, out: string | undefined): Promise<{ kind: 'file' | 'directory'; path: string }> {
  const resolved = path.resolve(out ?? '.');
  const isDirectory = (await fsp.stat(resolved).catch(() => null))?.isDirectory() === true;
  if (count === 1 && out !== undefined && !isDirectory && !/[/\\]$/.test(out)) {
    await fsp.mkdir(path.dirname(resolved), { recursive: true });
    return { kind: 'file', path: resolved };
  }
  await fsp.mkdir(resolved, { recursive: true });
  return { kind: 'directory', path: resolved };
}

/** A file named by the user: written (once verified) whatever it held, skipped when it holds this asset already. */
async function presentAt(file: string, wanted: Wanted): Promise<{ file: string; present: boolean }> {
  return { file, present: await holds(file, wanted) };
}

/** The first variant of the asset's name that is free in this run and on disk, or holds this asset already. */
async function chooseFile(directory: string, wanted: Wanted, taken: Set<string>): Promise<{ file: string; present: boolean }> {
  for (const variant of nameVariants(wanted.name)) {
    if (taken.has(variant.toLowerCase())) continue;
    const file = path.join(directory, variant);
    const exists = (await fsp.stat(file).catch(() => null)) !== null;
    if (exists && !(await holds(file, wanted))) continue;
    claimName(variant, taken);
    return { file, present: exists };
  }
  throw new Error('unreachable: nameVariants never ends');
}

async function holds(file: string, wanted: Wanted): Promise<boolean> {
  return (await verifiedSize(file, wanted.sha256)) !== null;
}
