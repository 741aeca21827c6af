import crypto from 'node:crypto';
import fsp from 'node:fs/promises';
import path from 'node:path';
import { rootOfPieceLayer } from '../lib/merkle.js';
import { syncDirectory } from './files.js';

/**
 * A copy's piece layer, kept beside it so that a block can be proved by reading one piece of the
 * copy, not all of it: `assets/<key>/.<file name>.pieces` for `assets/<key>/<file name>`. The store
 * never gives a copy a name that starts with a dot, so the two cannot collide. The file is one
 * header line, `dispatcher-pieces 1 <bytes> <merkle root>`, then the layer's hashes as raw bytes.
 */
export function pieceLayerPath(copyPath: string): string {
  return path.join(path.dirname(copyPath), `.${path.basename(copyPath)}.pieces`);
}

const MAGIC = 'dispatcher-pieces 1';
const HEADER = new RegExp(`^${MAGIC} (\\d+) ([0-9a-f]{64})$`);

export interface KeptPieceLayer {
  merkleRoot: string;
  pieceLayer: Buffer;
}

/** Written whole or not at all (a temporary file, fsynced, renamed over), readable by this account alone. */
export async function writePieceLayer(copyPath: string, layer: KeptPieceLayer & { bytes: number }): Promise<void> {
  const target = pieceLayerPath(copyPath);
  const temporary = `${target}.${crypto.randomBytes(6).toString('hex')}.tmp`;
  const handle = await fsp.open(temporary, 'wx', 0o600);
  try {
    await handle.writeFile(Buffer.concat([Buffer.from(`${MAGIC} ${layer.bytes} ${layer.merkleRoot}\n`), layer.pieceLayer]));
    await handle.sync();
  } catch (error) {
    await handle.close();
    await fsp.rm(temporary, { force: true });
    throw error;
  }
  await handle.close();
  await fsp.rename(temporary, target);
  await syncDirectory(path.dirname(target));
}

/**
 * The piece layer kept beside the copy, or null when there is none or it does not describe a file
 * of `bytes` bytes whose root is `merkleRoot` (when known): the layer must hash to the root it names.
 */
export async function readPieceLayer(copyPath: string, expected: { bytes: number; merkleRoot?: string }): Promise<KeptPieceLayer | null> {
  let content: Buffer;
  try {
    content = await fsp.readFile(pieceLayerPath(copyPath));
  } catch {
    return null;
  }
  const end = content.indexOf('\n');
  const header = HEADER.exec(content.subarray(0, Math.max(0, end)).toString('latin1'));
  if (end < 0 || !header || Number(header[1]) !== expected.bytes) return null;
  const merkleRoot = header[2] as string;
  const pieceLayer = content.subarray(end + 1);
  if ((expected.merkleRoot !== undefined && merkleRoot !== expected.merkleRoot) || rootOfPieceLayer(pieceLayer, expected.bytes) !== merkleRoot) return null;
  return { merkleRoot, pieceLayer };
}

export async function removePieceLayer(copyPath: string): Promise<void> {
  await fsp.rm(pieceLayerPath(copyPath), { force: true });
}
