import type {} from '@fastify/rate-limit';
import type { FastifyRequest, onRequestAsyncHookHandler } from 'fastify';
import { AppError } from '../errors.js';
import type { App } from './context.js';

const limiters = new WeakMap<App, onRequestAsyncHookHandler>();

/** Whose budget a request spends: the authenticated user (or node), else the client address. */
function budgetKey(request: FastifyRequest): string {
  const principal = request.principal;
  if (principal?.kind === 'user') return `user:${principal.userId}`;
  if (principal?.kind === 'node') return `node:${principal.nodeId}`;
  return `address:${request.ip}`;
}

/**
 * USER_RATE_LIMIT_PER_MINUTE: one budget per user across every schedule and rental route, so it
 * is one hook made once per app. A route's own `config.rateLimit` would get a counter of its own
 * (@fastify/rate-limit gives each route its own store), a budget per route. Put it after the
 * authentication guard in `onRequest`, so that the user is known.
 */
export function userRateLimit(app: App, perMinute: number): onRequestAsyncHookHandler {
  const existing = limiters.get(app);
  if (existing) return existing;
  const limiter = app.rateLimit({
    max: perMinute,
    timeWindow: 60_000,
    keyGenerator: budgetKey,
    errorResponseBuilder: (_request, context) => {
      const seconds = Math.max(1, Math.ceil(context.ttl / 1000));
      return new AppError(
        'RATE_LIMITED',
        `More than ${context.max} schedule and rental calls in a minute (USER_RATE_LIMIT_PER_MINUTE ${context.max}); retry in ${seconds} second${seconds === 1 ? '' : 's'}.`,
        { retry_after_seconds: seconds },
      );
    },
  }) as onRequestAsyncHookHandler;
  limiters.set(app, limiter);
  return limiter;
}
