import crypto from 'node:crypto';
import { Readable } from 'node:stream';
import type { TypeBoxTypeProvider } from '@fastify/type-provider-typebox';
import { Type } from '@sinclair/typebox';
import type { FastifyRequest } from 'fastify';
import { loseCopies } from '../allocations/copy-loss.service.js';
import { endClaim } from '../db/due-work.js';
import { AppError, errorCodes, type ErrorCode } from '../errors.js';
import { resolveNode } from '../http/acting-node.js';
import { actorOf, isAdmin, principalOf, type Guards } from '../http/auth.js';
import type { App, AppContext } from '../http/context.js';
import { parseNodeRef } from '../http/request-rules.js';
import { bearerSecurity, errorResponses, NodeRefParam } from '../http/schemas.js';
import type { Delivered, Receiver } from './transfer-hub.js';
import { findTransfer, openTransfersOf, recordProved, transferWork } from './transfers.repository.js';
import { parseContentRange, toTransferItem, TransferItem } from './transfers.schemas.js';
import type { TransferRow } from './transfers.table.js';

const TransferIdParam = Type.Object({ id: Type.Integer({ minimum: 1, maximum: 2 ** 53 - 1 }) });
const Delivery = Type.Object({ received: Type.Integer(), done: Type.Boolean() });
const FailBody = Type.Object(
  {
    reason: Type.Union([Type.Literal('missing'), Type.Literal('corrupt'), Type.Literal('unreadable')], {
      description: 'missing or corrupt: the copy is gone, and stops counting. unreadable: this node cannot read it now.',
    }),
    detail: Type.Optional(Type.String({ maxLength: 500 })),
  },
  { additionalProperties: false },
);
const CopyReport = Type.Object(
  {
    checked: Type.Optional(Type.Array(Type.String({ minLength: 1, maxLength: 512 }), { maxItems: 1000, description: 'Copies just found present and intact.' })),
    lost: Type.Optional(
      Type.Array(
        Type.Object(
          {
            asset_id: Type.String({ minLength: 1, maxLength: 512 }),
            reason: Type.Union([Type.Literal('missing'), Type.Literal('corrupt')]),
            detail: Type.Optional(Type.String({ maxLength: 500 })),
          },
          { additionalProperties: false },
        ),
        { maxItems: 1000, description: 'Copies gone from disk or corrupt: they stop counting at once and are repaired.' },
      ),
    ),
  },
  { additionalProperties: false },
);
const RELAY_TOKEN_HEADER = 'x-dispatcher-relay-token';
/** The longest a node's long-poll is held open. */
const MAX_WAIT_SECONDS = 60;

/**
 * Transfers from the agent's side: it learns of them by a long-poll (or its heartbeat), sends each
 * as PUTs of chunks, or says it cannot. A chunk reaching another instance than the one whose
 * requester waits is forwarded there as it arrives (instance to instance, with the transfer's own
 * secret), so nothing is buffered whole and any instance may be reached.
 */
