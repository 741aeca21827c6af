import crypto from 'node:crypto';
import { describe, expect, it } from 'vitest';
import {
  BLOCK_BYTES,
  blockCount,
  createCopyHasher,
  EMPTY_ROOT,
  nonceHash,
  PIECE_BYTES,
  pieceRangeOf,
  proveBlock,
  rootOfPieceLayer,
  verifyBlock,
  type CopyDigest,
} from './merkle.js';

const MIB = 1024 * 1024;
const sha256 = (data: Buffer) => crypto.createHash('sha256').update(data).digest();

/** The tree as BEP 52 words it, built whole and recursively: what the streaming hasher must agree with. */
function naiveRoot(content: Buffer): string {
  if (content.length === 0) return EMPTY_ROOT;
  const leaves: Buffer[] = [];
  for (let at = 0; at < content.length; at += BLOCK_BYTES) leaves.push(sha256(content.subarray(at, at + BLOCK_BYTES)));
  let width = 1;
  while (width < leaves.length) width *= 2;
  while (leaves.length < width) leaves.push(Buffer.alloc(32));
  const rootOf = (nodes: Buffer[]): Buffer =>
    nodes.length === 1 ? (nodes[0] as Buffer) : sha256(Buffer.concat([rootOf(nodes.slice(0, nodes.length / 2)), rootOf(nodes.slice(nodes.length / 2))]));
  return rootOf(leaves).toString('hex');
}

function digestOf(content: Buffer, chunkSizes: number[] = [content.length]): CopyDigest {
  const hasher = createCopyHasher();
  for (let at = 0, turn = 0; at < content.length; turn += 1) {
    const size = Math.max(1, chunkSizes[turn % chunkSizes.length] as number);
    hasher.update(content.subarray(at, at + size));
    at += size;
  }
  return hasher.digest();
}

/** Bytes i % 251: the content the libtorrent vectors below were made from. */
function patterned(size: number): Buffer {
  const content = Buffer.alloc(size);
  for (let at = 0; at < size; at += 1) content[at] = at % 251;
  return content;
}

function proofOf(content: Buffer, digest: CopyDigest, index: number) {
  const range = pieceRangeOf(content.length, index);
  const proved = proveBlock({ size: content.length, pieceLayer: digest.pieceLayer, index, piece: content.subarray(range.offset, range.offset + range.length) });
  if (!proved) throw new Error(`no proof of block ${index}`);
  return proved;
}

const flipBit = (data: Buffer, at: number) => {
  const copy = Buffer.from(data);
  copy[at] = (copy[at] as number) ^ 1;
  return copy;
};
const flipHexBit = (hex: string) => flipBit(Buffer.from(hex, 'hex'), 31).toString('hex');

const SIZES = [0, 1, 16_383, 16_384, 16_385, 64 * 16_384 - 1, 64 * 16_384, 64 * 16_384 + 1, 3 * MIB + 5, 17 * MIB];

