import crypto from 'node:crypto';
import fsp from 'node:fs/promises';
import path from 'node:path';
import type { CopyDigest } from '../lib/merkle.js';
import { exists, measureFile, removeFiles, removeIfEmpty, syncDirectory, type ReadPace } from './files.js';
import { appendLine, readManifest, relativePath, toLine, writeManifest, type Layout } from './manifest.js';
import { readPieceLayer, removePieceLayer, writePieceLayer, type KeptPieceLayer } from './piece-layer-file.js';

/** A completed copy this node keeps. `path` is absolute. */
export interface CopyRecord {
  assetId: string;
  path: string;
  bytes: number;
  sha256: string;
  /** The copy's Merkle root (BEP 52 pieces root); unknown for a copy kept before roots were, until it is next read in full. */
  merkleRoot?: string;
  completedAt: string;
  /** The file's mtime when it was last proved to match: the same mtime lets a check trust it without reading it. */
  mtimeMs?: number;
}

export interface LegacyCopy {
  assetId: string;
  /** The asset's name and URL, as the control plane lists them: the old agent named the file after them. */
  name: string;
  url: string;
  sha256: string;
  bytes: number;
}

export interface Store {
  /** Where this asset's partial download lives (stable across restarts, distinct for distinct ids). */
  partialPath(assetId: string): string;
  /** The copy this node keeps of an asset, if any. */
  copyOf(assetId: string): CopyRecord | undefined;
  copies(): CopyRecord[];
  /**
   * Links a checked partial into assets/<key>/ without ever replacing a file, re-hashes the result
   * and refuses it (keeping nothing) unless it matches, keeps its piece layer beside it, records
   * it, then removes the partial and its .json. A copy the asset had before stays on disk; the
   * manifest then names the new one.
   */
  commit(input: { assetId: string; fileName: string; partial: string; sha256: string; bytes: number; merkleRoot: string }): Promise<CopyRecord>;
  /** Deletes a copy (e.g. the control plane refused it) and its piece layer, and records the removal. */
  remove(assetId: string): Promise<void>;
  /**
   * Whether the kept copy's file still has the size, sha256 and Merkle root recorded for it (read
   * in full, at `pace`; rejects when its signal aborts). A match records the file's mtime as read
   * and its root when none was, and writes its piece layer again when that is missing or wrong.
   */
  verify(assetId: string, pace?: ReadPace): Promise<boolean>;
  /**
   * The kept copy's Merkle root and piece layer: the one kept beside it, else (missing or not
   * matching the record) rebuilt by `verify`, which reads the whole copy. Null when there is no
   * copy or its file no longer matches its record.
   */
  pieceLayerOf(assetId: string, pace?: ReadPace): Promise<KeptPieceLayer | null>;
  /** Removes partials of assets not in `keep` (which must include every running download) and empty folders. */
  cleanUp(keep: Set<string>): Promise<{ partials: number; folders: number }>;
  /**
   * Takes over the copies the old layout holds (assets/<legacyName(id)>/<legacyName(name)>) that match
   * what the control plane says this node completed, then removes the adopted legacy files, legacy
   * partials and empty legacy folders. Legacy files nothing vouches for are left where they are.
   */
  adoptLegacy(completed: LegacyCopy[], onProgress?: (done: number, total: number) => void): Promise<{ adopted: number; missing: string[] }>;
  /** True when there is no manifest yet and assets/ or partial/ hold something: the old layout. */
  needsLegacyAdoption(): Promise<boolean>;
}

const DIRECTORY_MODE = 0o700;
/** Names this store gives: anything else under assets/ or partial/ is from the old layout. */
const STORE_NAME = /-[0-9a-f]{32}(\.part(\.json)?)?$/;

/**
 * Opens the store under `dataDirectory`, reading the manifest (a torn last line is ignored with a warning)
 * and compacting it when it holds lines that no longer describe a kept copy.
 */
