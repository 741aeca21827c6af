import { Type } from '@sinclair/typebox';
import { decodeAssetCursor, encodeAssetCursor } from './asset-cursor.js';
import { listAllocations } from '../allocations/allocations.repository.js';
import { AllocationView } from '../allocations/allocations.schemas.js';
import { AppError } from '../errors.js';
import { listAssetHistory } from '../events/events.repository.js';
import { EventView } from '../events/events.schemas.js';
import { actorOf, principalOf, type Guards } from '../http/auth.js';
import type { App, AppContext } from '../http/context.js';
import { bearerSecurity, errorResponses, Nullable } from '../http/schemas.js';
import { findAsset, listAssets } from './assets.repository.js';
import { AssetId, AssetList, AssetQuery, AssetView, UpdateCkanBody } from './assets.schemas.js';
import { agreedChecksum, importAssets, replicaDefaultFrom, toAssetView } from './assets.service.js';
import { updatePriorities } from './priority.service.js';
import { holderOnline } from '../transfers/relay.js';

const AssetDetail = Type.Composite([
  AssetView,
  Type.Object({
    allocations: Type.Array(AllocationView, { description: 'The latest 100 allocations, newest first.' }),
    copies_detail: Type.Array(
      Type.Composite([
        AllocationView,
        Type.Object({ holder_online: Type.Boolean({ description: 'Whether the holder is online now, so a restore can read this copy.' }) }),
      ]),
      { description: 'Completed allocations: the copies kept by nodes, and whether each can be read now.' },
    ),
    history: Type.Array(EventView, { description: "The latest 100 events of this asset's trail, newest first: about the asset and about its allocations." }),
    sha256_agreed: Type.Boolean({
      description: 'Whether sha256 is the checksum verified copies agreed on (a quorum of at least two), the asset having none of its own.',
    }),
  }),
]);

export function registerAssetRoutes(app: App, ctx: AppContext, guards: Guards): void {
  app.post(
    '/assets',
    {
      onRequest: guards.admin,
      schema: {
        tags: ['assets'],
        summary: "Add or update assets by id (the seeds' asset format) (admin)",
        security: bearerSecurity,
        body: AssetList,
        response: { 200: Type.Object({ status: Type.String(), imported: Type.Integer() }), ...errorResponses },
      },
    },
    async (request) => {
      const imported = await importAssets(
        ctx.db,
        request.body,
        { replicasFor: replicaDefaultFrom(ctx.config), actor: actorOf(principalOf(request)), source: 'api' },
        ctx.clock.now(),
      );
      return { status: 'success', imported };
    },
  );

  app.get(
    '/assets',
    {
      onRequest: guards.any,
      schema: {
        tags: ['assets'],
        summary: 'List assets in id order, filtered, one page at a time',
        security: bearerSecurity,
        querystring: AssetQuery,
        response: { 200: Type.Object({ items: Type.Array(AssetView), next_cursor: Nullable(Type.String()) }), ...errorResponses },
      },
    },
    async (request) => {
      const query = request.query;
      const rows = await listAssets(ctx.db, {
        state: query.state,
        minPriority: query.min_priority,
        maxPriority: query.max_priority,
        organization: query.organization,
        dataset: query.dataset,
        text: query.q,
        after: query.cursor === undefined ? undefined : decodeAssetCursor(query.cursor),
        limit: query.limit,
      });
      const last = rows[rows.length - 1];
      return { items: rows.map(toAssetView), next_cursor: rows.length === query.limit && last ? encodeAssetCursor(last.id) : null };
    },
  );

  app.get(
    '/assets/:id',
    {
      onRequest: guards.any,
      schema: {
        tags: ['assets'],
        summary: 'One asset with its allocations, copies and history',
        security: bearerSecurity,
        params: Type.Object({ id: AssetId }),
        response: { 200: AssetDetail, ...errorResponses },
      },
    },
    async (request) => {
      const row = await findAsset(ctx.db, request.params.id);
      if (!row) throw new AppError('ASSET_NOT_FOUND', `No asset has id "${request.params.id}".`);
      const [allocations, copies, history] = await Promise.all([
        listAllocations(ctx.db, { assetId: row.id, limit: 100 }),
        listAllocations(ctx.db, { assetId: row.id, state: 'completed', limit: 1000 }),
        listAssetHistory(ctx.db, row.id, 100),
      ]);
      const agreed = row.sha256 === null ? agreedChecksum(copies) : null;
      const now = ctx.clock.now();
      const copiesDetail = copies.map((copy) => ({
        ...copy,
        holder_online: holderOnline(copy.holder_status, copy.holder_last_seen, now, ctx.config.nodeTimeoutMs),
      }));
      return { ...toAssetView(row), sha256: row.sha256 ?? agreed, sha256_agreed: agreed !== null, allocations, copies_detail: copiesDetail, history };
    },
  );

  app.post(
    '/update-ckan',
    {
      onRequest: guards.admin,
      schema: {
        tags: ['assets'],
        summary: 'Set priorities, all or nothing (admin)',
        security: bearerSecurity,
        body: UpdateCkanBody,
        response: { 200: Type.Object({ status: Type.String(), updated_items: Type.Integer() }), ...errorResponses },
      },
    },
    async (request) => {
      const updated = await updatePriorities(
        ctx.db,
        request.body.updates.map((update) => ({ assetId: update.asset_id, priority: update.new_priority })),
        actorOf(principalOf(request)),
        ctx.clock.now(),
      );
      return { status: 'success', updated_items: updated };
    },
  );
}
