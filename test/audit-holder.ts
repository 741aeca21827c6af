import { createCopyHasher, nonceHash, pieceRangeOf, proveBlock, type CopyDigest } from '../src/lib/merkle.js';
import { contentOf } from './file-server.js';

/** A file the local source (file-server.ts) serves as /files/<name>?size=N, with what an honest holder computes of it. */
export interface SourceFile extends Omit<CopyDigest, 'bytes'> {
  name: string;
  data: Buffer;
}

export function sourceFile(name: string, size: number): SourceFile {
  const data = Buffer.concat([...contentOf(name, 0, size)]);
  const hasher = createCopyHasher();
  hasher.update(data);
  const { sha256, merkleRoot, pieceLayer } = hasher.digest();
  return { name, data, sha256, merkleRoot, pieceLayer };
}

/** An audit as a heartbeat answer lists it (the fields an answer needs). */
export interface AuditAsked {
  kind: string;
  nonce: string | null;
  ranges: { offset: number; length: number }[];
  block: number | null;
}

/**
 * What a holder of `copy` answers: nonced hashes of the ranges, or the block with its Merkle path.
 * `wrong`: the answer of a holder whose bytes differ (one bit of the block, one digit of each hash).
 */
export function answerFor(item: AuditAsked, copy: SourceFile, wrong = false): { hashes: string[] } | { block: string; proof: string[] } {
  if (item.kind === 'ranges') {
    const hashes = item.ranges.map((range) => nonceHash(item.nonce as string, copy.data.subarray(range.offset, range.offset + range.length)));
    return { hashes: wrong ? hashes.map((hash) => `${hash.startsWith('0') ? '1' : '0'}${hash.slice(1)}`) : hashes };
  }
  const index = item.block as number;
  const range = pieceRangeOf(copy.data.length, index);
  const proved = proveBlock({
    size: copy.data.length,
    pieceLayer: copy.pieceLayer,
    index,
    piece: copy.data.subarray(range.offset, range.offset + range.length),
  });
  if (!proved) throw new Error('the test copy cannot prove its own block');
  const block = Buffer.from(proved.block);
  if (wrong) block[0] = (block[0] as number) ^ 1;
  return { block: block.toString('base64'), proof: proved.proof };
}
