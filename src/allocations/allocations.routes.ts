import { Type } from '@sinclair/typebox';
import { toIso } from '../clock.js';
import { AppError } from '../errors.js';
import { actorOf, principalOf, type Guards } from '../http/auth.js';
import { resolveNode } from '../http/acting-node.js';
import type { App, AppContext } from '../http/context.js';
import { parseNodeRef } from '../http/request-rules.js';
import { bearerSecurity, bytesToMb, errorResponses, GIB } from '../http/schemas.js';
import { retryingLockConflicts } from '../db/retry.js';
import { allocationPolicyFrom } from './grants.service.js';
import { refusalError } from './refusal-errors.js';
import { batchWaitMs, createAllocationBatcher } from './allocation-batcher.js';
import { listAllocations } from './allocations.repository.js';
import { AllocateBody, AllocatedAsset, AllocationQuery, AllocationView, CompleteBody, CompleteResponse, ReleaseBody } from './allocations.schemas.js';
import { releaseAllocation } from './allocations.service.js';
import { completeAllocation } from './completion.service.js';
import { failurePolicyFrom } from './failure-policy.js';

export function registerAllocationRoutes(app: App, ctx: AppContext, guards: Guards): void {
  const nodeRateLimit = { rateLimit: { max: ctx.config.nodeRateLimitPerMinute, timeWindow: 60_000 } };
  const batcher = createAllocationBatcher({
    db: ctx.db,
    dialect: ctx.dialect,
    clock: ctx.clock,
    policy: allocationPolicyFrom(ctx.config),
    waitMs: batchWaitMs(ctx.config, ctx.dialect),
    // Each request is still answered (run again alone), but batches that keep failing must show.
    onBatchFailed: (requests, error) => app.log.warn({ err: error, requests }, 'an /allocate batch failed; each of its requests runs again on its own'),
  });

  app.post(
    '/allocate',
    {
      onRequest: guards.nodeOrAdmin,
      config: nodeRateLimit,
      schema: {
        tags: ['rescue'],
        summary: 'Hand a node the most important assets that fit its free space',
        security: bearerSecurity,
        body: AllocateBody,
        response: { 200: Type.Array(AllocatedAsset), ...errorResponses },
      },
    },
    async (request) => {
      const principal = principalOf(request);
      const body = request.body;
      const node = await resolveNode(ctx, principal, body.node_id, { create: true });
      const { granted, refusal } = await batcher.allocate({
        nodeId: node.id,
        freeBytes: body.free_space_gb === undefined ? null : Math.floor(body.free_space_gb * GIB),
        maxAssets: body.max_assets ?? 100,
        minPriority: body.min_priority ?? 1,
        actor: actorOf(principal),
      });
      if (refusal) throw refusalError(refusal, node.name);
      if (granted.length === 0) throw new AppError('NO_ASSETS_AVAILABLE', 'No available assets matching the criteria');
      return granted.map((asset) => ({
        id: asset.id,
        url: asset.url,
        restore_url: asset.restoreUrl,
        size_mb: bytesToMb(asset.sizeBytes),
        priority: asset.priority,
        name: asset.name,
        size_bytes: asset.sizeBytes,
        sha256: asset.sha256,
        allocation_id: asset.allocationId,
        expires_at: toIso(asset.expiresAt),
        reserved_bytes: asset.reservedBytes,
      }));
    },
  );

  app.post(
    '/release',
    {
      onRequest: guards.nodeOrAdmin,
      config: nodeRateLimit,
      schema: {
        tags: ['rescue'],
        summary: 'Give back an allocated asset',
        security: bearerSecurity,
        body: ReleaseBody,
        response: { 200: Type.Object({ status: Type.String(), message: Type.String() }), ...errorResponses },
      },
    },
    async (request) => {
      const principal = principalOf(request);
      const node = await resolveNode(ctx, principal, request.body.node_id, { create: false });
      await retryingLockConflicts(ctx.dialect, () =>
        releaseAllocation(
          ctx.db,
          {
            assetId: request.body.asset_id,
            nodeId: node.id,
            reason: request.body.reason ?? null,
            sourceStatus: request.body.source_status,
            cause: request.body.cause,
            retryAfterSeconds: request.body.retry_after_seconds,
            actor: actorOf(principal),
          },
          { goneConfirmations: ctx.config.sourceGoneConfirmations, ...failurePolicyFrom(ctx.config) },
          ctx.clock.now(),
        ),
      );
      return { status: 'success', message: 'Asset released successfully' };
    },
  );

  app.post(
    '/complete',
    {
      onRequest: guards.nodeOrAdmin,
      config: nodeRateLimit,
      schema: {
        tags: ['rescue'],
        summary: 'Report a finished, checksummed copy',
        security: bearerSecurity,
        body: CompleteBody,
        response: { 200: CompleteResponse, ...errorResponses },
      },
    },
    async (request) => {
      const principal = principalOf(request);
      const body = request.body;
      const node = await resolveNode(ctx, principal, body.node_id, { create: false });
      // A completion locks the asset, then the nodes whose strikes it changes: it can deadlock with
      // a claim that holds a node's row and waits for assets. The victim is run again.
      const result = await retryingLockConflicts(ctx.dialect, () =>
        completeAllocation(
          ctx.db,
          {
            assetId: body.asset_id,
            nodeId: node.id,
            sha256: body.sha256,
            bytes: body.bytes,
            uri: body.uri ?? null,
            merkleRoot: body.merkle_root ?? null,
            actor: actorOf(principal),
          },
          {
            ...failurePolicyFrom(ctx.config),
            spotChecks: ctx.config.verifySpotChecks,
            vettingAudits: ctx.config.vettingAudits,
            maxPlausibleRateBps: ctx.config.maxPlausibleRateBps,
          },
          ctx.clock.now(),
        ),
      );
      return {
        status: 'success',
        message: result.proof === 'pending' ? 'Copy recorded; it counts once its spot check passed' : 'Copy recorded',
        asset_state: result.assetState,
        copies: result.copies,
        replicas_target: result.replicasTarget,
        verified: result.verified,
        proof: result.proof,
      };
    },
  );

  app.get(
    '/allocations',
    {
      onRequest: guards.nodeOrAdmin,
      schema: {
        tags: ['rescue'],
        summary: 'List allocations, newest first (nodes see their own)',
        security: bearerSecurity,
        querystring: AllocationQuery,
        response: { 200: Type.Object({ items: Type.Array(AllocationView), next_cursor: Type.Union([Type.Integer(), Type.Null()]) }), ...errorResponses },
      },
    },
    async (request) => {
      const principal = principalOf(request);
      const query = request.query;
      const nodeRef = query.node === undefined ? undefined : parseNodeRef(query.node, 'querystring/node');
      let nodeId: number | undefined;
      if (principal.kind === 'node') {
        nodeId = principal.nodeId;
        if (nodeRef !== undefined) await resolveNode(ctx, principal, nodeRef, { create: false });
      } else if (nodeRef !== undefined) {
        nodeId = (await resolveNode(ctx, principal, nodeRef, { create: false })).id;
      }
      const items = await listAllocations(ctx.db, { nodeId, assetId: query.asset, state: query.state, before: query.cursor, limit: query.limit });
      return { items, next_cursor: items.length === query.limit ? (items[items.length - 1]?.id ?? null) : null };
    },
  );
}
