import { Type } from '@sinclair/typebox';
import type { Guards } from '../http/auth.js';
import type { App, AppContext } from '../http/context.js';
import { bearerSecurity, errorResponses } from '../http/schemas.js';
import { readSummary, RESCUE_HISTORY_DAYS } from './summary.service.js';

const Counts = (description: string) => Type.Record(Type.String(), Type.Integer(), { description });

const SummaryView = Type.Object({
  assets_total: Type.Integer(),
  assets_by_state: Counts('Every state (pending, rescued, gone, unreachable), 0 included.'),
  assets_by_priority: Counts('Priorities "1" to "10", 0 included.'),
  bytes_rescued: Type.Integer({ description: 'Bytes of verified copies, as in /status.' }),
  copies: Type.Object({
    verified: Type.Integer({ description: 'Verified copies of all assets.' }),
    wanted: Type.Integer({ description: 'The sum of every asset\'s replicas_target.' }),
  }),
  at_risk: Type.Object({
    without_copy: Type.Integer({ description: 'Assets with no verified copy yet (gone ones left out: none can be made).' }),
    under_replicated: Type.Integer({ description: 'Assets with at least one copy but fewer than replicas_target.' }),
    removed_from_source: Type.Integer({ description: 'Assets a re-import no longer found at their source, with fewer copies than wanted.' }),
    gone: Type.Integer({ description: 'Assets whose source vanished before any copy was made.' }),
  }),
  nodes_by_status: Counts('unknown, alive, suspect, dead, draining; 0 included.'),
  active_allocations: Type.Integer(),
  active_rentals: Type.Integer({ description: 'Rentals holding a worker (provisioning, active, migrating).' }),
  rescued_by_day: Type.Array(Type.Object({ day: Type.String({ description: 'UTC date, YYYY-MM-DD.' }), bytes: Type.Integer(), copies: Type.Integer() }), {
    description: `Verified copies completed on each of the last ${RESCUE_HISTORY_DAYS} days (UTC), oldest first, today last.`,
  }),
});

export function registerSummaryRoutes(app: App, ctx: AppContext, guards: Guards): void {
  app.get(
    '/api/summary',
    {
      onRequest: guards.any,
      schema: {
        tags: ['status'],
        summary: 'The dashboard\'s overview: assets by state and priority, copies, risk, nodes, rentals, bytes rescued per day',
        security: bearerSecurity,
        response: { 200: SummaryView, ...errorResponses },
      },
    },
    async () => {
      const summary = await readSummary(ctx.db, ctx.clock.now());
      return {
        assets_total: summary.assetsTotal,
        assets_by_state: summary.assetsByState,
        assets_by_priority: summary.assetsByPriority,
        bytes_rescued: summary.bytesRescued,
        copies: { verified: summary.copiesVerified, wanted: summary.copiesWanted },
        at_risk: {
          without_copy: summary.withoutCopy,
          under_replicated: summary.underReplicated,
          removed_from_source: summary.removedFromSource,
          gone: summary.assetsByState.gone ?? 0,
        },
        nodes_by_status: summary.nodesByStatus,
        active_allocations: summary.activeAllocations,
        active_rentals: summary.activeRentals,
        rescued_by_day: summary.rescuedByDay,
      };
    },
  );
}
