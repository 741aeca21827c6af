import { Type } from '@sinclair/typebox';
import { resolveNode } from '../http/acting-node.js';
import { allocationPolicyFrom } from '../allocations/grants.service.js';
import { toIso } from '../clock.js';
import { actorOf, isAdmin, principalOf, type Guards } from '../http/auth.js';
import type { App, AppContext } from '../http/context.js';
import { parseNodeRef } from '../http/request-rules.js';
import { bearerSecurity, errorResponses, NodeRefParam, Nullable } from '../http/schemas.js';
import { HANDED_OVER_RENTAL_STATES, WORKER_HOLDING_RENTAL_STATES, type RentalRow } from '../rentals/rentals.table.js';
import { latestRentals, listNodes } from './nodes.repository.js';
import { markNodeOffline, recordHeartbeat } from './liveness.service.js';
import { adjustNode, setOperator } from './node-admin.service.js';
import { approveNode } from './nodes.service.js';
import { AppError } from '../errors.js';
import { findUserByUsername } from '../users/users.repository.js';
import { openAuditsOf } from '../audits/audits.repository.js';
import { auditScoreOf } from '../audits/audit-score.js';
import { AuditItem, toAuditItem } from '../audits/audits.schemas.js';
import { openTransfersOf } from '../transfers/transfers.repository.js';
import { toTransferItem, TransferItem } from '../transfers/transfers.schemas.js';

const nodeRef = (raw: string) => parseNodeRef(raw, 'params/id');
const MAX_BYTES = 2 ** 53 - 1;

const HeartbeatBody = Type.Object(
  {
    free_bytes: Type.Integer({ minimum: 0, maximum: MAX_BYTES, description: "Free bytes of the filesystem holding the node's data." }),
    bytes_in_flight: Type.Optional(Type.Integer({ minimum: 0, maximum: MAX_BYTES })),
    download_rate_bps: Type.Optional(Type.Number({ minimum: 0, maximum: 1e12, description: 'Measured download rate, bytes per second.' })),
    allocations: Type.Optional(
      Type.Array(
        Type.Object(
          { asset_id: Type.String({ minLength: 1, maxLength: 512 }), bytes_done: Type.Integer({ minimum: 0, maximum: MAX_BYTES }) },
          { additionalProperties: false },
        ),
        {
          maxItems: 1000,
          description: "Progress per allocation; progress renews the allocation's lease.",
        },
      ),
    ),
  },
  { additionalProperties: false },
);

const NodeView = Type.Object({
  node_id: Type.Integer(),
  hostname: Type.String(),
  ssh_port: Nullable(Type.Integer()),
  status: Type.String({
    description:
      'unknown (never sent a heartbeat), alive, suspect, dead, or offline (its agent stopped cleanly); a worker that sends no heartbeats shows its SSH probe: unknown, alive or dead',
  }),
  allocated: Type.Boolean({ description: 'Rented out (worker leasing).' }),
  lease: Nullable(
    Type.Object(
      {
        rental_id: Type.Integer(),
        user_id: Type.Integer(),
        leased_from: Type.String(),
        leased_until: Type.String(),
        active: Type.Boolean(),
        state: Type.String({ description: 'provisioning, active, migrating, ended or failed' }),
        ended_at: Nullable(Type.String()),
        end_reason: Nullable(Type.String()),
      },
      { description: "The node's latest rental: the live one, or how the last one ended." },
    ),
  ),
  probe_status: Type.String({ description: 'Workers: unknown, alive or dead, from the SSH probe.' }),
  host_key_verified_at: Nullable(
    Type.String({
      description: "Workers: when the control plane's own SSH key exchange with ip:ssh_port presented the registered host key; null: not proven, not rented.",
    }),
  ),
  approved: Type.Boolean({ description: "False while the node waits for an admin's approval (WORKER_APPROVAL=admin)." }),
  quarantined: Type.Boolean({ description: 'Out of the rental pool until an admin clears it (cleanup kept failing, or the host key changed).' }),
  quarantine_reason: Nullable(Type.String()),
  name: Type.String(),
  ip: Nullable(Type.String()),
  tags: Type.Record(Type.String(), Type.String()),
  free_bytes: Nullable(Type.Integer()),
  free_reported_at: Nullable(Type.String()),
  last_heartbeat: Nullable(Type.String()),
  download_rate_bps: Nullable(Type.Number()),
  bytes_in_flight: Nullable(Type.Integer()),
  active_allocations: Type.Integer(),
  strikes: Type.Integer(),
  audit_score: Type.Union([Type.Number(), Type.Null()], {
    description: 'Share of its audits passed within AUDIT_SCORE_WINDOW_DAYS (null before any); below AUDIT_SCORE_MIN it gets no new work.',
  }),
  audits_passed: Type.Integer(),
  audits_failed: Type.Integer({ description: 'Failed and missed audits within the window.' }),
  operator: Nullable(
    Type.String({ description: "The user behind the node (its enrollment token's, or attached by an admin); null: it counts as its own operator." }),
  ),
  draining: Type.Boolean(),
});

