import fs from 'node:fs';
import fsp from 'node:fs/promises';
import { withBackoff, type Client, type CopyFault, type LostCopy } from './client.js';
import type { ReadPace } from './files.js';
import type { Progress } from './progress.js';
import { retryOptions } from './registration.js';
import type { CopyRecord, Store } from './storage.js';

/** What the transfer loop and the copy checks share. */
export interface CopyDeps {
  client: Client;
  store: Store;
  nodeId: number;
  progress: Progress;
  signal: AbortSignal;
}

/**
 * How far a check reads: `never` looks at the file only, `if-changed` re-hashes it when its mtime
 * is not the one recorded, `always` re-hashes it.
 */
export type Rehash = 'never' | 'if-changed' | 'always';

export type CopyCheck =
  | { ok: true; record: CopyRecord }
  /** `bad`: the kept copy that failed, to be forgotten; absent when there is none, or it may be good. */
  | { ok: false; reason: CopyFault; detail: string; bad?: CopyRecord };

/**
 * Whether this node can vouch for its copy of `assetId`: it is in the manifest, of the version the
 * control plane counts (`counted`, when known), its file is present with the size recorded and, as
 * far as `rehash` reads, the sha256 recorded. A wrong size counts as missing: the copy recorded is
 * not there. A copy of another version is not bad: it may be the only one of what the source
 * published before. A file this process may not read is unreadable, never bad.
 */
export async function checkCopy(
  store: Store,
  assetId: string,
  counted: { sha256: string; bytes: number } | undefined,
  rehash: Rehash,
  pace: ReadPace = {},
): Promise<CopyCheck> {
  const record = store.copyOf(assetId);
  if (!record) return { ok: false, reason: 'missing', detail: "not in this node's manifest" };
  if (counted && (counted.sha256.toLowerCase() !== record.sha256 || counted.bytes !== record.bytes))
    return { ok: false, reason: 'missing', detail: `this node keeps another version (${record.bytes} bytes, sha256 ${record.sha256})` };
  let stat: fs.Stats;
  try {
    stat = await fsp.stat(record.path);
    await fsp.access(record.path, fs.constants.R_OK);
  } catch (error) {
    const code = String((error as NodeJS.ErrnoException).code);
    if (code === 'ENOENT' || code === 'ENOTDIR') return { ok: false, reason: 'missing', detail: 'its file is gone from disk', bad: record };
    return { ok: false, reason: 'unreadable', detail: `its file cannot be read (${code})` };
  }
  if (!stat.isFile() || stat.size !== record.bytes)
    return { ok: false, reason: 'missing', detail: `its file holds ${stat.size} bytes, not the ${record.bytes} recorded`, bad: record };
  if (rehash === 'never' || (rehash === 'if-changed' && stat.mtimeMs === record.mtimeMs)) return { ok: true, record };
  if (await store.verify(assetId, pace)) return { ok: true, record: store.copyOf(assetId) ?? record };
  return { ok: false, reason: 'corrupt', detail: 'its sha256 no longer matches the one recorded', bad: record };
}

/** Forgets a bad copy, its file too, unless the store has meanwhile replaced it with another. */
export async function dropCopy(store: Store, bad: CopyRecord): Promise<void> {
  if (store.copyOf(bad.assetId)?.path === bad.path) await store.remove(bad.assetId);
}

const REPORT_BATCH = 1000;

/**
 * Tells the control plane which copies were just proved and which are lost, in batches of 1000 of
 * each, asking again while it cannot be reached. A refusal is logged, not thrown: the next check
 * reports them again.
 */
export async function sendCopyReport(deps: CopyDeps, checked: string[], lost: LostCopy[]): Promise<void> {
  const { client, nodeId, progress, signal } = deps;
  for (let at = 0; at < Math.max(checked.length, lost.length); at += REPORT_BATCH) {
    const batch = { checked: checked.slice(at, at + REPORT_BATCH), lost: lost.slice(at, at + REPORT_BATCH) };
    const body = { ...(batch.checked.length > 0 ? { checked: batch.checked } : {}), ...(batch.lost.length > 0 ? { lost: batch.lost } : {}) };
    try {
      await withBackoff(() => client.reportCopies(nodeId, body, signal), retryOptions(progress, signal));
    } catch (error) {
      if (signal.aborted) return;
      progress.log(`could not report ${batch.checked.length} checked and ${batch.lost.length} lost copies: ${(error as Error).message}`);
    }
  }
}
