import rateLimit from '@fastify/rate-limit';
import swagger from '@fastify/swagger';
import swaggerUi from '@fastify/swagger-ui';
import type { TypeBoxTypeProvider } from '@fastify/type-provider-typebox';
import Fastify, { LogController, type FastifyBaseLogger } from 'fastify';
import { registerAllocationRoutes } from '../allocations/allocations.routes.js';
import { registerDispatchRoutes } from '../allocations/dispatch.routes.js';
import { registerAssetRoutes } from '../assets/assets.routes.js';
import { registerImportRoutes } from '../catalog/import-jobs.routes.js';
import { registerEventRoutes } from '../events/events.routes.js';
import type { Metrics } from '../metrics/metrics.js';
import { observeRequests, registerMetricsRoutes } from '../metrics/metrics.routes.js';
import { registerNodeAdminRoutes } from '../nodes/node-admin.routes.js';
import { registerNodeRoutes } from '../nodes/nodes.routes.js';
import { registerRentalRoutes } from '../rentals/rentals.routes.js';
import { registerScheduleRoutes } from '../schedules/schedules.routes.js';
import { registerStatusRoutes } from '../status/status.routes.js';
import { registerSummaryRoutes } from '../summary/summary.routes.js';
import { registerAuditRoutes } from '../audits/audits.routes.js';
import { registerRestoreRoutes } from '../transfers/restore.routes.js';
import { registerTransferRoutes } from '../transfers/transfers.routes.js';
import { registerUiRoutes } from '../ui/ui.routes.js';
import { registerUserRoutes } from '../users/users.routes.js';
import { createGuards } from './auth.js';
import type { App, AppContext } from './context.js';
import { answerFrameworkError, installErrorHandler } from './error-handler.js';
import { installRequestRules, markOptionalBodies } from './request-rules.js';
import { ErrorResponse } from './schemas.js';
import { validatorCompiler } from './validation.js';

export interface AppOptions {
  /** A pino logger, or nothing to log nothing (tests). */
  logger?: FastifyBaseLogger;
  /** This server's registry: requests are timed into it and `GET /metrics` serves it. */
  metrics: Metrics;
}

/** Builds the HTTP API: every route file is registered here, explicitly. */
export async function buildApp(ctx: AppContext, options: AppOptions): Promise<App> {
  const app: App = Fastify({
    ...(options.logger ? { loggerInstance: options.logger } : { logger: false }),
    bodyLimit: ctx.config.bodyLimitBytes,
    // A client that trickles a request in gets 408 once it has taken this long, and a connection
    // idle this long is closed: slow clients cannot hold sockets open without end.
    requestTimeout: ctx.config.requestTimeoutMs,
    connectionTimeout: 2 * ctx.config.requestTimeoutMs,
    // An asset id is up to 512 characters, up to 9 each once percent-encoded: /assets/{id} must reach them all.
    routerOptions: { maxParamLength: 512 * 9 },
    frameworkErrors: answerFrameworkError,
    trustProxy: ctx.config.trustProxy,
    // One line per request only at debug/trace: at info, thousands of /allocate calls a second would drown the log.
    logController: new LogController({ disableRequestLogging: !['debug', 'trace'].includes(ctx.config.logLevel) }),
  }).withTypeProvider<TypeBoxTypeProvider>();
  app.setValidatorCompiler(validatorCompiler);
  installRequestRules(app);
  app.addSchema(ErrorResponse);
  app.decorateRequest('principal', null);
  installErrorHandler(app, ctx.dialect);
  observeRequests(app, options.metrics);
  // Once the instance stops (its transfer hub closes first), answers close their connection: the
  // server's close waits for every open one, and a keep-alive one would hold it up for minutes.
  app.addHook('onSend', async (_request, reply, payload) => {
    if (ctx.transfers.isClosed) void reply.header('connection', 'close');
    return payload;
  });

  await app.register(rateLimit, {
    global: false,
    // Per token where there is one (each node has its own budget), else per client address.
    keyGenerator: (request) => request.headers.authorization ?? request.ip,
    errorResponseBuilder: (_request, context) => ({
      statusCode: context.statusCode,
      code: 'RATE_LIMITED',
      message: `Rate limit of ${context.max} requests per ${context.after} reached; retry later.`,
    }),
  });
  await app.register(swagger, {
    openapi: {
      info: { title: 'Dispatcher', version: '0.1.0', description: 'Control plane for distributed science data rescue.' },
      components: { securitySchemes: { bearerAuth: { type: 'http', scheme: 'bearer' } } },
    },
    transformObject: (document) => markOptionalBodies('openapiObject' in document ? document.openapiObject : document.swaggerObject),
  });
  await app.register(swaggerUi, {
    routePrefix: '/docs',
    // The same protections as the dashboard's: a policy with the page's own script and style
    // hashes, no framing (clickjacking), no sniffing, no referrer.
    staticCSP: true,
    transformStaticCSP: (header) => header.replace("frame-ancestors 'self'", "frame-ancestors 'none'").replace(/\s*upgrade-insecure-requests;?/, ''),
    uiHooks: {
      onRequest: async (_request, reply) => {
        reply.header('x-frame-options', 'DENY').header('x-content-type-options', 'nosniff').header('referrer-policy', 'no-referrer');
      },
    },
  });
  app.get('/openapi.json', { schema: { hide: true } }, async () => app.swagger());

  const guards = createGuards(ctx);
  registerStatusRoutes(app, ctx);
  registerMetricsRoutes(app, ctx, options.metrics);
  registerUserRoutes(app, ctx);
  registerNodeRoutes(app, ctx, guards);
  registerNodeAdminRoutes(app, ctx, guards);
  registerAssetRoutes(app, ctx, guards);
  registerRestoreRoutes(app, ctx, guards);
  registerTransferRoutes(app, ctx, guards);
  registerAuditRoutes(app, ctx, guards);
  registerAllocationRoutes(app, ctx, guards);
  registerDispatchRoutes(app, ctx, guards);
  registerEventRoutes(app, ctx, guards);
  registerImportRoutes(app, ctx, guards);
  registerRentalRoutes(app, ctx, guards);
  registerScheduleRoutes(app, ctx, guards);
  registerSummaryRoutes(app, ctx, guards);
  registerUiRoutes(app);
  await app.ready();
  return app;
}
