import fsp from 'node:fs/promises';
import path from 'node:path';
import { exists, syncDirectory } from './files.js';
import { removePieceLayer } from './piece-layer-file.js';
import type { CopyRecord } from './storage.js';

/**
 * The store's manifest, `manifest.jsonl`: one line per copy kept or removed, appended and fsynced
 * as it happens; the last line for a copy's path wins. Compacted by rewriting it whole.
 */

/** Where a store keeps things, all under `root`. */
export interface Layout {
  root: string;
  assets: string;
  partial: string;
  manifest: string;
}

type ManifestLine =
  | { op: 'copy'; asset_id: string; path: string; bytes: number; sha256: string; merkle_root?: string; completed_at: string; mtime_ms?: number }
  | { op: 'remove'; asset_id: string; path: string; at: string };

export async function readManifest(
  layout: Layout,
  warn: (message: string) => void,
): Promise<{ copies: Map<string, CopyRecord>; exists: boolean; stale: boolean }> {
  const copies = new Map<string, CopyRecord>();
  let text: string;
  try {
    text = await fsp.readFile(layout.manifest, 'utf8');
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return { copies, exists: false, stale: false };
    throw error;
  }
  const lines = text.split('\n');
  const unterminated = lines.at(-1) !== '';
  let valid = 0;
  for (const [index, line] of lines.entries()) {
    if (line === '') continue;
    const entry = parseLine(layout, line);
    if (!entry) {
      warn(index === lines.length - 1 ? 'manifest: ignoring a torn last line (an interrupted write)' : `manifest: ignoring unreadable line ${index + 1}`);
      continue;
    }
    valid += 1;
    const absolute = path.resolve(layout.root, entry.path);
    if (entry.op === 'copy') {
      const { asset_id: assetId, bytes, sha256, merkle_root: merkleRoot, completed_at: completedAt, mtime_ms: mtimeMs } = entry;
      copies.set(assetId, {
        assetId,
        path: absolute,
        bytes,
        sha256,
        ...(merkleRoot === undefined ? {} : { merkleRoot }),
        completedAt,
        ...(typeof mtimeMs === 'number' ? { mtimeMs } : {}),
      });
    } else if (copies.get(entry.asset_id)?.path === absolute) copies.delete(entry.asset_id);
  }
  for (const record of copies.values()) {
    if (await exists(record.path)) continue;
    warn(`manifest: the copy of ${JSON.stringify(record.assetId)} is missing from disk; forgetting it`);
    await removePieceLayer(record.path);
    copies.delete(record.assetId);
  }
  return { copies, exists: true, stale: unterminated || valid !== copies.size || valid !== lines.filter(Boolean).length };
}

function parseLine(layout: Layout, line: string): ManifestLine | null {
  let parsed: unknown;
  try {
    parsed = JSON.parse(line);
  } catch {
    return null;
  }
  if (typeof parsed !== 'object' || parsed === null) return null;
  const entry = parsed as Partial<Record<string, unknown>>;
  if (typeof entry.asset_id !== 'string' || typeof entry.path !== 'string') return null;
  // Only a file inside assets/ is ever removed on the manifest's word.
  if (!path.resolve(layout.root, entry.path).startsWith(layout.assets + path.sep)) return null;
  if (entry.op === 'remove' && typeof entry.at === 'string') return entry as ManifestLine;
  const isCopy =
    entry.op === 'copy' &&
    typeof entry.bytes === 'number' &&
    typeof entry.sha256 === 'string' &&
    typeof entry.completed_at === 'string' &&
    (entry.merkle_root === undefined || (typeof entry.merkle_root === 'string' && /^[0-9a-f]{64}$/.test(entry.merkle_root)));
  return isCopy ? (entry as ManifestLine) : null;
}

export function toLine(layout: Layout, record: CopyRecord): ManifestLine {
  return {
    op: 'copy',
    asset_id: record.assetId,
    path: relativePath(layout, record.path),
    bytes: record.bytes,
    sha256: record.sha256,
    ...(record.merkleRoot === undefined ? {} : { merkle_root: record.merkleRoot }),
    completed_at: record.completedAt,
    ...(record.mtimeMs === undefined ? {} : { mtime_ms: record.mtimeMs }),
  };
}

export const relativePath = (layout: Layout, absolute: string) => path.relative(layout.root, absolute).split(path.sep).join('/');

/** One `appendFile` per line, fsynced before the caller goes on. */
export async function appendLine(layout: Layout, line: ManifestLine): Promise<void> {
  const handle = await fsp.open(layout.manifest, 'a', 0o600);
  try {
    await handle.appendFile(`${JSON.stringify(line)}\n`);
    await handle.sync();
  } finally {
    await handle.close();
  }
}

/** Replaces the manifest with one line per kept copy: a temporary file, fsynced, renamed over it. */
export async function writeManifest(layout: Layout, records: Iterable<CopyRecord>): Promise<void> {
  const temporary = `${layout.manifest}.tmp`;
  const handle = await fsp.open(temporary, 'w', 0o600);
  try {
    await handle.writeFile([...records].map((record) => `${JSON.stringify(toLine(layout, record))}\n`).join(''));
    await handle.sync();
  } finally {
    await handle.close();
  }
  await fsp.rename(temporary, layout.manifest);
  await syncDirectory(layout.root);
}
