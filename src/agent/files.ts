import fs from 'node:fs';
import fsp from 'node:fs/promises';
import { createCopyHasher, type CopyDigest } from '../lib/merkle.js';

/** How a whole-file read may be slowed (`throttle` is awaited after each piece read) and stopped. */
export interface ReadPace {
  throttle?(bytes: number): Promise<void>;
  signal?: AbortSignal;
}

/** The file's size, sha256, Merkle root and piece layer, read in full; rejects when `signal` aborts. */
export async function measureFile(file: string, pace: ReadPace = {}): Promise<CopyDigest> {
  const hasher = createCopyHasher();
  for await (const chunk of fs.createReadStream(file, { signal: pace.signal })) {
    hasher.update(chunk as Buffer);
    await pace.throttle?.((chunk as Buffer).length);
  }
  return hasher.digest();
}

export async function removeIfEmpty(directory: string): Promise<boolean> {
  try {
    await fsp.rmdir(directory);
    return true;
  } catch {
    return false; // Not empty, or already gone.
  }
}

export async function removeFiles(...files: string[]): Promise<void> {
  for (const file of files) await fsp.rm(file, { force: true });
}

export async function exists(file: string): Promise<boolean> {
  return fsp.access(file).then(
    () => true,
    () => false,
  );
}

/** Makes a link or rename in `directory` durable, where the platform can sync a directory at all. */
export async function syncDirectory(directory: string): Promise<void> {
  let handle: fsp.FileHandle | undefined;
  try {
    handle = await fsp.open(directory, 'r');
    await handle.sync();
  } catch (error) {
    if (!['EISDIR', 'EPERM', 'EINVAL'].includes(String((error as NodeJS.ErrnoException).code))) throw error;
  } finally {
    await handle?.close();
  }
}
