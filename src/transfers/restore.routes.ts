import { Type } from '@sinclair/typebox';
import { AssetId } from '../assets/assets.schemas.js';
import type { Guards } from '../http/auth.js';
import type { App, AppContext } from '../http/context.js';
import { bearerSecurity, errorResponses } from '../http/schemas.js';
import { createSafeFetch } from '../agent/safe-fetch.js';
import { AppError } from '../errors.js';
import { holdsActiveAllocation, planRestore } from './restore.service.js';
import { Relay, type RelayDeps, type RelaySink } from './relay.js';

/**
 * GET /assets/{id}/content: the exact bytes of a counted copy, relayed from whichever holder is
 * online (or a redirect to the source while it answers). Headers go out with the first byte, so
 * a restore no holder starts is still a clean 503.
 */
export function registerRestoreRoutes(app: App, ctx: AppContext, guards: Guards): void {
  const access = ctx.config.restoreAccess;
  // Nodes restore only what they were given to repair from copies, whatever RESTORE_ACCESS says.
  const guard = access === 'public' ? undefined : access === 'admins' ? guards.nodeOrAdmin : guards.any;
  const deps: RelayDeps = {
    db: ctx.db,
    hub: ctx.transfers,
    now: () => ctx.clock.now(),
    startMs: ctx.config.transferStartMs,
    idleMs: ctx.config.requestTimeoutMs + ctx.config.transferStartMs,
    onlineWithinMs: ctx.config.nodeTimeoutMs,
    holderWaitMs: ctx.config.transferStartMs,
  };
  const sourceFetch = createSafeFetch({ allowPrivate: ctx.config.sourceAllowPrivate, userAgent: 'dispatcher (restore source check)' });

  app.get(
    '/assets/:id/content',
    {
      ...(guard ? { onRequest: guard } : {}),
      schema: {
        tags: ['assets'],
        summary: 'Restore: the bytes of a verified copy, relayed from a volunteer that holds one (RESTORE_ACCESS)',
        description:
          'Answers 200 (or 206 for one Range) with Content-Length and ETag "<sha256>"; a whole copy is checked against its sha256 before its last byte, and the connection is cut on a mismatch. 302 to the source while it answers (RESTORE_PREFER_SOURCE; prefer_source=false asks for a copy). 404 NO_COPY without a verified copy; 503 NO_HOLDER_ONLINE (Retry-After) when no holder is online.',
        ...(guard ? { security: bearerSecurity } : {}),
        params: Type.Object({ id: AssetId }),
        querystring: Type.Object(
          { prefer_source: Type.Optional(Type.Boolean({ description: 'false: relay a copy even while the source answers.' })) },
          { additionalProperties: false },
        ),
        response: { ...errorResponses },
      },
    },
    async (request, reply) => {
      const principal = request.principal;
      if (principal?.kind === 'node' && !(await holdsActiveAllocation(ctx.db, principal.nodeId, request.params.id))) {
        throw new AppError('FORBIDDEN', `Node "${principal.nodeName}" holds no active allocation of "${request.params.id}" to repair.`);
      }
      const plan = await planRestore(
        ctx.db,
        { sourceFetch, onlineWithinMs: deps.onlineWithinMs },
        {
          assetId: request.params.id,
          range: request.headers.range,
          ifRange: firstOf(request.headers['if-range']),
          preferSource: request.query.prefer_source ?? ctx.config.restorePreferSource,
        },
        ctx.clock.now(),
      );
      if (plan.kind === 'redirect') return reply.redirect(plan.url, 302);
      const { relayPlan, partial, name } = plan;
      const response = reply.raw;
      const gone = new AbortController();
      response.once('close', () => {
        if (!response.writableFinished) gone.abort();
      });
      const headers = {
        'content-type': 'application/octet-stream',
        'content-length': String(relayPlan.end - relayPlan.start),
        etag: `"${relayPlan.sha256}"`,
        'accept-ranges': 'bytes',
        'content-disposition': contentDisposition(name),
        ...(partial ? { 'content-range': `bytes ${relayPlan.start}-${relayPlan.end - 1}/${relayPlan.size}` } : {}),
        // What the app's onSend hook says of every answer of a stopping instance.
        ...(ctx.transfers.isClosed ? { connection: 'close' } : {}),
      };
      // The relay writes the body itself, straight to the socket (no stream in between to pass
      // each piece through): the answer is taken over from Fastify with its first byte. Until then
      // an error is Fastify's to answer, as a 503 NO_HOLDER_ONLINE.
      let opened = false;
      let firstByte = () => {};
      const started = new Promise<void>((resolve) => (firstByte = resolve));
      const sink: RelaySink = {
        opened: () => {
          opened = true;
          void reply.hijack();
          response.writeHead(partial ? 206 : 200, headers);
          firstByte();
        },
        stream: response,
        bufferBytes: RELAY_BUFFER_BYTES,
        cutOff: (error) => {
          request.log.warn({ err: error }, 'restore cut off before its end');
          response.destroy(error);
        },
      };
      const running = new Relay(deps, relayPlan, sink, gone.signal).run();
      await Promise.race([started, running]);
      if (!opened) {
        // The requester went away before the first byte: no one is left to answer.
        void reply.hijack();
        response.destroy();
        return reply;
      }
      running.catch((error: unknown) => sink.cutOff(error as Error));
      return reply;
    },
  );
}

/**
 * What a restore may hold in memory between the holder and the client, beyond the kernel's socket
 * buffers: room for a few of the holder's reads, so that neither side waits on every piece.
 */
const RELAY_BUFFER_BYTES = 4 * 1024 * 1024;

const firstOf = (header: string | string[] | undefined) => (Array.isArray(header) ? header[0] : header);

/** `attachment` with the name as plain ASCII and, when it is not, as RFC 5987 UTF-8. */
function contentDisposition(name: string): string {
  const plain = name.replace(/[^\x20-\x7e]|["\\]/g, '_') || 'download';
  return `attachment; filename="${plain}"; filename*=UTF-8''${encodeURIComponent(name)}`;
}
