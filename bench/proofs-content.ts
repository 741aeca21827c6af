import crypto from 'node:crypto';
import fs from 'node:fs/promises';
import { BLOCK_BYTES, blockCount, createCopyHasher, HASH_BYTES, nonceHash, pieceRangeOf, proveBlock } from '../src/lib/merkle.js';
import type { AuditItem } from '../src/agent/client.js';

/**
 * The deterministic contents the proofs suite's copies share: a "shape" is a file of a given size
 * whose 16 KiB block j is the SHA-256 of `shape:j` repeated, so every leaf of its Merkle tree
 * differs and any range can be produced without storing the file.
 */
export interface Shape {
  index: number;
  size: number;
  sha256: string;
  merkleRoot: string;
  pieceLayer: Buffer;
  /**
   * Every level of the shape's Merkle tree (leaves padded with zero hashes to a power of two), so
   * that a simulated holder looks a block's path up instead of hashing its 1 MiB piece as an agent
   * does (3–5 ms each on 2 cores): the holders' CPU must not compete with the control plane's.
   * `describeShape` checks the paths against `proveBlock`.
   */
  levels: Buffer[];
}

const MIB = 1024 * 1024;

function blockOf(shape: number, index: number): Buffer {
  return Buffer.alloc(BLOCK_BYTES, crypto.createHash('sha256').update(`proofs-bench:${shape}:${index}`).digest());
}

/** Bytes [offset, offset + length) of shape `shape`. */
export function contentRange(shape: number, offset: number, length: number): Buffer {
  const out = Buffer.allocUnsafe(length);
  for (let at = 0; at < length;) {
    const position = offset + at;
    const index = Math.floor(position / BLOCK_BYTES);
    const from = position - index * BLOCK_BYTES;
    at += blockOf(shape, index).copy(out, at, from, Math.min(BLOCK_BYTES, from + length - at));
  }
  return out;
}

/** The shape's checksum, Merkle root and piece layer, as the agent's copy hasher computes them, and its tree's levels. */
export function describeShape(index: number, size: number): Shape {
  const hasher = createCopyHasher();
  const blocks = blockCount(size);
  let width = 1;
  while (width < blocks) width *= 2;
  const leaves = Buffer.alloc(width * HASH_BYTES);
  for (let offset = 0; offset < size; offset += MIB) {
    const chunk = contentRange(index, offset, Math.min(MIB, size - offset));
    hasher.update(chunk);
    for (let at = 0; at < chunk.length; at += BLOCK_BYTES) {
      crypto.hash('sha256', chunk.subarray(at, at + BLOCK_BYTES), 'buffer').copy(leaves, ((offset + at) / BLOCK_BYTES) * HASH_BYTES);
    }
  }
  const digest = hasher.digest();
  const levels = [leaves];
  for (let level = leaves; level.length > HASH_BYTES;) {
    const next = Buffer.alloc(level.length / 2);
    for (let at = 0; at < next.length; at += HASH_BYTES) {
      crypto
        .createHash('sha256')
        .update(level.subarray(2 * at, 2 * at + 2 * HASH_BYTES))
        .digest()
        .copy(next, at);
    }
    levels.push(next);
    level = next;
  }
  const shape = { index, size, sha256: digest.sha256, merkleRoot: digest.merkleRoot, pieceLayer: digest.pieceLayer, levels };
  checkPaths(shape, blocks);
  return shape;
}

/** The sibling hashes from block `index` up to the root, hex, leaf level first (what `proveBlock` returns). */
function pathOf(shape: Shape, index: number): string[] {
  return shape.levels.slice(0, -1).map((level, height) => {
    const sibling = (Math.floor(index / 2 ** height) ^ 1) * HASH_BYTES;
    return level.subarray(sibling, sibling + HASH_BYTES).toString('hex');
  });
}

/** The looked-up paths must be the agent's: the root, and the first, last and a middle block against `proveBlock`. */
function checkPaths(shape: Shape, blocks: number): void {
  const root = (shape.levels[shape.levels.length - 1] as Buffer).toString('hex');
  if (root !== shape.merkleRoot) throw new Error(`shape ${shape.index}: the tree's root ${root} is not the copy hasher's ${shape.merkleRoot}`);
  for (const index of new Set([0, blocks - 1, Math.floor(blocks / 2)])) {
    const range = pieceRangeOf(shape.size, index);
    const proved = proveBlock({ size: shape.size, pieceLayer: shape.pieceLayer, index, piece: contentRange(shape.index, range.offset, range.length) });
    if (!proved || proved.proof.join() !== pathOf(shape, index).join())
      throw new Error(`shape ${shape.index}: block ${index}'s path differs from proveBlock's`);
  }
}

/** Writes the shape to `file` (the source the control plane reads spot-check ranges of). */
export async function writeShape(file: string, shape: Shape): Promise<void> {
  const handle = await fs.open(file, 'w');
  try {
    for (let offset = 0; offset < shape.size; offset += 8 * MIB) await handle.write(contentRange(shape.index, offset, Math.min(8 * MIB, shape.size - offset)));
  } finally {
    await handle.close();
  }
}

/** An audit as a heartbeat answer lists it (the fields an honest holder needs). */
export type OfferedAudit = Omit<AuditItem, 'deadline'>;

export type HonestAnswer = { hashes: string[] } | { block: string; proof: string[] };

/** What an honest holder of `shape` answers: sha256(nonce ‖ bytes) of each range, or the block with its Merkle path. */
export function answerFor(item: OfferedAudit, shape: Shape): HonestAnswer {
  if (item.kind === 'ranges') {
    return { hashes: item.ranges.map((range) => nonceHash(item.nonce as string, contentRange(shape.index, range.offset, range.length))) };
  }
  const index = item.block as number;
  const offset = index * BLOCK_BYTES;
  return { block: contentRange(shape.index, offset, Math.min(BLOCK_BYTES, shape.size - offset)).toString('base64'), proof: pathOf(shape, index) };
}
