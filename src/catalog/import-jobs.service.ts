import { toIso } from '../clock.js';
import type { Config } from '../config.js';
import type { Db } from '../db/database.js';
import type { Dialect } from '../db/dialect.js';
import { AppError } from '../errors.js';
import { appendEvents } from '../events/events.repository.js';
import type { ImportPlan } from './catalog-import.js';
import { planCkanImport } from './ckan.import.js';
import { planDatagovImport } from './datagov.import.js';
import { planDcatImport } from './dcat.import.js';
import { cancelImportJob, findActiveImportJob, findImportJob, insertImportJob, requeueImportJob } from './import-jobs.repository.js';
import { checkImportRequest, type ImportJobView, type ImportRequest } from './import-jobs.schemas.js';
import type { ImportRow } from './import-jobs.table.js';

/** The same planners as the CLI, from the request's JSON names. Throws an Error on options that cannot work. */
export function planImport(config: Config, request: ImportRequest): ImportPlan {
  if (request.source === 'ckan') return planCkanImport(config, request.url as string, { q: request.q, fq: request.fq, org: request.org, rows: request.rows });
  if (request.source === 'datagov') {
    return planDatagovImport(config, { q: request.q, org: request.org, perPage: request.per_page, apiKey: request.api_key, url: request.url });
  }
  return planDcatImport(request.url as string);
}

/** The request checked beyond its schema and planned, or a 422 saying what is wrong. */
export function validateImportRequest(config: Config, request: ImportRequest): ImportPlan {
  try {
    checkImportRequest(request);
    return planImport(config, request);
  } catch (error) {
    throw new AppError('VALIDATION_ERROR', `Invalid import: ${(error as Error).message}.`);
  }
}

async function refuseSecondRun(db: Db, source: string): Promise<never> {
  const active = await findActiveImportJob(db, source);
  const which = active ? `import ${active.id} is ${active.state}` : 'another import is queued or running';
  throw new AppError(
    'IMPORT_ALREADY_RUNNING',
    `${which} for ${source}; one import per source runs at a time. Wait for it, or cancel it (POST /imports/${active?.id ?? '{id}'}/cancel).`,
    {
      import_id: active?.id ?? null,
    },
  );
}

/**
 * Queues an import of one source. The database's unique index on active jobs per source makes a
 * second one a 409, whichever instance it reaches.
 */
export async function createImportJob(db: Db, dialect: Dialect, config: Config, request: ImportRequest, actor: string, now: number): Promise<ImportRow> {
  const plan = validateImportRequest(config, request);
  try {
    return await db.transaction().execute(async (trx) => {
      // A portal's API key is never written down: the instance that took the request holds it in
      // memory (ImportRunner.holdKey); an instance resuming the job elsewhere uses DATAGOV_API_KEY.
      const { api_key: apiKey, ...kept } = request;
      const params = apiKey === undefined ? kept : { ...kept, api_key_given: true };
      const row = await insertImportJob(trx, { kind: request.source, source: plan.source, params: JSON.stringify(params), createdBy: actor }, now);
      await appendEvents(trx, now, [
        { actor, kind: 'import.queued', subjectType: 'import', subjectId: row.id, data: { source: request.source, url: plan.source } },
      ]);
      return row;
    });
  } catch (error) {
    if (dialect.isUniqueViolation(error)) return refuseSecondRun(db, plan.source);
    throw error;
  }
}

export async function getImportJob(db: Db, id: number): Promise<ImportRow> {
  const row = await findImportJob(db, id);
  if (!row) throw new AppError('IMPORT_NOT_FOUND', `No import ${id}.`);
  return row;
}

/** Ends a queued or running job; a finished one is a 409. */
export async function cancelImport(db: Db, id: number, actor: string, now: number): Promise<ImportRow> {
  const row = await db.transaction().execute(async (trx) => {
    const cancelled = await cancelImportJob(trx, id, now);
    if (cancelled) await appendEvents(trx, now, [{ actor, kind: 'import.cancelled', subjectType: 'import', subjectId: id }]);
    return cancelled;
  });
  if (row) return row;
  const existing = await getImportJob(db, id);
  throw new AppError('IMPORT_STATE_CONFLICT', `Import ${id} is already ${existing.state}; only a queued or running import can be cancelled.`);
}

/** Queues a failed or cancelled job again; it continues after its last completed page. */
export async function resumeImport(db: Db, dialect: Dialect, id: number, actor: string, now: number): Promise<ImportRow> {
  let row: ImportRow | undefined;
  try {
    row = await db.transaction().execute(async (trx) => {
      const queued = await requeueImportJob(trx, id);
      if (queued)
        await appendEvents(trx, now, [{ actor, kind: 'import.resumed', subjectType: 'import', subjectId: id, data: { pages_done: queued.pages_done } }]);
      return queued;
    });
  } catch (error) {
    if (dialect.isUniqueViolation(error)) return refuseSecondRun(db, (await getImportJob(db, id)).source);
    throw error;
  }
  if (row) return row;
  const existing = await getImportJob(db, id);
  throw new AppError('IMPORT_STATE_CONFLICT', `Import ${id} is ${existing.state}; only a failed or cancelled import can be resumed.`);
}

export function toImportJobView(row: ImportRow): ImportJobView {
  const params = JSON.parse(row.params) as ImportRequest & { api_key_given?: boolean };
  const { source: _kind, url: _url, api_key: apiKey, api_key_given: apiKeyGiven, ...options } = params;
  const seconds = row.started_at === null || row.progress_at === null ? 0 : (row.progress_at - row.started_at) / 1000;
  return {
    id: row.id,
    source: row.kind,
    url: row.source,
    options: { ...options, ...(apiKey === undefined && apiKeyGiven !== true ? {} : { api_key_set: true }) },
    state: row.state,
    created_by: row.created_by,
    created_at: toIso(row.created_at),
    started_at: toIso(row.started_at),
    finished_at: toIso(row.finished_at),
    updated_at: toIso(row.progress_at),
    attempts: row.attempts,
    pages_done: row.pages_done,
    datasets_seen: row.datasets_seen,
    datasets_total: row.datasets_total,
    resources_seen: row.resources_seen,
    assets_created: row.assets_created,
    assets_updated: row.assets_updated,
    assets_unchanged: row.assets_unchanged,
    duplicates: row.duplicates,
    removed_from_source: row.removed,
    sizes: row.sizes === null ? null : JSON.parse(row.sizes),
    resources_per_second: seconds > 0 ? Math.round((row.resources_seen / seconds) * 10) / 10 : null,
    errors: row.errors,
    last_error: row.last_error,
  };
}
