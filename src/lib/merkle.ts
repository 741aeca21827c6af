import crypto from 'node:crypto';

/**
 * The Merkle tree of a copy, as BitTorrent v2 (BEP 52) builds a file's "pieces root": SHA-256 of
 * each 16 KiB block (the last one shorter, never padded) as leaves, the leaf layer padded to a
 * power of two with 32 zero bytes, each inner node SHA-256(left ‖ right). Shared by the agent,
 * which computes and proves, and the control plane, which verifies.
 */

export const BLOCK_BYTES = 16_384;
/** Blocks under one hash of the piece layer: 1 MiB pieces, as BEP 52's piece layers of that piece length. */
export const PIECE_BLOCKS = 64;
export const PIECE_BYTES = BLOCK_BYTES * PIECE_BLOCKS;
export const HASH_BYTES = 32;
/** An empty file has no block, and BEP 52 gives it no root: this one stands for it, and no block verifies against it. */
export const EMPTY_ROOT = '0'.repeat(64);

const HEX_HASH = /^[0-9a-f]{64}$/i;
const PIECE_LEVEL = Math.log2(PIECE_BLOCKS);

export interface CopyDigest {
  sha256: string;
  bytes: number;
  merkleRoot: string;
  /**
   * One hash per piece, concatenated: the roots of the subtrees over each 64 blocks (the last one
   * padded with zero leaves). A file of at most one piece has its root as its only entry.
   */
  pieceLayer: Buffer;
}

/** Hashes a copy in one pass, fed in chunks of any size. */
export interface CopyHasher {
  update(chunk: Buffer): void;
  /** Ends the hashing: no update may follow. */
  digest(): CopyDigest;
}

/**
 * The whole-file sha256 and the Merkle tree together. Memory stays bounded whatever the size: one
 * block, one piece's leaves and the piece layer (32 bytes per MiB).
 */
export function createCopyHasher(): CopyHasher {
  const whole = crypto.createHash('sha256');
  const pending = Buffer.alloc(BLOCK_BYTES);
  let pendingBytes = 0;
  let bytes = 0;
  let leaves: Buffer[] = [];
  const pieces: Buffer[] = [];
  let ended = false;
  const addBlock = (block: Buffer) => {
    leaves.push(sha256(block));
    if (leaves.length < PIECE_BLOCKS) return;
    pieces.push(climb(leaves, 0, PIECE_LEVEL).root);
    leaves = [];
  };
  return {
    update(chunk) {
      if (ended) throw new Error('the copy hasher has already been digested');
      whole.update(chunk);
      bytes += chunk.length;
      let at = 0;
      if (pendingBytes > 0) {
        at = chunk.copy(pending, pendingBytes, 0, Math.min(chunk.length, BLOCK_BYTES - pendingBytes));
        pendingBytes += at;
        if (pendingBytes < BLOCK_BYTES) return;
        addBlock(pending);
        pendingBytes = 0;
      }
      for (; chunk.length - at >= BLOCK_BYTES; at += BLOCK_BYTES) addBlock(chunk.subarray(at, at + BLOCK_BYTES));
      pendingBytes = chunk.copy(pending, 0, at);
    },
    digest() {
      if (ended) throw new Error('the copy hasher has already been digested');
      ended = true;
      if (pendingBytes > 0) addBlock(pending.subarray(0, pendingBytes));
      // The last piece of a file of one piece spans only its blocks, padded to a power of two.
      if (leaves.length > 0) pieces.push(climb(leaves, 0, pieces.length === 0 ? Math.log2(nextPowerOfTwo(leaves.length)) : PIECE_LEVEL).root);
      const pieceLayer = Buffer.concat(pieces);
      return { sha256: whole.digest('hex'), bytes, merkleRoot: rootOfPieceLayer(pieceLayer, bytes) ?? EMPTY_ROOT, pieceLayer };
    },
  };
}

export function blockCount(size: number): number {
  return Math.ceil(size / BLOCK_BYTES);
}

/**
 * The file's root from its piece layer, or null when the layer does not fit a file of `size`
 * bytes (the wrong number of hashes). Pieces past the end are subtrees of zero leaves.
 */
export function rootOfPieceLayer(pieceLayer: Buffer, size: number): string | null {
  const blocks = blockCount(size);
  if (pieceLayer.length !== pieceCount(blocks) * HASH_BYTES) return null;
  if (blocks === 0) return EMPTY_ROOT;
  const pieces = splitHashes(pieceLayer);
  if (pieces.length === 1) return pieceLayer.toString('hex');
  return climb(pieces, PIECE_LEVEL, depthOf(blocks) - PIECE_LEVEL).root.toString('hex');
}

/** The bytes to read to prove block `index`: the whole piece that holds it. */
export function pieceRangeOf(size: number, index: number): { offset: number; length: number } {
  const width = pieceWidth(blockCount(size));
  const offset = Math.floor(index / width) * width * BLOCK_BYTES;
  return { offset, length: Math.min(width * BLOCK_BYTES, size - offset) };
}

/**
 * Block `index` and its Merkle path (sibling hashes, hex, leaf level first), from the bytes of its
 * piece (as `pieceRangeOf` names them) and the file's piece layer. Null when the piece no longer
 * hashes to its entry in the layer (the copy changed since the layer was computed) or the inputs
 * do not fit a file of `size` bytes.
 */
