import { Type } from '@sinclair/typebox';
import type { FastifyRequest } from 'fastify';
import { AppError } from '../errors.js';
import { authenticate, authFailureBudgetOf, bearerToken, isAdmin, underFailureBudget } from '../http/auth.js';
import type { App, AppContext } from '../http/context.js';
import { bearerSecurity, errorResponses } from '../http/schemas.js';
import { constantTimeEqual } from '../lib/secrets.js';
import type { Metrics } from './metrics.js';

/**
 * Times every request into the latency histogram, labelled with the route's pattern
 * (`/api/nodes/:id/heartbeat`), never the raw URL: one series per route, whatever the ids.
 * Must be installed before the routes are registered.
 */
export function observeRequests(app: App, metrics: Metrics): void {
  app.addHook('onResponse', async (request, reply) => {
    metrics.observeRequest({
      method: request.method,
      route: request.routeOptions.url ?? 'unmatched',
      statusCode: reply.statusCode,
      seconds: reply.elapsedTime / 1000,
    });
  });
}

export function registerMetricsRoutes(app: App, ctx: AppContext, metrics: Metrics): void {
  app.get(
    '/metrics',
    {
      onRequest: (request) => authorizeScrape(ctx, request),
      schema: {
        tags: ['status'],
        summary: 'Prometheus metrics (METRICS_TOKEN or an admin token when METRICS_TOKEN is set)',
        security: bearerSecurity,
        response: { 200: { description: 'Prometheus text format 0.0.4.', content: { 'text/plain': { schema: Type.String() } } }, ...errorResponses },
      },
    },
    async (_request, reply) => {
      const text = await metrics.registry.metrics();
      return reply.type(metrics.registry.contentType).send(text);
    },
  );
}

/**
 * Open when METRICS_TOKEN is unset (the figures are those /status shows anyone, plus process and
 * latency figures); otherwise the scraper's token, or an admin's for a look with curl.
 */
async function authorizeScrape(ctx: AppContext, request: FastifyRequest): Promise<void> {
  const expected = ctx.config.metricsToken;
  if (expected === undefined) return;
  const token = bearerToken(request);
  if (constantTimeEqual(token, expected)) return;
  // A wrong token counts against the address's budget, as on every other route.
  const principal = await underFailureBudget(authFailureBudgetOf(ctx), request.ip, ctx.clock.now(), () => authenticate(ctx, token));
  if (!isAdmin(principal)) throw new AppError('FORBIDDEN', 'GET /metrics needs METRICS_TOKEN or an admin token.');
}
