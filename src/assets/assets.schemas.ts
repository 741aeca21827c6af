import { Type, type Static } from '@sinclair/typebox';
import { Limit, Nullable } from '../http/schemas.js';
import { UNPRINTABLE_CLASS } from '../lib/printable.js';
import { ASSET_STATES } from './assets.table.js';

// Control characters (C0, DEL, C1) and bidirectional overrides: an id is printed in logs and on
// volunteers' terminals, where these would rewrite what is shown.
const UNPRINTABLE = UNPRINTABLE_CLASS;
export const AssetId = Type.String({
  minLength: 1,
  maxLength: 512,
  pattern: `^[^\\s${UNPRINTABLE}]([^${UNPRINTABLE}]*[^\\s${UNPRINTABLE}])?$`,
  description: "The source's resource id or any stable id: no leading or trailing space, no control characters or bidirectional overrides.",
});
const assetIdPattern = new RegExp(AssetId.pattern as string, 'u');
/** The AssetId rule, for ids that do not come through a request body (catalog imports). */
export function isValidAssetId(id: string): boolean {
  return id.length <= 512 && assetIdPattern.test(id);
}
export const Priority = Type.Integer({ minimum: 1, maximum: 10 });
export const Sha256 = Type.String({ pattern: '^[0-9a-fA-F]{64}$', description: 'Hex SHA-256.' });
const Url = Type.String({ minLength: 1, maxLength: 4096, pattern: '^https?://\\S+$', description: 'http(s) URL.' });
// 1 PiB: larger than any single file a portal serves, small enough to stay exact as a double.
const MAX_ASSET_BYTES = 2 ** 50;

/** The seeds' asset format, plus optional fields Dispatcher understands. */
export const AssetInput = Type.Object(
  {
    id: AssetId,
    url: Url,
    name: Type.String({ minLength: 1, maxLength: 1024 }),
    priority: Priority,
    size_mb: Type.Optional(
      Nullable(Type.Number({ minimum: 0, maximum: MAX_ASSET_BYTES / 1024 / 1024, description: 'Size in MiB; null or absent when unknown.' })),
    ),
    size_bytes: Type.Optional(Nullable(Type.Integer({ minimum: 0, maximum: MAX_ASSET_BYTES, description: 'Exact size; wins over size_mb.' }))),
    replicas_target: Type.Optional(
      Type.Integer({ minimum: 1, maximum: 100, description: 'Copies wanted on distinct nodes (default DEFAULT_REPLICAS_TARGET).' }),
    ),
    dataset: Type.Optional(Nullable(Type.String({ maxLength: 1024 }))),
    organization: Type.Optional(Nullable(Type.String({ maxLength: 1024 }))),
    format: Type.Optional(Nullable(Type.String({ maxLength: 128 }))),
    sha256: Type.Optional(Nullable(Sha256)),
    source: Type.Optional(Nullable(Type.String({ maxLength: 1024 }))),
  },
  { additionalProperties: false },
);
export type AssetInput = Static<typeof AssetInput>;

export const AssetList = Type.Array(AssetInput, { maxItems: 100_000 });

export const AssetView = Type.Object({
  id: Type.String(),
  name: Type.String(),
  url: Type.String(),
  size_mb: Nullable(Type.Number()),
  size_bytes: Nullable(Type.Integer()),
  priority: Type.Integer(),
  replicas_target: Type.Integer(),
  state: Type.String({
    description:
      'pending, rescued, gone (source vanished, no copy), unreachable (source vanished, copies exist) or suspect (nodes found the catalogued size or checksum wrong; not handed out until resolved)',
  }),
  source_errors: Type.Integer({ description: 'Distinct nodes that found the source answering 404/410.' }),
  source_error: Nullable(Type.String()),
  copies: Type.Integer({ description: 'Verified copies.' }),
  active_allocations: Type.Integer(),
  dataset: Nullable(Type.String()),
  organization: Nullable(Type.String()),
  format: Nullable(Type.String()),
  sha256: Nullable(Type.String()),
  source: Nullable(Type.String()),
  first_seen: Type.String(),
  last_seen: Type.String(),
  removed_from_source: Nullable(Type.String()),
});
export type AssetView = Static<typeof AssetView>;

export const AssetQuery = Type.Object(
  {
    state: Type.Optional(Type.Union(ASSET_STATES.map((state) => Type.Literal(state)))),
    min_priority: Type.Optional(Priority),
    max_priority: Type.Optional(Priority),
    organization: Type.Optional(Type.String({ maxLength: 1024 })),
    dataset: Type.Optional(Type.String({ maxLength: 1024, description: 'Only assets of this dataset (exact name).' })),
    q: Type.Optional(Type.String({ minLength: 1, maxLength: 200, description: 'Text searched in id, name, url and dataset.' })),
    cursor: Type.Optional(Type.String({ maxLength: 1400, pattern: '^[A-Za-z0-9_-]+$', description: 'next_cursor of the previous page.' })),
    limit: Limit(100, 1000),
  },
  { additionalProperties: false },
);

export const UpdateCkanBody = Type.Object(
  {
    updates: Type.Array(Type.Object({ asset_id: AssetId, new_priority: Priority }, { additionalProperties: false }), { minItems: 1, maxItems: 10_000 }),
  },
  { additionalProperties: false },
);