describe('the Merkle root of a copy (BEP 52 pieces root)', () => {
  const contents = new Map(SIZES.map((size) => [size, crypto.randomBytes(size)]));

  it.each(SIZES)('of %i bytes agrees with the tree built whole, and with the whole-file sha256', (size) => {
    const content = contents.get(size) as Buffer;
    const digest = digestOf(content);
    expect(digest.merkleRoot).toBe(naiveRoot(content));
    expect(digest.sha256).toBe(sha256(content).toString('hex'));
    expect(digest.bytes).toBe(size);
    expect(digest.pieceLayer.length).toBe(size === 0 ? 0 : 32 * (size <= PIECE_BYTES ? 1 : Math.ceil(size / PIECE_BYTES)));
    expect(rootOfPieceLayer(digest.pieceLayer, size)).toBe(digest.merkleRoot);
  });

  it('of one block is the sha256 of that block; of an empty file, 64 zeros', () => {
    const block = crypto.randomBytes(BLOCK_BYTES);
    expect(digestOf(block).merkleRoot).toBe(sha256(block).toString('hex'));
    expect(digestOf(Buffer.alloc(0))).toEqual({
      sha256: sha256(Buffer.alloc(0)).toString('hex'),
      bytes: 0,
      merkleRoot: EMPTY_ROOT,
      pieceLayer: Buffer.alloc(0),
    });
  });

  it('is the same whatever the chunks it is fed in', () => {
    const content = contents.get(3 * MIB + 5) as Buffer;
    const expected = digestOf(content);
    for (const chunks of [[1, 7, 16_383, 16_385, 100_000], [BLOCK_BYTES - 1], [BLOCK_BYTES + 1], [PIECE_BYTES * 2 + 3], [65_536]]) {
      expect(digestOf(content, chunks), `chunks of ${chunks.join(', ')}`).toEqual(expected);
    }
  });

  // Made with libtorrent 2.0.8 (create_torrent, v2 only, 1 MiB pieces) from files of bytes i % 251:
  // the "pieces root" of the file, and the sha256 of its "piece layers" entry where it has one.
  it.each([
    [1, '6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d', null],
    [16_383, 'e08c7d58e58b9318263144a618d6f2b6f6825974decd9e6f9371567354b6f566', null],
    [16_384, '4348e3b98e8a327b34ced39c1da9e67cdb4cd5e48e4d7960607a3ae403d35f0c', null],
    [16_385, '9d7887c65d577a0237fb3c0998b87b3a62762d03796889a2caea01db914ccbb8', null],
    [MIB, 'cedf940612ac628d0e1eb980ad20f8cc17ea41c89b5f50e0afec0e1cc5c2d997', null],
    [MIB + 1, 'c764e3ed4ebac5f61ce59e1c78b804a6b9c02350917800126926d903f8d3dc27', 'c764e3ed4ebac5f61ce59e1c78b804a6b9c02350917800126926d903f8d3dc27'],
    [3 * MIB + 5, '2023cc264092ef5c310b42a5b4fc3b33937de91b1353e8af22f1b525f9875527', '6b60c608cf9ac2b59c7fa2a3700045b8cbd77c188e6addf0dad88aaf37e28fd7'],
  ])('of %i patterned bytes is the one libtorrent gives', (size, root, pieceLayerSha256) => {
    const digest = digestOf(patterned(size));
    expect(digest.merkleRoot).toBe(root);
    if (pieceLayerSha256 !== null) expect(sha256(digest.pieceLayer).toString('hex')).toBe(pieceLayerSha256);
  });

  it('refuses a piece layer of the wrong length for the size', () => {
    const digest = digestOf(contents.get(3 * MIB + 5) as Buffer);
    expect(rootOfPieceLayer(digest.pieceLayer.subarray(32), 3 * MIB + 5)).toBeNull();
    expect(rootOfPieceLayer(digest.pieceLayer, 5 * MIB)).toBeNull();
    expect(rootOfPieceLayer(Buffer.alloc(32), 0)).toBeNull();
  });

  it('cannot be fed after its digest', () => {
    const hasher = createCopyHasher();
    hasher.digest();
    expect(() => hasher.update(Buffer.from('late'))).toThrow();
    expect(() => hasher.digest()).toThrow();
  });
});

