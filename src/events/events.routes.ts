import { Type } from '@sinclair/typebox';
import type { Guards } from '../http/auth.js';
import type { App, AppContext } from '../http/context.js';
import { bearerSecurity, errorResponses, Nullable } from '../http/schemas.js';
import { listEvents } from './events.repository.js';
import { EventQuery, EventView } from './events.schemas.js';

export function registerEventRoutes(app: App, ctx: AppContext, guards: Guards): void {
  app.get(
    '/events',
    {
      onRequest: guards.admin,
      schema: {
        tags: ['events'],
        summary: 'The audit log, newest first (admin)',
        security: bearerSecurity,
        querystring: EventQuery,
        response: { 200: Type.Object({ items: Type.Array(EventView), next_cursor: Nullable(Type.Integer()) }), ...errorResponses },
      },
    },
    async (request) => {
      const query = request.query;
      const items = await listEvents(ctx.db, {
        kind: query.kind,
        subjectType: query.subject_type,
        subjectId: query.subject_id,
        before: query.cursor,
        limit: query.limit,
      });
      return { items, next_cursor: items.length === query.limit ? (items[items.length - 1]?.id ?? null) : null };
    },
  );
}