export function registerTransferRoutes(app: App, ctx: AppContext, guards: Guards): void {
  const hub = ctx.transfers;
  const maxChunk = ctx.config.transferChunkMaxBytes;

  app.get(
    '/api/nodes/:id/transfers',
    {
      onRequest: guards.node,
      schema: {
        tags: ['transfers'],
        summary: "A node's open transfers, waiting up to `wait` seconds for one (a long-poll)",
        security: bearerSecurity,
        params: NodeRefParam,
        querystring: Type.Object({ wait: Type.Optional(Type.Integer({ minimum: 0, maximum: MAX_WAIT_SECONDS, default: 0 })) }, { additionalProperties: false }),
        response: { 200: Type.Object({ transfers: Type.Array(TransferItem) }), ...errorResponses },
      },
    },
    async (request, reply) => {
      const node = await resolveNode(ctx, principalOf(request), parseNodeRef(request.params.id, 'params/id'), { create: false });
      let open = await openTransfersOf(ctx.db, node.id);
      if (open.length === 0 && (request.query.wait ?? 0) > 0) {
        const gone = new AbortController();
        reply.raw.once('close', () => gone.abort());
        await hub.waitForWork(node.id, (request.query.wait ?? 0) * 1000, gone.signal);
        open = await openTransfersOf(ctx.db, node.id);
      }
      return { transfers: open.map((row) => toTransferItem(row, maxChunk)) };
    },
  );

  app.post(
    '/api/nodes/:id/copies',
    {
      onRequest: guards.nodeOrAdmin,
      config: { rateLimit: { max: ctx.config.nodeRateLimitPerMinute, timeWindow: 60_000 } },
      schema: {
        tags: ['transfers'],
        summary: 'A node reports copies it checked (present, intact) and copies it lost (missing, corrupt)',
        security: bearerSecurity,
        params: NodeRefParam,
        body: CopyReport,
        response: { 200: Type.Object({ checked: Type.Integer(), lost: Type.Integer() }), ...errorResponses },
      },
    },
    async (request) => {
      const principal = principalOf(request);
      const node = await resolveNode(ctx, principal, parseNodeRef(request.params.id, 'params/id'), { create: false });
      const now = ctx.clock.now();
      const lost = (request.body.lost ?? []).map((copy) => ({ assetId: copy.asset_id, reason: copy.reason, detail: copy.detail }));
      const lostCount = await loseCopies(ctx.db, node.id, lost, actorOf(principal), now);
      const checked = await recordProved(ctx.db, node.id, request.body.checked ?? [], now);
      return { checked, lost: lostCount };
    },
  );

  // Chunks arrive as raw bytes: only these routes read application/octet-stream, as a stream.
  void app.register(async (plain) => {
    const scope = plain.withTypeProvider<TypeBoxTypeProvider>();
    scope.addContentTypeParser('application/octet-stream', (_request, payload, done) => done(null, payload));

    scope.put(
      '/api/transfers/:id',
      {
        onRequest: guards.node,
        schema: {
          tags: ['transfers'],
          summary: 'A chunk of a transfer: the bytes Content-Range names, as application/octet-stream (the holder only)',
          description: 'Chunks are sent in order, each starting where the previous ended; 409 TRANSFER_ENDED means stop.',
          security: bearerSecurity,
          params: TransferIdParam,
          response: { 200: Delivery, ...errorResponses },
        },
      },
      async (request) => {
        const transfer = await heldTransfer(ctx, request, request.params.id);
        const range = parseContentRange(request.headers['content-range']);
        if (range.size !== Number(transfer.size_bytes)) throw new AppError('TRANSFER_OFFSET', `The copy has ${transfer.size_bytes} bytes, not ${range.size}.`);
        const declared = Number(request.headers['content-length']);
        if (request.headers['content-length'] !== undefined && declared !== range.length) {
          throw new AppError('BAD_REQUEST', `Content-Length ${declared} differs from the ${range.length} bytes Content-Range names.`);
        }
        if (range.length > maxChunk) throw new AppError('BAD_REQUEST', `A chunk carries at most ${maxChunk} bytes (TRANSFER_CHUNK_MAX_BYTES).`);
        const body = chunkBody(request);
        if (transfer.relay_url === hub.selfUrl) return (await localReceiver(ctx, transfer)).deliver({ ...range, body });
        return forward(
          transfer,
          `/internal/transfers/${transfer.id}`,
          'PUT',
          {
            'content-type': 'application/octet-stream',
            'content-range': request.headers['content-range'] as string,
            'content-length': String(range.length),
          },
          request.raw,
        );
      },
    );

    scope.put('/internal/transfers/:id', { schema: { hide: true, params: TransferIdParam } }, async (request) => {
      const receiver = relayedReceiver(ctx, request.params.id, request.headers[RELAY_TOKEN_HEADER]);
      const range = parseContentRange(request.headers['content-range']);
      return receiver.deliver({ ...range, body: chunkBody(request) });
    });
  });

  app.post(
    '/api/transfers/:id/fail',
    {
      onRequest: guards.nodeOrAdmin,
      schema: {
        tags: ['transfers'],
        summary: 'The holder cannot send this transfer (its copy is missing, corrupt or unreadable); an admin may say so for it',
        security: bearerSecurity,
        params: TransferIdParam,
        body: FailBody,
        response: { 200: Type.Object({ status: Type.String() }), ...errorResponses },
      },
    },
    async (request) => {
      const transfer = await heldTransfer(ctx, request, request.params.id);
      const { reason, detail = '' } = request.body;
      if (transfer.relay_url === hub.selfUrl) (await localReceiver(ctx, transfer)).refuse(reason, detail);
      else
        await forward(transfer, `/internal/transfers/${transfer.id}/fail`, 'POST', { 'content-type': 'application/json' }, JSON.stringify({ reason, detail }));
      return { status: 'ok' };
    },
  );

  app.post('/internal/transfers/:id/fail', { schema: { hide: true, params: TransferIdParam, body: FailBody } }, async (request) => {
    relayedReceiver(ctx, request.params.id, request.headers[RELAY_TOKEN_HEADER]).refuse(request.body.reason, request.body.detail ?? '');
    return { status: 'ok' };
  });
}

