import { Type, type Static } from '@sinclair/typebox';
import { toIso } from '../clock.js';
import { AppError } from '../errors.js';
import type { TransferRow } from './transfers.table.js';

export const TransferItem = Type.Object({
  id: Type.Integer(),
  asset_id: Type.String(),
  purpose: Type.String({ description: 'restore, repair or audit' }),
  offset: Type.Integer({ description: 'The first byte of the copy to send.' }),
  length: Type.Integer({ description: 'How many bytes to send from offset.' }),
  size: Type.Integer({ description: "The whole copy's size." }),
  sha256: Type.String({ description: "The whole copy's checksum, as counted." }),
  url: Type.String({ description: 'Where to PUT the chunks, relative to the control plane.' }),
  max_chunk_bytes: Type.Integer({ description: 'The largest chunk one PUT may carry.' }),
  deadline: Type.String({ description: 'The next chunk must arrive before this, or the transfer moves to another holder.' }),
});
export type TransferItem = Static<typeof TransferItem>;

export function toTransferItem(row: TransferRow, maxChunkBytes: number): TransferItem {
  const start = Number(row.range_start) + Number(row.bytes_sent);
  return {
    id: Number(row.id),
    asset_id: row.asset_id,
    purpose: row.purpose,
    offset: start,
    length: Number(row.range_end) - start,
    size: Number(row.size_bytes),
    sha256: row.sha256,
    url: `/api/transfers/${row.id}`,
    max_chunk_bytes: maxChunkBytes,
    deadline: toIso(Number(row.lease_until)) as string,
  };
}

/** `bytes a-b/size` as sent by an agent: the chunk's first byte and length. */
export function parseContentRange(header: string | undefined): { start: number; length: number; size: number } {
  const match = /^bytes (\d{1,16})-(\d{1,16})\/(\d{1,16})$/.exec(header?.trim() ?? '');
  const [start, last, size] = match ? [Number(match[1]), Number(match[2]), Number(match[3])] : [NaN, NaN, NaN];
  if (!match || last < start || last >= size || !Number.isSafeInteger(size)) {
    throw new AppError('BAD_REQUEST', 'A chunk needs a Content-Range header such as "bytes 0-1048575/5000000" (first-last/size, last inclusive).');
  }
  return { start, length: last - start + 1, size };
}

/** A `Range: bytes=a-b` header of one range, against a copy of `size` bytes: [start, end), or undefined for none. */
export function parseRange(header: string | undefined, size: number): { start: number; end: number } | undefined {
  if (header === undefined) return undefined;
  const match = /^bytes=(\d{0,16})-(\d{0,16})$/.exec(header.trim());
  if (!match || (match[1] === '' && match[2] === '')) {
    throw new AppError('RANGE_NOT_SATISFIABLE', `Only one byte range such as "bytes=100-" or "bytes=0-99" is served, not "${header.slice(0, 100)}".`, { size });
  }
  let start: number;
  let end: number;
  if (match[1] === '') {
    start = Math.max(0, size - Number(match[2]));
    end = size;
  } else {
    start = Number(match[1]);
    end = match[2] === '' ? size : Math.min(size, Number(match[2]) + 1);
  }
  if (start >= size || end <= start)
    throw new AppError('RANGE_NOT_SATISFIABLE', `The copy has ${size} bytes; "${header.slice(0, 100)}" is outside it.`, { size });
  return { start, end };
}
