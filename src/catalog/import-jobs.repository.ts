import type { Db } from '../db/database.js';
import { claimRow, endClaim, findDueIds, releaseClaim, renewClaim, updateHeld, type DueWork } from '../db/due-work.js';
import type { PageReport } from './catalog.service.js';
import type { ImportKind, ImportRow, ImportState } from './import-jobs.table.js';

// Every write by the instance running a job is conditional on still holding it: a job cancelled,
// or taken over after its lease lapsed, answers "no row" and its old runner stops.

export async function insertImportJob(db: Db, job: { kind: ImportKind; source: string; params: string; createdBy: string }, now: number): Promise<ImportRow> {
  return db
    .insertInto('imports')
    .values({ kind: job.kind, source: job.source, params: job.params, state: 'queued', created_by: job.createdBy, created_at: now })
    .returningAll()
    .executeTakeFirstOrThrow();
}

export async function findImportJob(db: Db, id: number): Promise<ImportRow | undefined> {
  return db.selectFrom('imports').selectAll().where('id', '=', id).executeTakeFirst();
}

export async function findActiveImportJob(db: Db, source: string): Promise<ImportRow | undefined> {
  return db.selectFrom('imports').selectAll().where('source', '=', source).where('state', 'in', ['queued', 'running']).executeTakeFirst();
}

/** Newest first. */
export async function listImportJobs(db: Db, filter: { state?: ImportState; before?: number; limit: number }): Promise<ImportRow[]> {
  let query = db.selectFrom('imports').selectAll().orderBy('id', 'desc').limit(filter.limit);
  if (filter.state !== undefined) query = query.where('state', '=', filter.state);
  if (filter.before !== undefined) query = query.where('id', '<', filter.before);
  return query.execute();
}

/** A queued job is due at once; a running one whose lease lapsed (its instance died) is due again, to resume. */
const DUE_IMPORTS: DueWork<'imports'> = {
  table: 'imports',
  waiting: 'queued',
  claimed: 'running',
  leaseUntil: 'lease_expires_at',
  owner: 'lease_owner',
  orderBy: 'id',
};

/** Queued jobs and running ones whose lease lapsed (their instance died), oldest first. */
export async function findDueImportJobIds(db: Db, now: number, limit: number): Promise<number[]> {
  return findDueIds(db, DUE_IMPORTS, now, limit);
}

/**
 * Takes a job for one instance: one conditional UPDATE, so of several instances exactly one gets
 * it. A queued job, or a running one whose lease lapsed (its instance died), can be taken.
 */
export async function claimImportJob(db: Db, id: number, owner: string, leaseMs: number, now: number): Promise<ImportRow | undefined> {
  return claimRow(db, DUE_IMPORTS, id, {
    now,
    leaseMs,
    owner,
    set: (eb) => ({ started_at: eb.fn.coalesce('started_at', eb.val(now)), progress_at: now }),
  });
}

/** Adds one page's counts and moves the resume point; false when the job is no longer this owner's. */
export async function recordImportPage(db: Db, id: number, owner: string, page: PageReport, leaseMs: number, now: number): Promise<boolean> {
  return renewClaim(
    db,
    DUE_IMPORTS,
    { id, owner },
    {
      now,
      leaseMs,
      set: (eb) => ({
        pages_done: eb('pages_done', '+', 1),
        datasets_seen: eb('datasets_seen', '+', page.datasets),
        datasets_total: page.total,
        resources_seen: eb('resources_seen', '+', page.resources),
        assets_created: eb('assets_created', '+', page.new),
        assets_updated: eb('assets_updated', '+', page.updated),
        assets_unchanged: eb('assets_unchanged', '+', page.unchanged),
        duplicates: eb('duplicates', '+', page.duplicates),
        cursor: page.next,
        progress_at: now,
      }),
    },
  );
}

/** Every page read and the source swept; false when the job is no longer this owner's. */
export async function recordPagesFinished(db: Db, id: number, owner: string, removed: number, now: number): Promise<boolean> {
  return updateHeld(db, DUE_IMPORTS, { id, owner }, { removed, cursor: null, pages_finished_at: now, progress_at: now });
}

export async function renewImportLease(db: Db, id: number, owner: string, leaseMs: number, now: number): Promise<boolean> {
  return renewClaim(db, DUE_IMPORTS, { id, owner }, { now, leaseMs, set: { progress_at: now } });
}

export async function finishImportJob(db: Db, id: number, owner: string, sizes: object | null, now: number): Promise<ImportRow | undefined> {
  const set = { sizes: sizes === null ? null : JSON.stringify(sizes), finished_at: now, progress_at: now };
  return (await endClaim(db, DUE_IMPORTS, { id, owner }, 'succeeded', set))[0];
}

export async function failImportJob(db: Db, id: number, owner: string, error: string, now: number): Promise<ImportRow | undefined> {
  const rows = await endClaim(db, DUE_IMPORTS, { id, owner }, 'failed', (eb) => ({ last_error: error, errors: eb('errors', '+', 1), finished_at: now }));
  return rows[0];
}

/** Gives a job back (this instance is stopping): queued again, to resume from its cursor anywhere. */
export async function releaseImportJob(db: Db, id: number, owner: string): Promise<boolean> {
  return releaseClaim(db, DUE_IMPORTS, { id, owner });
}

/** Ends a queued or running job; its runner, wherever it is, stops at its next write. */
export async function cancelImportJob(db: Db, id: number, now: number): Promise<ImportRow | undefined> {
  return db
    .updateTable('imports')
    .set({ state: 'cancelled', finished_at: now, lease_owner: null, lease_expires_at: null })
    .where('id', '=', id)
    .where('state', 'in', ['queued', 'running'])
    .returningAll()
    .executeTakeFirst();
}

/** Queues a failed or cancelled job again, keeping its cursor and counts: it resumes where it stopped. */
export async function requeueImportJob(db: Db, id: number): Promise<ImportRow | undefined> {
  return db
    .updateTable('imports')
    .set({ state: 'queued', finished_at: null, lease_owner: null, lease_expires_at: null })
    .where('id', '=', id)
    .where('state', 'in', ['failed', 'cancelled'])
    .returningAll()
    .executeTakeFirst();
}
