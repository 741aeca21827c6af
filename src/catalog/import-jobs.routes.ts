import { Type } from '@sinclair/typebox';
import { actorOf, principalOf, type Guards } from '../http/auth.js';
import type { App, AppContext } from '../http/context.js';
import { bearerSecurity, errorResponses, Nullable } from '../http/schemas.js';
import { listImportJobs } from './import-jobs.repository.js';
import { ImportId, ImportJobView, ImportQuery, ImportRequest } from './import-jobs.schemas.js';
import { cancelImport, createImportJob, getImportJob, resumeImport, toImportJobView } from './import-jobs.service.js';

export function registerImportRoutes(app: App, ctx: AppContext, guards: Guards): void {
  app.post(
    '/imports',
    {
      onRequest: guards.admin,
      schema: {
        tags: ['imports'],
        summary: 'Start importing a catalog (CKAN, data.gov, DCAT data.json) in the background (admin)',
        security: bearerSecurity,
        body: ImportRequest,
        response: { 202: ImportJobView, ...errorResponses },
      },
    },
    async (request, reply) => {
      const job = await createImportJob(ctx.db, ctx.dialect, ctx.config, request.body, actorOf(principalOf(request)), ctx.clock.now());
      if (request.body.api_key !== undefined) ctx.imports.holdKey(job.id, request.body.api_key);
      // Started here at once when this instance has room; otherwise the reconciler starts it.
      const started = await ctx.imports.start(job.id);
      return reply.code(202).send(toImportJobView(started ?? job));
    },
  );

  app.get(
    '/imports',
    {
      onRequest: guards.admin,
      schema: {
        tags: ['imports'],
        summary: 'Catalog imports, newest first (admin)',
        security: bearerSecurity,
        querystring: ImportQuery,
        response: { 200: Type.Object({ items: Type.Array(ImportJobView), next_cursor: Nullable(Type.Integer()) }), ...errorResponses },
      },
    },
    async (request) => {
      const { state, cursor, limit } = request.query;
      const rows = await listImportJobs(ctx.db, { state, before: cursor, limit });
      return { items: rows.map(toImportJobView), next_cursor: rows.length === limit ? (rows.at(-1)?.id ?? null) : null };
    },
  );

  app.get(
    '/imports/:id',
    {
      onRequest: guards.admin,
      schema: {
        tags: ['imports'],
        summary: 'One catalog import: state, progress, counts, last error (admin)',
        security: bearerSecurity,
        params: ImportId,
        response: { 200: ImportJobView, ...errorResponses },
      },
    },
    async (request) => toImportJobView(await getImportJob(ctx.db, request.params.id)),
  );

  app.post(
    '/imports/:id/cancel',
    {
      onRequest: guards.admin,
      schema: {
        tags: ['imports'],
        summary: 'Stop a queued or running import; the pages written stay (admin)',
        security: bearerSecurity,
        params: ImportId,
        response: { 200: ImportJobView, ...errorResponses },
      },
    },
    async (request) => {
      const job = await cancelImport(ctx.db, request.params.id, actorOf(principalOf(request)), ctx.clock.now());
      ctx.imports.abandon(job.id);
      return toImportJobView(job);
    },
  );

  app.post(
    '/imports/:id/resume',
    {
      onRequest: guards.admin,
      schema: {
        tags: ['imports'],
        summary: 'Continue a failed or cancelled import after its last completed page (admin)',
        security: bearerSecurity,
        params: ImportId,
        response: { 202: ImportJobView, ...errorResponses },
      },
    },
    async (request, reply) => {
      const job = await resumeImport(ctx.db, ctx.dialect, request.params.id, actorOf(principalOf(request)), ctx.clock.now());
      const started = await ctx.imports.start(job.id);
      return reply.code(202).send(toImportJobView(started ?? job));
    },
  );
}
