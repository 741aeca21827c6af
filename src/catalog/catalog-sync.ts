import type { Config } from '../config.js';
import type { Db } from '../db/database.js';
import type { Dialect } from '../db/dialect.js';
import { AppError } from '../errors.js';
import type { ImportRunner } from './import-runner.js';
import { createImportJob } from './import-jobs.service.js';

export interface SyncPass {
  /** Jobs queued by this pass (and started here when this instance had room). */
  queued: number[];
  /** Sources skipped because an import of them was still queued or running. */
  busy: string[];
}

/**
 * One periodic re-sync pass (CATALOG_SYNC_INTERVAL): queues an import of every configured source
 * that is not being imported already. A source that cannot be queued does not stop the others; the
 * pass then fails, naming them, so the loop records the error.
 */
export async function syncCatalogs(deps: { db: Db; dialect: Dialect; config: Config; imports: ImportRunner }, now: number): Promise<SyncPass> {
  const pass: SyncPass = { queued: [], busy: [] };
  const problems: string[] = [];
  for (const request of deps.config.catalogSyncSources ?? []) {
    try {
      pass.queued.push((await createImportJob(deps.db, deps.dialect, deps.config, request, 'system', now)).id);
    } catch (error) {
      if (error instanceof AppError && error.code === 'IMPORT_ALREADY_RUNNING') pass.busy.push(request.url ?? request.source);
      else problems.push(`${request.source} ${request.url ?? ''}: ${(error as Error).message}`);
    }
  }
  for (const id of pass.queued) await deps.imports.start(id);
  if (problems.length > 0) throw new Error(`catalog re-sync could not queue ${problems.join('; ')}`);
  return pass;
}