export function proveBlock(input: { size: number; pieceLayer: Buffer; index: number; piece: Buffer }): { block: Buffer; proof: string[] } | null {
  const { size, pieceLayer, index, piece } = input;
  const blocks = blockCount(size);
  if (!Number.isSafeInteger(index) || index < 0 || index >= blocks || pieceLayer.length !== pieceCount(blocks) * HASH_BYTES) return null;
  const range = pieceRangeOf(size, index);
  if (piece.length !== range.length) return null;
  const width = pieceWidth(blocks);
  const leaves: Buffer[] = [];
  for (let at = 0; at < piece.length; at += BLOCK_BYTES) leaves.push(sha256(piece.subarray(at, at + BLOCK_BYTES)));
  const pieceIndex = Math.floor(index / width);
  const inPiece = climb(leaves, 0, Math.log2(width), index - pieceIndex * width);
  if (!inPiece.root.equals(pieceLayer.subarray(pieceIndex * HASH_BYTES, (pieceIndex + 1) * HASH_BYTES))) return null;
  const above = climb(splitHashes(pieceLayer), Math.log2(width), depthOf(blocks) - Math.log2(width), pieceIndex);
  const local = index - pieceIndex * width;
  return {
    block: piece.subarray(local * BLOCK_BYTES, (local + 1) * BLOCK_BYTES),
    proof: [...inPiece.siblings, ...above.siblings].map((hash) => hash.toString('hex')),
  };
}

/**
 * Whether `block` is block `index` of a file of `size` bytes with Merkle root `root`, by `proof`
 * (sibling hashes, hex, leaf level first; as many as the tree has levels above its leaves).
 * False for anything malformed: a root or proof entry not 64 hex digits, an index past the file,
 * a block not of the size its index has in such a file, a proof of another length.
 */
export function verifyBlock(input: { root: string; size: number; index: number; block: Buffer; proof: string[] }): boolean {
  const { root, size, index, block, proof } = input;
  if (!HEX_HASH.test(root) || !Number.isSafeInteger(size) || size <= 0) return false;
  const blocks = blockCount(size);
  if (!Number.isSafeInteger(index) || index < 0 || index >= blocks) return false;
  const expectedBytes = index < blocks - 1 ? BLOCK_BYTES : size - (blocks - 1) * BLOCK_BYTES;
  if (block.length !== expectedBytes || proof.length !== depthOf(blocks) || !proof.every((hash) => HEX_HASH.test(hash))) return false;
  let node = sha256(block);
  let position = index;
  for (const hex of proof) {
    const sibling = Buffer.from(hex, 'hex');
    node = position % 2 === 0 ? hashPair(node, sibling) : hashPair(sibling, node);
    position = Math.floor(position / 2);
  }
  return node.toString('hex') === root.toLowerCase();
}

/** The answer to a range challenge: hex SHA-256 of the nonce's bytes followed by the range's. */
export function nonceHash(nonceHex: string, bytes: Buffer): string {
  return nonceHasher(nonceHex).update(bytes).digest('hex');
}

/** A SHA-256 already fed the nonce, for ranges read in pieces; the nonce must be whole bytes of hex. */
export function nonceHasher(nonceHex: string): crypto.Hash {
  if (!/^(?:[0-9a-f]{2})+$/i.test(nonceHex)) throw new Error('a nonce is one or more bytes of hex');
  return crypto.createHash('sha256').update(Buffer.from(nonceHex, 'hex'));
}

function sha256(data: Buffer): Buffer {
  return crypto.hash('sha256', data, 'buffer');
}

function hashPair(left: Buffer, right: Buffer): Buffer {
  return crypto.createHash('sha256').update(left).update(right).digest();
}

const zeroHashes: Buffer[] = [Buffer.alloc(HASH_BYTES)];

/** The root of a subtree of 2^level zero leaves: what stands for nodes past the end of the file. */
function zeroHash(level: number): Buffer {
  for (let at = zeroHashes.length; at <= level; at += 1) {
    const below = zeroHashes[at - 1] as Buffer;
    zeroHashes.push(hashPair(below, below));
  }
  return zeroHashes[level] as Buffer;
}

/**
 * Hashes `nodes` (of tree level `level`, padded on the right with that level's zero hash) up
 * `depth` levels to one root, with the siblings met on the way up from `index`. A subtree past the
 * end is never computed: its zero hash stands in for it.
 */
function climb(nodes: Buffer[], level: number, depth: number, index = 0): { root: Buffer; siblings: Buffer[] } {
  const siblings: Buffer[] = [];
  let layer = nodes;
  let position = index;
  for (let step = 0; step < depth; step += 1) {
    const pad = zeroHash(level + step);
    siblings.push(layer[position % 2 === 0 ? position + 1 : position - 1] ?? pad);
    const next: Buffer[] = [];
    for (let at = 0; at < layer.length; at += 2) next.push(hashPair(layer[at] as Buffer, layer[at + 1] ?? pad));
    layer = next;
    position = Math.floor(position / 2);
  }
  return { root: layer[0] ?? zeroHash(level + depth), siblings };
}

/** Levels above the leaves: log2 of the leaf count padded to a power of two. */
function depthOf(blocks: number): number {
  return Math.log2(nextPowerOfTwo(blocks));
}

/** Blocks under one entry of the piece layer: 64, or all of them, padded to a power of two, for a file of at most one piece. */
function pieceWidth(blocks: number): number {
  return Math.min(PIECE_BLOCKS, nextPowerOfTwo(blocks));
}

function pieceCount(blocks: number): number {
  return blocks === 0 ? 0 : Math.ceil(blocks / pieceWidth(blocks));
}

function nextPowerOfTwo(count: number): number {
  let power = 1;
  while (power < count) power *= 2;
  return power;
}

function splitHashes(layer: Buffer): Buffer[] {
  const hashes: Buffer[] = [];
  for (let at = 0; at < layer.length; at += HASH_BYTES) hashes.push(layer.subarray(at, at + HASH_BYTES));
  return hashes;
}