describe('proofs of one block', () => {
  it.each([1, 16_385, 5 * 16_384 + 9, 64 * 16_384, 64 * 16_384 + 1, 3 * MIB + 5])(
    'verify for every block of a file of %i bytes, and fail when one bit of block, proof or index changes',
    (size) => {
      const content = crypto.randomBytes(size);
      const digest = digestOf(content);
      const root = digest.merkleRoot;
      for (let index = 0; index < blockCount(size); index += 1) {
        const { block, proof } = proofOf(content, digest, index);
        expect(block.equals(content.subarray(index * BLOCK_BYTES, (index + 1) * BLOCK_BYTES))).toBe(true);
        expect(verifyBlock({ root, size, index, block, proof }), `block ${index}`).toBe(true);
        expect(verifyBlock({ root, size, index, block: flipBit(block, block.length - 1), proof })).toBe(false);
        for (let level = 0; level < proof.length; level += 1) {
          const bent = proof.map((hash, at) => (at === level ? flipHexBit(hash) : hash));
          expect(verifyBlock({ root, size, index, block, proof: bent }), `block ${index}, level ${level}`).toBe(false);
        }
        if (blockCount(size) > 1) expect(verifyBlock({ root, size, index: index ^ 1, block, proof })).toBe(false);
        expect(verifyBlock({ root: flipHexBit(root), size, index, block, proof })).toBe(false);
      }
    },
  );

  it('of a large file verify with a path as long as the tree is deep', () => {
    const size = 17 * MIB;
    const content = crypto.randomBytes(size);
    const digest = digestOf(content);
    for (const index of [0, 63, 64, 500, blockCount(size) - 1]) {
      const { block, proof } = proofOf(content, digest, index);
      expect(proof).toHaveLength(11);
      expect(verifyBlock({ root: digest.merkleRoot, size, index, block, proof })).toBe(true);
    }
  });

  it('are refused when malformed', () => {
    const size = 3 * BLOCK_BYTES + 10;
    const content = crypto.randomBytes(size);
    const digest = digestOf(content);
    const root = digest.merkleRoot;
    const last = proofOf(content, digest, 3);
    const first = proofOf(content, digest, 0);
    expect(verifyBlock({ root, size, index: 3, ...last })).toBe(true);
    expect(verifyBlock({ root: root.slice(2), size, index: 3, ...last })).toBe(false);
    expect(verifyBlock({ root: `${root}00`, size, index: 3, ...last })).toBe(false);
    // A last block padded to full size, or a full block cut short.
    expect(verifyBlock({ root, size, index: 3, block: Buffer.concat([last.block, Buffer.alloc(BLOCK_BYTES - 10)]), proof: last.proof })).toBe(false);
    expect(verifyBlock({ root, size, index: 0, block: first.block.subarray(1), proof: first.proof })).toBe(false);
    expect(verifyBlock({ root, size, index: 3, block: last.block, proof: last.proof.slice(1) })).toBe(false);
    expect(verifyBlock({ root, size, index: 3, block: last.block, proof: [...last.proof, last.proof[0] as string] })).toBe(false);
    expect(verifyBlock({ root, size, index: 3, block: last.block, proof: last.proof.map((hash) => hash.slice(2)) })).toBe(false);
    for (const index of [4, -1, 0.5, Number.NaN]) expect(verifyBlock({ root, size, index, ...last })).toBe(false);
    expect(verifyBlock({ root: EMPTY_ROOT, size: 0, index: 0, block: Buffer.alloc(0), proof: [] })).toBe(false);
  });

  it('are not made from a piece that no longer hashes to its entry in the layer', () => {
    const size = 2 * PIECE_BYTES + 7;
    const content = crypto.randomBytes(size);
    const digest = digestOf(content);
    const range = pieceRangeOf(size, 70);
    expect(range).toEqual({ offset: PIECE_BYTES, length: PIECE_BYTES });
    const piece = content.subarray(range.offset, range.offset + range.length);
    expect(proveBlock({ size, pieceLayer: digest.pieceLayer, index: 70, piece: flipBit(piece, 5) })).toBeNull();
    expect(proveBlock({ size, pieceLayer: digest.pieceLayer, index: 70, piece: piece.subarray(1) })).toBeNull();
    expect(proveBlock({ size, pieceLayer: digest.pieceLayer, index: blockCount(size), piece })).toBeNull();
    expect(pieceRangeOf(size, blockCount(size) - 1)).toEqual({ offset: 2 * PIECE_BYTES, length: 7 });
  });
});

describe('the answer to a range challenge', () => {
  it('is the sha256 of the nonce bytes and then the range bytes', () => {
    const bytes = crypto.randomBytes(1000);
    const nonce = crypto.randomBytes(16).toString('hex');
    expect(nonceHash(nonce, bytes)).toBe(sha256(Buffer.concat([Buffer.from(nonce, 'hex'), bytes])).toString('hex'));
    expect(nonceHash(nonce.toUpperCase(), bytes)).toBe(nonceHash(nonce, bytes));
  });

  it('refuses a nonce that is not whole bytes of hex', () => {
    for (const nonce of ['', 'abc', 'zz', 'a b ']) expect(() => nonceHash(nonce, Buffer.alloc(1))).toThrow();
  });
});
