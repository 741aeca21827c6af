import { Type, type Static } from '@sinclair/typebox';
import { AssetId, Priority, Sha256 } from '../assets/assets.schemas.js';
import { ALLOCATION_STATES } from './allocations.table.js';
import { RELEASE_CAUSES } from './failure-policy.js';
import { Limit, Nullable } from '../http/schemas.js';

/** The seeds' node ids are names; Orion's integer ids are accepted too. */
export const NodeRef = Type.Union([Type.String({ minLength: 1, maxLength: 64, pattern: '^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$' }), Type.Integer({ minimum: 1 })]);

export const AllocateBody = Type.Object(
  {
    free_space_gb: Type.Optional(
      Type.Number({
        minimum: 0,
        maximum: 1_000_000_000,
        description: 'Free space the node has now, in GiB. Optional for a node whose heartbeat reported it within FREE_SPACE_TTL_SECONDS.',
      }),
    ),
    node_id: NodeRef,
    max_assets: Type.Optional(Type.Integer({ minimum: 1, maximum: 1000, default: 100 })),
    min_priority: Type.Optional(Priority),
  },
  { additionalProperties: false },
);

export const AllocatedAsset = Type.Object({
  id: Type.String(),
  url: Type.String(),
  restore_url: Nullable(
    Type.String({
      description:
        "Set when the source is gone: fetch the bytes from the control plane's restore of the copies left (relative to it, with the node token) instead of url.",
    }),
  ),
  size_mb: Nullable(Type.Number({ description: 'null when the size is unknown (an estimate was reserved).' })),
  priority: Type.Integer(),
  name: Type.String(),
  size_bytes: Nullable(Type.Integer()),
  sha256: Nullable(Type.String()),
  allocation_id: Type.Integer(),
  expires_at: Type.String(),
  reserved_bytes: Type.Integer({
    description: 'Space set aside on the node: the size, or UNKNOWN_SIZE_ESTIMATE_MB when the size is unknown. The agent never writes more than this.',
  }),
});

export const ReleaseBody = Type.Object(
  {
    asset_id: AssetId,
    node_id: NodeRef,
    reason: Type.Optional(Type.String({ maxLength: 500, description: 'Why the node gives it up (kept in events).' })),
    source_status: Type.Optional(
      Type.Integer({
        minimum: 100,
        maximum: 599,
        description: 'HTTP status the source answered, when that is why. 404/410 from SOURCE_GONE_CONFIRMATIONS nodes mark the asset gone.',
      }),
    ),
    cause: Type.Optional(
      Type.Union(
        RELEASE_CAUSES.map((cause) => Type.Literal(cause)),
        {
          description:
            'Why, as the agent classifies it. stopping: no cost. source_gone (404/410): counts towards gone. source_busy (429/503): pauses the source host for every node (retry_after_seconds). size_mismatch, checksum_mismatch, oversize against a catalogued value: a strike, and MISMATCH_CONFIRMATIONS nodes make the asset suspect. Any other cause: the node does not get this asset again for RETRY_COOLDOWN_SECONDS, doubling per failure. Default: from source_status, else other.',
        },
      ),
    ),
    retry_after_seconds: Type.Optional(Type.Integer({ minimum: 0, maximum: 31_536_000, description: "The source's Retry-After, with cause source_busy." })),
  },
  { additionalProperties: false },
);

export const CompleteBody = Type.Object(
  {
    asset_id: AssetId,
    node_id: NodeRef,
    sha256: Sha256,
    bytes: Type.Integer({ minimum: 0, maximum: 2 ** 50 }),
    uri: Type.Optional(Type.String({ maxLength: 4096, description: 'Where the copy can be shared from (e.g. a magnet link).' })),
    merkle_root: Type.Optional(
      Type.String({
        pattern: '^[0-9a-fA-F]{64}$',
        description: "Hex SHA-256 Merkle root of the copy over 16 KiB blocks (BitTorrent v2's pieces root): what retention audits check blocks against.",
      }),
    ),
  },
  { additionalProperties: false },
);

export const CompleteResponse = Type.Object({
  status: Type.String(),
  message: Type.String(),
  asset_state: Type.String(),
  copies: Type.Integer(),
  replicas_target: Type.Integer(),
  verified: Type.Boolean({ description: 'Whether this copy counts; false while copies disagree on the checksum or its proof is pending.' }),
  proof: Type.String({
    description: 'pending: the copy counts once its spot check against the source passed (its holder is asked in a heartbeat answer); proven: it counts.',
  }),
});

const AllocationState = Type.Union(ALLOCATION_STATES.map((state) => Type.Literal(state)));

export const AllocationQuery = Type.Object(
  {
    node: Type.Optional(Type.String({ maxLength: 64, description: 'Node name or id.' })),
    asset: Type.Optional(AssetId),
    state: Type.Optional(AllocationState),
    cursor: Type.Optional(Type.Integer({ minimum: 1, description: 'next_cursor of the previous page.' })),
    limit: Limit(100, 1000),
  },
  { additionalProperties: false },
);

export const AllocationView = Type.Object({
  id: Type.Integer(),
  asset_id: Type.String(),
  node_id: Type.Integer(),
  node_name: Type.String(),
  state: Type.String(),
  reserved_bytes: Type.Integer(),
  created_at: Type.String(),
  expires_at: Type.String(),
  ended_at: Nullable(Type.String()),
  end_reason: Nullable(Type.String()),
  bytes: Nullable(Type.Integer()),
  sha256: Nullable(Type.String()),
  uri: Nullable(Type.String()),
  verified: Type.Boolean(),
  proved_at: Nullable(Type.String({ description: 'When the holder last showed this copy present and intact (a check at start, a scrub, a served transfer).' })),
  proof: Nullable(
    Type.String({
      description:
        'Of a copy: pending (its spot check against the source is under way; it holds its place), unproven (the source could not be checked; it counts once another holder agrees), proven (it counts), suspect (it failed or missed its last audit).',
    }),
  ),
  proven_at: Nullable(Type.String({ description: 'When the copy was proven: its spot check passed, or another holder agreed.' })),
  last_audit: Nullable(
    Type.Object({ at: Type.String(), verdict: Type.String({ description: 'passed, failed or missed' }) }, { description: 'Its latest audit or spot check.' }),
  ),
  holder_status: Type.String({ description: "The holding node's status: alive, suspect, dead, offline…" }),
  holder_last_seen: Nullable(Type.String({ description: "The holding node's last heartbeat." })),
  restore_url: Nullable(Type.String({ description: 'An active repair: where the node fetches the bytes from the copies left (as in the /allocate answer).' })),
});
export type AllocationView = Static<typeof AllocationView>;