export async function openStore(dataDirectory: string, options: { onWarning?(message: string): void; now?(): Date } = {}): Promise<Store> {
  const root = path.resolve(dataDirectory);
  const layout: Layout = { root, assets: path.join(root, 'assets'), partial: path.join(root, 'partial'), manifest: path.join(root, 'manifest.jsonl') };
  const warn = options.onWarning ?? (() => undefined);
  const now = options.now ?? (() => new Date());
  for (const directory of [root, layout.assets, layout.partial]) await fsp.mkdir(directory, { recursive: true, mode: DIRECTORY_MODE });

  const loaded = await readManifest(layout, warn);
  const copies = loaded.copies;
  if (loaded.stale || (!loaded.exists && !(await holdsAnything(layout)))) await writeManifest(layout, copies.values());

  let chain: Promise<unknown> = Promise.resolve();
  const serialize = <T>(work: () => Promise<T>): Promise<T> => {
    const next = chain.then(work);
    chain = next.catch(() => undefined);
    return next;
  };
  const needsLegacyAdoption = async () => !(await exists(layout.manifest)) && (await holdsAnything(layout));
  const verify = async (assetId: string, pace: ReadPace = {}): Promise<boolean> => {
    const record = copies.get(assetId);
    const before = record && (await fsp.stat(record.path).catch(() => null));
    if (!record || !before) return false;
    const found = await measureFile(record.path, pace).catch((error: unknown) => {
      if (pace.signal?.aborted) throw error;
      return null;
    });
    const intact =
      found !== null && found.sha256 === record.sha256 && found.bytes === record.bytes && (record.merkleRoot ?? found.merkleRoot) === found.merkleRoot;
    if (!intact) return false;
    const layerKept = (await readPieceLayer(record.path, found)) !== null;
    const recorded = before.mtimeMs === record.mtimeMs && record.merkleRoot !== undefined;
    if (layerKept && recorded) return true;
    await serialize(async () => {
      // Replaced or removed meanwhile: a piece layer written now would outlive its copy.
      if (copies.get(assetId) !== record) return;
      if (!layerKept) await keepPieceLayer(record.path, found, warn);
      if (recorded) return;
      const proved = { ...record, merkleRoot: found.merkleRoot, mtimeMs: before.mtimeMs };
      await appendLine(layout, toLine(layout, proved));
      copies.set(assetId, proved);
    });
    return true;
  };

  return {
    partialPath: (assetId) => path.join(layout.partial, `${keyFor(assetId)}.part`),
    copyOf: (assetId) => copies.get(assetId),
    copies: () => [...copies.values()],
    async commit(input) {
      const directory = path.join(layout.assets, keyFor(input.assetId));
      const target = await linkWithoutOverwrite(input.partial, directory, fileNameOf(input.fileName));
      const found = await measureFile(target);
      if (found.sha256 !== input.sha256.toLowerCase() || found.bytes !== input.bytes || found.merkleRoot !== input.merkleRoot) {
        await removeFiles(target, input.partial, `${input.partial}.json`);
        throw new Error(
          `refused ${input.assetId}: the file holds ${found.bytes} bytes with sha256 ${found.sha256} and Merkle root ${found.merkleRoot}, expected ${input.bytes} bytes with sha256 ${input.sha256} and Merkle root ${input.merkleRoot}`,
        );
      }
      await keepPieceLayer(target, found, warn);
      await syncDirectory(directory);
      const { mtimeMs } = await fsp.stat(target);
      const record: CopyRecord = {
        assetId: input.assetId,
        path: target,
        bytes: found.bytes,
        sha256: found.sha256,
        merkleRoot: found.merkleRoot,
        completedAt: now().toISOString(),
        mtimeMs,
      };
      await serialize(async () => {
        await appendLine(layout, toLine(layout, record));
        copies.set(input.assetId, record);
      });
      // An earlier version (superseded when the source changed) stays on disk beside the new one:
      // it may be the only copy of what the source published before.
      await removeFiles(input.partial, `${input.partial}.json`);
      return record;
    },
    remove: (assetId) =>
      serialize(async () => {
        const record = copies.get(assetId);
        if (!record) return;
        await fsp.rm(record.path, { force: true });
        await removePieceLayer(record.path);
        await appendLine(layout, { op: 'remove', asset_id: assetId, path: relativePath(layout, record.path), at: now().toISOString() });
        copies.delete(assetId);
      }),
    verify,
    async pieceLayerOf(assetId, pace = {}) {
      const record = copies.get(assetId);
      const kept = record && (await readPieceLayer(record.path, record));
      if (!record || kept) return kept ?? null;
      if (!(await verify(assetId, pace))) return null;
      const proved = copies.get(assetId) ?? record;
      return readPieceLayer(proved.path, proved);
    },
    cleanUp: (keep) => cleanUp(layout, new Set([...keep].map(keyFor))),
    needsLegacyAdoption,
    async adoptLegacy(completed, onProgress) {
      if (!(await needsLegacyAdoption())) return { adopted: 0, missing: [] };
      const adopted = await adoptMatching(layout, completed, now, warn, onProgress);
      await serialize(async () => {
        for (const record of adopted.records) copies.set(record.assetId, record);
        await writeManifest(layout, copies.values());
      });
      await removeLegacyLeftovers(layout, adopted.legacyFiles);
      return { adopted: adopted.records.length, missing: adopted.missing };
    },
  };
}

