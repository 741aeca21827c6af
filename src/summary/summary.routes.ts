import { Type } from '@sinclair/typebox';
import type { Guards } from '../http/auth.js';
import type { App, AppContext } from '../http/context.js';
import { bearerSecurity, errorResponses } from '../http/schemas.js';
import { ProofFields, toProofFields } from '../status/proof-figures.schemas.js';
import { OTHER_GROUPS, PROGRESS_TOP_GROUPS, UNNAMED_GROUP, type Progress } from './progress.service.js';
import { readSummary, RESCUE_HISTORY_DAYS } from './summary.service.js';

const Counts = (description: string) => Type.Record(Type.String(), Type.Integer(), { description });

const ProgressView = Type.Object({
  name: Type.String({ description: `The organization or dataset; "${UNNAMED_GROUP}" for assets without one, "${OTHER_GROUPS}" for all groups not listed.` }),
  assets: Type.Integer(),
  at_target: Type.Integer({ description: 'Assets with at least replicas_target verified copies.' }),
  at_risk: Type.Integer({ description: 'Assets with fewer verified copies than wanted (gone ones included).' }),
  without_copy: Type.Integer({ description: 'Assets with no verified copy yet (gone ones left out: none can be made).' }),
  bytes_rescued_distinct: Type.Integer({ description: 'Bytes of the assets with a verified copy, each once.' }),
});

const progressList = (of: string) =>
  Type.Array(ProgressView, {
    description: `The ${PROGRESS_TOP_GROUPS} ${of} with the most assets, most first, then "${OTHER_GROUPS}" summing the rest when there are more.`,
  });

function toProgressView(progress: Progress) {
  return {
    name: progress.name,
    assets: progress.assets,
    at_target: progress.atTarget,
    at_risk: progress.atRisk,
    without_copy: progress.withoutCopy,
    bytes_rescued_distinct: progress.bytesRescuedDistinct,
  };
}

const SummaryView = Type.Object({
  assets_total: Type.Integer(),
  assets_by_state: Counts('Every state (pending, rescued, gone, unreachable, suspect), 0 included.'),
  assets_by_priority: Counts('Priorities "1" to "10", 0 included.'),
  bytes_rescued: Type.Integer({ description: 'Bytes of every verified copy, as in /status: an asset with three copies counts three times.' }),
  bytes_rescued_distinct: Type.Integer({ description: 'Bytes of the assets with at least one verified copy, each once (its size), as in /status.' }),
  ...ProofFields,
  copies: Type.Object({
    verified: Type.Integer({ description: 'Verified copies of all assets.' }),
    wanted: Type.Integer({ description: 'The sum of replicas_target over the assets that are not gone.' }),
  }),
  at_risk: Type.Object({
    without_copy: Type.Integer({ description: 'Assets with no verified copy yet (gone ones left out: none can be made).' }),
    under_replicated: Type.Integer({ description: 'Assets with at least one copy but fewer than replicas_target.' }),
    removed_from_source: Type.Integer({ description: 'Assets a re-import no longer found at their source, with fewer copies than wanted.' }),
    gone: Type.Integer({ description: 'Assets whose source vanished before any copy was made.' }),
  }),
  nodes_by_status: Counts('unknown, alive, suspect, dead, draining, offline; 0 included.'),
  active_allocations: Type.Integer(),
  active_rentals: Type.Integer({ description: 'Rentals holding a worker (provisioning, active, migrating).' }),
  rescued_by_day: Type.Array(Type.Object({ day: Type.String({ description: 'UTC date, YYYY-MM-DD.' }), bytes: Type.Integer(), copies: Type.Integer() }), {
    description: `Verified copies completed on each of the last ${RESCUE_HISTORY_DAYS} days (UTC), oldest first, today last.`,
  }),
  by_organization: progressList('organizations'),
  by_dataset: progressList('datasets'),
});

export function registerSummaryRoutes(app: App, ctx: AppContext, guards: Guards): void {
  app.get(
    '/api/summary',
    {
      onRequest: guards.any,
      schema: {
        tags: ['status'],
        summary:
          "The dashboard's overview: assets by state and priority, copies, proofs and audits, risk, nodes, rentals, bytes rescued per day, progress per organization and dataset",
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
        bytes_rescued_distinct: summary.bytesRescuedDistinct,
        ...toProofFields(summary.proofs),
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
        by_organization: summary.byOrganization.map(toProgressView),
        by_dataset: summary.byDataset.map(toProgressView),
      };
    },
  );
}
