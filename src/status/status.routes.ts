import { Type } from '@sinclair/typebox';
import { toIso } from '../clock.js';
import { pingDatabase } from '../db/database.js';
import type { App, AppContext } from '../http/context.js';
import { errorResponses } from '../http/schemas.js';
import { failingLoops, readNextRun } from '../lib/loop.js';
import { PRIORITY_LOOP } from '../loops.js';
import { ProofFields, toProofFields } from './proof-figures.schemas.js';
import { readProofFigures } from './proof-figures.service.js';
import { readStatusFigures } from './status.service.js';

const Health = Type.Object({ status: Type.String() });

const Status = Type.Object({
  ckan_datasets: Type.Integer({ description: 'Number of assets (the seeds counted CKAN resources).' }),
  active_allocations: Type.Integer(),
  next_auto_update: Type.String({ description: 'When the priority loop runs next (ISO 8601); before its first pass, now (it is due).' }),
  total_priority_score: Type.Integer(),
  system_health: Type.String({ description: '"healthy", or "degraded" when a background loop failed its last pass.' }),
  assets_by_state: Type.Record(Type.String(), Type.Integer()),
  nodes_by_status: Type.Record(Type.String(), Type.Integer()),
  nodes_alive: Type.Integer(),
  bytes_rescued: Type.Integer({ description: 'Bytes of every verified copy: an asset with three copies counts three times.' }),
  bytes_rescued_distinct: Type.Integer({ description: 'Bytes of the assets with at least one verified copy, each counted once (its size).' }),
  ...ProofFields,
});

export function registerStatusRoutes(app: App, ctx: AppContext): void {
  // Seed 002 documents the greeting as the JSON string "Hello rescuer 👋".
  app.get(
    '/',
    { schema: { tags: ['status'], summary: 'Greeting', response: { 200: Type.String({ description: 'The JSON string "Hello rescuer 👋".' }) } } },
    async (_request, reply) => reply.type('application/json; charset=utf-8').send(JSON.stringify('Hello rescuer 👋')),
  );

  for (const url of ['/health', '/api/health']) {
    app.get(
      url,
      { schema: { tags: ['status'], summary: 'Healthy when the database answers', response: { 200: Health, 503: Health } } },
      async (_request, reply) => {
        const healthy = await pingDatabase(ctx.db);
        return reply.status(healthy ? 200 : 503).send({ status: healthy ? 'healthy' : 'unhealthy' });
      },
    );
  }

  app.get('/status', { schema: { tags: ['status'], summary: 'System figures', response: { 200: Status, ...errorResponses } } }, async () => {
    const now = ctx.clock.now();
    const [figures, proofs, nextRun, failing] = await Promise.all([
      readStatusFigures(ctx.db),
      readProofFigures(ctx.db, now),
      readNextRun(ctx.db, PRIORITY_LOOP),
      failingLoops(ctx.db),
    ]);
    return {
      ckan_datasets: figures.assets,
      active_allocations: figures.activeAllocations,
      next_auto_update: toIso(nextRun ?? now) as string,
      total_priority_score: figures.totalPriority,
      system_health: failing.length === 0 ? 'healthy' : 'degraded',
      assets_by_state: figures.assetsByState,
      nodes_by_status: figures.nodesByStatus,
      nodes_alive: figures.nodesByStatus.alive ?? 0,
      bytes_rescued: figures.bytesRescued,
      bytes_rescued_distinct: figures.bytesRescuedDistinct,
      ...toProofFields(proofs),
    };
  });
}