/** A file name for an asset: its name, else the URL's last path segment, else `data`; never a path. */
export function fileNameFor(name: string, url: string): string {
  return fileNameOf(rawFileName(name, url));
}

/** The old agent's mapping of ids and names to paths (lossy: distinct ids could share a name). */
export function legacyName(raw: string): string {
  const cleaned = raw
    .replace(/[^A-Za-z0-9._-]/g, '_')
    .replace(/^\.+/, '_')
    .slice(0, 200);
  return cleaned || '_';
}

/** `<readable prefix>-<32 hex of sha256(id)>`: distinct for distinct ids, never `.` or `..`. */
function keyFor(assetId: string): string {
  const digest = crypto.createHash('sha256').update(assetId, 'utf8').digest('hex');
  return `${sanitize(assetId, 48) || '_'}-${digest.slice(0, 32)}`;
}

function fileNameOf(raw: string): string {
  return sanitize(raw, 120) || 'data';
}

function sanitize(raw: string, length: number): string {
  return raw
    .replace(/[^A-Za-z0-9._-]/gu, '_')
    .replace(/^\./, '_')
    .slice(0, length);
}

function rawFileName(name: string, url: string): string {
  if (name) return name;
  try {
    return path.posix.basename(new URL(url).pathname) || 'data';
  } catch {
    return 'data';
  }
}

/**
 * Links `source` as `fileName` in `directory`, or as `<n>-<fileName>` for the first free n: a link
 * fails on an existing name, so no file is ever replaced. A name that already is `source` (an
 * interrupted commit) is reused.
 */
async function linkWithoutOverwrite(source: string, directory: string, fileName: string): Promise<string> {
  const origin = await fsp.stat(source);
  await fsp.mkdir(directory, { recursive: true, mode: DIRECTORY_MODE });
  for (let n = 0; n < 10_000; n += 1) {
    const target = path.join(directory, n === 0 ? fileName : `${n}-${fileName}`);
    try {
      await fsp.link(source, target);
      return target;
    } catch (error) {
      const code = (error as NodeJS.ErrnoException).code;
      // The folder was removed as empty by a concurrent clean-up: make it again and retry this name.
      if (code === 'ENOENT' && (await exists(source))) {
        await fsp.mkdir(directory, { recursive: true, mode: DIRECTORY_MODE });
        n -= 1;
        continue;
      }
      if (code !== 'EEXIST') throw error;
      const existing = await fsp.stat(target).catch(() => null);
      if (existing?.ino === origin.ino && existing.dev === origin.dev) return target;
    }
  }
  throw new Error(`no free file name for ${fileName} in ${directory}`);
}

