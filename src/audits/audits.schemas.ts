import { Type, type Static } from '@sinclair/typebox';
import { toIso } from '../clock.js';
import { BLOCK_BYTES } from '../lib/merkle.js';
import type { AuditRow } from './audits.table.js';

const Hex64 = Type.String({ pattern: '^[0-9a-fA-F]{64}$' });

export const AuditItem = Type.Object({
  id: Type.Integer(),
  asset_id: Type.String(),
  kind: Type.Union([Type.Literal('ranges'), Type.Literal('block')], {
    description: 'ranges: answer sha256(nonce ‖ bytes) of each range of the copy. block: answer the block with its Merkle path.',
  }),
  purpose: Type.Union([Type.Literal('spot_check'), Type.Literal('retention')], {
    description: 'spot_check: before a new copy counts. retention: a counted copy, at random.',
  }),
  nonce: Type.Union([Type.String(), Type.Null()], { description: 'Hex bytes hashed before each range (kind ranges).' }),
  ranges: Type.Array(Type.Object({ offset: Type.Integer(), length: Type.Integer() }), { description: 'Byte ranges of the copy (kind ranges).' }),
  block: Type.Union([Type.Integer(), Type.Null()], { description: `Index of the ${BLOCK_BYTES}-byte block to return (kind block).` }),
  deadline: Type.String({ description: 'An answer after this is a miss.' }),
  url: Type.String({ description: 'Where to POST the answer, relative to the control plane.' }),
});
export type AuditItem = Static<typeof AuditItem>;

export function toAuditItem(row: AuditRow): AuditItem {
  const ranges = row.ranges === null ? [] : (JSON.parse(row.ranges) as [number, number][]);
  return {
    id: Number(row.id),
    asset_id: row.asset_id,
    kind: row.method,
    purpose: row.kind,
    nonce: row.nonce,
    ranges: ranges.map(([offset, length]) => ({ offset, length })),
    block: row.block === null ? null : Number(row.block),
    deadline: toIso(Number(row.lease_until)) as string,
    url: `/api/audits/${row.id}`,
  };
}

export const AuditIdParam = Type.Object({ id: Type.Integer({ minimum: 1, maximum: 2 ** 53 - 1 }) });

export const AuditAnswer = Type.Object(
  {
    hashes: Type.Optional(Type.Array(Hex64, { maxItems: 16, description: 'Kind ranges: hex sha256(nonce ‖ bytes) of each range, in order.' })),
    block: Type.Optional(Type.String({ maxLength: Math.ceil(BLOCK_BYTES / 3) * 4, description: 'Kind block: the block, base64.' })),
    proof: Type.Optional(Type.Array(Hex64, { maxItems: 64, description: 'Kind block: the sibling hashes from the block up to the root.' })),
    missing: Type.Optional(Type.Boolean({ description: 'The copy is not there any more: it stops counting at once.' })),
  },
  { additionalProperties: false },
);
export type AuditAnswer = Static<typeof AuditAnswer>;

export const AuditResult = Type.Object({
  verdict: Type.Union([Type.Literal('passed'), Type.Literal('failed')]),
  detail: Type.String(),
});