export function registerNodeAdminRoutes(app: App, ctx: AppContext, guards: Guards): void {
  const policy = allocationPolicyFrom(ctx.config);
  const heartbeatEvery = Math.max(1, Math.floor(ctx.config.nodeTimeoutMs / 5000));

  app.post(
    '/api/nodes/:id/heartbeat',
    {
      onRequest: guards.nodeOrAdmin,
      config: { rateLimit: { max: ctx.config.nodeRateLimitPerMinute, timeWindow: 60_000 } },
      schema: {
        tags: ['nodes'],
        summary: "A node's sign of life: free space, rate, progress (renews leases)",
        security: bearerSecurity,
        params: NodeRefParam,
        body: HeartbeatBody,
        response: {
          200: Type.Object({
            status: Type.String(),
            node_status: Type.String(),
            draining: Type.Boolean(),
            renewed: Type.Array(Type.Object({ asset_id: Type.String(), expires_at: Type.String() })),
            ended: Type.Array(Type.String(), {
              description: 'Reported allocations that are no longer active here (expired, reclaimed, superseded): stop them and drop their partial data.',
            }),
            paused_sources: Type.Array(Type.Object({ host: Type.String(), until: Type.String(), retry_in_seconds: Type.Integer() }), {
              description: "Source hosts of this node's allocations that asked the fleet to wait (429/503): send them nothing before retry_in_seconds.",
            }),
            next_heartbeat_seconds: Type.Integer(),
            transfers: Type.Array(TransferItem, {
              description: 'Transfers this node is asked to send (also answered by its long-poll, GET /api/nodes/{id}/transfers).',
            }),
            audits: Type.Array(AuditItem, { description: 'Audits of its copies this node is asked to answer (POST each to its url before its deadline).' }),
          }),
          ...errorResponses,
        },
      },
    },
    async (request) => {
      const node = await resolveNode(ctx, principalOf(request), nodeRef(request.params.id), { create: false });
      const body = request.body;
      const now = ctx.clock.now();
      const result = await recordHeartbeat(
        ctx.db,
        node.id,
        {
          freeBytes: body.free_bytes,
          bytesInFlight: body.bytes_in_flight ?? null,
          rateBytesPerSecond: body.download_rate_bps ?? null,
          progress: (body.allocations ?? []).map((entry) => ({ assetId: entry.asset_id, bytesDone: entry.bytes_done })),
        },
        policy,
        now,
      );
      return {
        status: 'ok',
        node_status: result.status,
        draining: result.draining,
        renewed: result.renewed.map((entry) => ({ asset_id: entry.assetId, expires_at: toIso(entry.expiresAt) })),
        ended: result.ended,
        paused_sources: result.pausedSources.map((paused) => ({
          host: paused.host,
          until: toIso(paused.until) as string,
          retry_in_seconds: Math.ceil((paused.until - now) / 1000),
        })),
        next_heartbeat_seconds: heartbeatEvery,
        transfers: (await openTransfersOf(ctx.db, node.id)).map((row) => toTransferItem(row, ctx.config.transferChunkMaxBytes)),
        audits: (await openAuditsOf(ctx.db, node.id, now)).map(toAuditItem),
      };
    },
  );

  app.post(
    '/api/nodes/:id/offline',
    {
      onRequest: guards.nodeOrAdmin,
      config: { rateLimit: { max: ctx.config.nodeRateLimitPerMinute, timeWindow: 60_000 } },
      schema: {
        tags: ['nodes'],
        summary: 'A node going away cleanly: status offline, no strike, its copies keep counting (its next heartbeat makes it alive)',
        security: bearerSecurity,
        params: NodeRefParam,
        body: Type.Object({}, { additionalProperties: false }),
        response: { 200: Type.Object({ status: Type.String(), node_status: Type.String() }), ...errorResponses },
      },
    },
    async (request) => {
      const principal = principalOf(request);
      const node = await resolveNode(ctx, principal, nodeRef(request.params.id), { create: false });
      await markNodeOffline(ctx.db, node.id, actorOf(principal), ctx.clock.now());
      return { status: 'ok', node_status: 'offline' };
    },
  );

  app.get(
    '/api/nodes',
    {
      onRequest: guards.any,
      schema: {
        tags: ['nodes'],
        summary: "Nodes in the seed's shape plus rescue figures (admins: all; a user: their rentals' workers; a node: itself)",
        security: bearerSecurity,
        querystring: Type.Object(
          { operator: Type.Optional(Type.String({ minLength: 1, maxLength: 64, description: 'Only the nodes of this user (a username).' })) },
          { additionalProperties: false },
        ),
        response: { 200: Type.Array(NodeView), ...errorResponses },
      },
    },
    async (request) => {
      const principal = principalOf(request);
      const admin = isAdmin(principal);
      const rentals = principal.kind === 'node' ? [] : await latestRentals(ctx.db, admin ? undefined : principal.userId);
      const leases = new Map(rentals.map((rental) => [rental.node_id, rental]));
      const only = admin ? undefined : principal.kind === 'node' ? [principal.nodeId] : [...leases.keys()];
      const rows = await listNodes(ctx.db, only, request.query.operator);
      return rows.map((row) => ({
        node_id: row.id,
        hostname: row.hostname,
        ssh_port: row.ssh_port,
        status: statusOf(row),
        allocated: WORKER_HOLDING_RENTAL_STATES.some((state) => state === leases.get(row.id)?.state),
        lease: leaseView(leases.get(row.id)),
        probe_status: row.probe_status,
        host_key_verified_at: toIso(row.host_key_verified_at),
        approved: row.approved_at !== null,
        quarantined: row.quarantined_at !== null,
        quarantine_reason: row.quarantine_reason,
        name: row.name,
        ip: row.ip,
        tags: JSON.parse(row.tags) as Record<string, string>,
        free_bytes: row.free_bytes,
        free_reported_at: toIso(row.free_reported_at),
        last_heartbeat: toIso(row.last_heartbeat_at),
        download_rate_bps: row.bandwidth_bps,
        bytes_in_flight: row.bytes_in_flight,
        active_allocations: Number(row.active_allocations),
        strikes: row.strikes,
        audit_score: auditScoreOf(row),
        audits_passed: row.audits_passed,
        audits_failed: row.audits_failed,
        operator: row.operator,
        draining: row.draining === 1,
      }));
    },
  );

  app.post(
    '/api/nodes/:id/approve',
    {
      onRequest: guards.admin,
      schema: {
        tags: ['nodes'],
        summary: 'Let a worker be rented once its host key is proven (WORKER_APPROVAL=admin); approving again changes nothing (admin)',
        security: bearerSecurity,
        params: NodeRefParam,
        response: {
          200: Type.Object({ status: Type.String(), node_id: Type.Integer(), name: Type.String(), host_key_verified_at: Nullable(Type.String()) }),
          ...errorResponses,
        },
      },
    },
    async (request) => {
      const principal = principalOf(request);
      const { node } = await approveNode(ctx.db, { ref: nodeRef(request.params.id), actor: actorOf(principal), now: ctx.clock.now() });
      return { status: 'success', node_id: node.id, name: node.name, host_key_verified_at: toIso(node.host_key_verified_at) };
    },
  );

  app.post(
    '/api/nodes/:id/operator',
    {
      onRequest: guards.admin,
      schema: {
        tags: ['nodes'],
        summary: 'Attach a node to the user behind it (null: it counts as its own operator); its copies are recounted (admin)',
        description:
          'Copies on nodes of one operator count once toward replicas_target, and one operator gets at most one copy of an asset (DISTINCT_OPERATORS).',
        security: bearerSecurity,
        params: NodeRefParam,
        body: Type.Object({ operator: Nullable(Type.String({ minLength: 1, maxLength: 64, description: 'A username.' })) }, { additionalProperties: false }),
        response: { 200: Type.Object({ status: Type.String(), node_id: Type.Integer(), operator: Nullable(Type.String()) }), ...errorResponses },
      },
    },
    async (request) => {
      const principal = principalOf(request);
      const node = await resolveNode(ctx, principal, nodeRef(request.params.id), { create: false });
      const username = request.body.operator;
      const user = username === null ? undefined : await findUserByUsername(ctx.db, username);
      if (username !== null && !user) throw new AppError('USER_NOT_FOUND', `No user is named "${username}".`);
      await setOperator(
        ctx.db,
        { nodeId: node.id, operatorId: user?.id ?? null, distinct: ctx.config.distinctOperators, actor: actorOf(principal) },
        ctx.clock.now(),
      );
      return { status: 'success', node_id: node.id, operator: user?.username ?? null };
    },
  );

  for (const [action, summary] of [
    ['drain', 'Stop giving a node new work; it keeps what it has (admin)'],
    [
      'clear',
      "Forgive a node's strikes and cooldowns (it may get the assets it failed again at once), end a drain, lift a worker's quarantine (its failed cleanups are retried first) (admin)",
    ],
  ] as const) {
    app.post(
      `/api/nodes/:id/${action}`,
      {
        onRequest: guards.admin,
        schema: {
          tags: ['nodes'],
          summary,
          security: bearerSecurity,
          params: NodeRefParam,
          response: { 200: Type.Object({ status: Type.String(), node_id: Type.Integer(), name: Type.String() }), ...errorResponses },
        },
      },
      async (request) => {
        const principal = principalOf(request);
        const node = await resolveNode(ctx, principal, nodeRef(request.params.id), { create: false });
        await adjustNode(ctx.db, { nodeId: node.id, action, actor: actorOf(principal) }, ctx.clock.now());
        return { status: 'success', node_id: node.id, name: node.name };
      },
    );
  }
}

function leaseView(rental: RentalRow | undefined) {
  if (!rental) return null;
  return {
    rental_id: rental.id,
    user_id: rental.user_id,
    leased_from: toIso(rental.leased_from),
    leased_until: toIso(rental.leased_until),
    active: HANDED_OVER_RENTAL_STATES.includes(rental.state),
    state: rental.state,
    ended_at: toIso(rental.ended_at),
    end_reason: rental.end_reason,
  };
}

/**
 * A worker that fails its SSH probe is dead, whatever its heartbeats said; one that sends no
 * heartbeats at all (seed 003's agent registers and stays silent) is as alive as its SSH answers.
 */
function statusOf(row: { status: string; probe_status: string; ssh_host_key: string | null; last_heartbeat_at: number | null }): string {
  if (row.probe_status === 'dead') return 'dead';
  if (row.ssh_host_key !== null && row.last_heartbeat_at === null) return row.probe_status;
  return row.status;
}