async function cleanUp(layout: Layout, keptKeys: Set<string>): Promise<{ partials: number; folders: number }> {
  let partials = 0;
  for (const entry of await fsp.readdir(layout.partial, { withFileTypes: true })) {
    if (entry.isDirectory() || keptKeys.has(entry.name.replace(/\.part(\.json)?$/, ''))) continue;
    await fsp.rm(path.join(layout.partial, entry.name), { force: true });
    if (!entry.name.endsWith('.json')) partials += 1;
  }
  let folders = 0;
  for (const parent of [layout.assets, layout.partial]) {
    for (const entry of await fsp.readdir(parent, { withFileTypes: true })) {
      if (entry.isDirectory() && (await removeIfEmpty(path.join(parent, entry.name)))) folders += 1;
    }
  }
  return { partials, folders };
}

async function adoptMatching(
  layout: Layout,
  completed: LegacyCopy[],
  now: () => Date,
  warn: (message: string) => void,
  onProgress?: (done: number, total: number) => void,
) {
  const measured = new Map<string, Promise<CopyDigest | null>>();
  const records: CopyRecord[] = [];
  const legacyFiles = new Set<string>();
  const missing: string[] = [];
  for (const [index, copy] of completed.entries()) {
    const legacy = path.join(layout.assets, legacyName(copy.assetId), legacyName(rawFileName(copy.name, copy.url)));
    // Several ids can share one legacy file: it is hashed once and judged against each.
    if (!measured.has(legacy))
      measured.set(
        legacy,
        measureFile(legacy).catch(() => null),
      );
    const found = await measured.get(legacy);
    if (found && found.bytes === copy.bytes && found.sha256 === copy.sha256.toLowerCase()) {
      const target = await linkWithoutOverwrite(legacy, path.join(layout.assets, keyFor(copy.assetId)), fileNameFor(copy.name, copy.url));
      await keepPieceLayer(target, found, warn);
      const { sha256, bytes, merkleRoot } = found;
      records.push({ assetId: copy.assetId, path: target, bytes, sha256, merkleRoot, completedAt: now().toISOString() });
      legacyFiles.add(legacy);
    } else {
      missing.push(copy.assetId);
    }
    onProgress?.(index + 1, completed.length);
  }
  return { records, legacyFiles, missing };
}

/** Runs only once the adopted copies are in the manifest: their new links keep the data. */
async function removeLegacyLeftovers(layout: Layout, legacyFiles: Set<string>): Promise<void> {
  await removeFiles(...legacyFiles);
  for (const entry of await fsp.readdir(layout.partial, { withFileTypes: true })) {
    if (!entry.isDirectory() && !STORE_NAME.test(entry.name)) await fsp.rm(path.join(layout.partial, entry.name), { force: true });
  }
  for (const entry of await fsp.readdir(layout.assets, { withFileTypes: true })) {
    if (entry.isDirectory() && !STORE_NAME.test(entry.name)) await removeIfEmpty(path.join(layout.assets, entry.name));
  }
}

/** A piece layer that cannot be written costs no copy: it is rebuilt from the copy when next needed. */
async function keepPieceLayer(copyPath: string, digest: CopyDigest, warn: (message: string) => void): Promise<void> {
  await writePieceLayer(copyPath, digest).catch((error: unknown) => warn(`could not keep the piece layer of ${copyPath}: ${(error as Error).message}`));
}

async function holdsAnything(layout: Layout): Promise<boolean> {
  return (await fsp.readdir(layout.assets)).length > 0 || (await fsp.readdir(layout.partial)).length > 0;
}
