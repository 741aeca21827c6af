import { Type } from '@sinclair/typebox';
import { AppError } from '../errors.js';
import { actorOf, isAdmin, principalOf, type Guards } from '../http/auth.js';
import type { App, AppContext } from '../http/context.js';
import { bearerSecurity, bytesToMb, errorResponses, GIB } from '../http/schemas.js';
import { findNodeById, findNodeByName } from '../nodes/nodes.repository.js';
import { allocateAssets, allocationPolicyFrom, previewAllocation, type AllocationOutcome } from './grants.service.js';
import { NodeRef } from './allocations.schemas.js';
import { resolveNode } from '../http/acting-node.js';
import { refusalError } from './refusal-errors.js';

const PriorityLevel = Type.Union([Type.Literal('high'), Type.Literal('medium'), Type.Literal('low')]);
const priorityRanges = { high: [8, 10], medium: [4, 7], low: [1, 3] } as const;

const DispatchBody = Type.Object(
  {
    node_id: NodeRef,
    capacity_gb: Type.Number({ minimum: 0, maximum: 1_000_000_000, description: 'Space the node offers, in GiB.' }),
    priority_level: PriorityLevel,
    max_tasks: Type.Optional(Type.Integer({ minimum: 1, maximum: 1000, default: 10 })),
  },
  { additionalProperties: false },
);

const DispatchResponse = Type.Object({
  status: Type.String(),
  message: Type.String(),
  received_data: Type.Object({ node_id: Type.Union([Type.String(), Type.Integer()]), capacity_gb: Type.Number(), priority_level: Type.String() }),
  mock_data: Type.Object({
    assigned_tasks: Type.Array(
      Type.Object({
        task_id: Type.String({ description: 'The asset id (use it as asset_id in /complete).' }),
        dataset_url: Type.String(),
        size_mb: Type.Union([Type.Number(), Type.Null()]),
        priority: Type.Integer(),
      }),
    ),
    estimated_duration: Type.String(),
    node_status: Type.String(),
  }),
});

/** Seed 002's task distribution: `/mock_dispatch` is a dry run on real data, `/dispatch` reserves. */
export function registerDispatchRoutes(app: App, ctx: AppContext, guards: Guards): void {
  const policy = allocationPolicyFrom(ctx.config);
  for (const [url, dryRun] of [
    ['/mock_dispatch', true],
    ['/dispatch', false],
  ] as const) {
    app.post(
      url,
      {
        onRequest: guards.nodeOrAdmin,
        config: { rateLimit: { max: ctx.config.nodeRateLimitPerMinute, timeWindow: 60_000 } },
        schema: {
          tags: ['rescue'],
          summary: dryRun ? 'What /dispatch would assign now, reserving nothing' : 'Assign tasks to a node (reserves them, like /allocate)',
          security: bearerSecurity,
          body: DispatchBody,
          response: { 200: DispatchResponse, ...errorResponses },
        },
      },
      async (request) => {
        const principal = principalOf(request);
        const body = request.body;
        // An admin's dry run for a node never seen previews what it would get, creating nothing (seed 002).
        const provisional = dryRun && isAdmin(principal) && typeof body.node_id === 'string' && !(await findNodeByName(ctx.db, body.node_id));
        const node = provisional ? { id: 0, name: body.node_id as string } : await resolveNode(ctx, principal, body.node_id, { create: !dryRun });
        const [minPriority, maxPriority] = priorityRanges[body.priority_level];
        const allocation = {
          nodeId: node.id,
          freeBytes: Math.floor(body.capacity_gb * GIB),
          maxAssets: body.max_tasks ?? 10,
          minPriority,
          maxPriority,
          actor: actorOf(principal),
        };
        const now = ctx.clock.now();
        const outcome: AllocationOutcome = dryRun
          ? await previewAllocation(ctx.db, allocation, policy, now, provisional ? node.name : undefined)
          : await allocateAssets(ctx.db, ctx.dialect, allocation, policy, now);
        if (outcome.refusal) throw refusalError(outcome.refusal, node.name);
        const row = provisional ? { bandwidth_bps: null, draining: 0, status: 'unknown' } : await findNodeById(ctx.db, node.id);
        if (!row) throw new AppError('NODE_NOT_FOUND', `No node "${node.name}".`);
        const bytes = outcome.granted.reduce((sum, asset) => sum + asset.reservedBytes, 0);
        return {
          status: 'success',
          message: 'Payload received and processed',
          received_data: { node_id: body.node_id, capacity_gb: body.capacity_gb, priority_level: body.priority_level },
          mock_data: {
            assigned_tasks: outcome.granted.map((asset) => ({
              task_id: asset.id,
              dataset_url: asset.url,
              size_mb: bytesToMb(asset.sizeBytes),
              priority: asset.priority,
            })),
            estimated_duration: describeDuration(bytes / (row.bandwidth_bps ?? ctx.config.defaultNodeRateBytesPerSecond)),
            node_status: row.draining ? 'draining' : row.status === 'alive' || row.status === 'unknown' ? 'active' : row.status,
          },
        };
      },
    );
  }
}

/** "2 hours", "45 minutes", "30 seconds": the seed's wording, rounded to the nearest unit. */
export function describeDuration(seconds: number): string {
  const units: [number, string][] = [
    [86_400, 'day'],
    [3_600, 'hour'],
    [60, 'minute'],
    [1, 'second'],
  ];
  for (const [size, name] of units) {
    if (seconds >= size) {
      const count = Math.round(seconds / size);
      return `${count} ${name}${count === 1 ? '' : 's'}`;
    }
  }
  return '0 seconds';
}