/** The transfer the calling node (or an admin) holds and has not ended; 404 for an unknown id, 403 for another node's. */
async function heldTransfer(ctx: AppContext, request: FastifyRequest, id: number): Promise<TransferRow> {
  const principal = principalOf(request);
  const transfer = await findTransfer(ctx.db, id);
  if (!transfer) throw new AppError('TRANSFER_NOT_FOUND', `No transfer ${id}.`);
  const holder = principal.kind === 'node' ? Number(transfer.node_id) === principal.nodeId : isAdmin(principal);
  if (!holder) throw new AppError('FORBIDDEN', `Transfer ${id} is another node's.`);
  if (transfer.state !== 'sending') throw new AppError('TRANSFER_ENDED', `Transfer ${id} has ended (${transfer.state}); send nothing more.`);
  return transfer;
}

/** The receiver of a transfer whose requester waits on this instance; a transfer without one is ended (its requester is gone). */
async function localReceiver(ctx: AppContext, transfer: TransferRow): Promise<Receiver> {
  const receiver = ctx.transfers.receiver(Number(transfer.id));
  if (receiver) return receiver;
  const now = ctx.clock.now();
  await endClaim(ctx.db, transferWork, { id: Number(transfer.id) }, 'cancelled', { ended_at: now, end_reason: 'the requester went away' });
  throw new AppError('TRANSFER_ENDED', `Transfer ${transfer.id} has ended: its requester went away.`);
}

/** The receiver another instance forwards to, checked against the transfer's secret. */
function relayedReceiver(ctx: AppContext, id: number, token: string | string[] | undefined): Receiver {
  const receiver = ctx.transfers.receiver(id);
  const offered = Buffer.from(String(token ?? ''));
  const expected = Buffer.from(receiver?.token ?? '');
  if (!receiver || offered.length !== expected.length || !crypto.timingSafeEqual(offered, expected)) {
    throw new AppError('TRANSFER_ENDED', `Transfer ${id} is not received here.`);
  }
  return receiver;
}

function chunkBody(request: FastifyRequest): AsyncIterable<Uint8Array> {
  if (!(request.body instanceof Readable)) throw new AppError('UNSUPPORTED_MEDIA_TYPE', 'A chunk is sent as application/octet-stream.');
  return request.body;
}

/** Sends a request on to the instance whose requester waits, and answers with what it answered. */
async function forward(transfer: TransferRow, path: string, method: string, headers: Record<string, string>, body: Readable | string): Promise<Delivered> {
  let response: Response;
  try {
    response = await fetch(`${transfer.relay_url}${path}`, {
      method,
      headers: { ...headers, [RELAY_TOKEN_HEADER]: transfer.relay_token },
      body: typeof body === 'string' ? body : (Readable.toWeb(body) as ReadableStream<Uint8Array>),
      duplex: 'half',
    } as RequestInit);
  } catch {
    throw new AppError('TRANSFER_ENDED', `Transfer ${transfer.id} has ended: the instance that receives it cannot be reached.`);
  }
  const answer = (await response.json()) as Delivered & { code?: string; detail?: string };
  if (response.ok) return answer;
  const code = answer.code !== undefined && answer.code in errorCodes ? (answer.code as ErrorCode) : 'TRANSFER_ENDED';
  throw new AppError(code, answer.detail ?? `Transfer ${transfer.id} was refused.`);
}
