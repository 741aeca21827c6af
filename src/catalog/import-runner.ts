import crypto from 'node:crypto';
import type { Logger } from 'pino';
import type { Clock } from '../clock.js';
import type { Config } from '../config.js';
import type { Db } from '../db/database.js';
import { appendEvents } from '../events/events.repository.js';
import { createJsonFetcher, sleepUnlessAborted } from './catalog-http.js';
import { fetchPolicyFrom, importOptionsFrom, runSizeDiscovery, type ImportIo } from './catalog-import.js';
import { importCatalog, type ImportOptions } from './catalog.service.js';
import type { CatalogPage } from './catalog.types.js';
import type { DiscoverySummary } from './size-discovery.js';
import {
  claimImportJob,
  failImportJob,
  finishImportJob,
  findDueImportJobIds,
  recordImportPage,
  recordPagesFinished,
  releaseImportJob,
  renewImportLease,
} from './import-jobs.repository.js';
import type { ImportRequest } from './import-jobs.schemas.js';
import { planImport } from './import-jobs.service.js';
import type { ImportRow } from './import-jobs.table.js';

/**
 * How long a claim on a job holds without a renewal. A running job renews it with every page and
 * every third of it besides (a page may wait minutes on a rate-limited portal), so only a dead
 * instance's job outlives it; another instance then resumes it after its last completed page.
 */
export const IMPORT_LEASE_MS = 5 * 60_000;
/** Imports one instance runs at once: each is paced per portal, but they share its database pool. */
export const MAX_IMPORTS_PER_INSTANCE = 4;

/** The job was cancelled, or another instance took it over: stop without writing anything more. */
class JobLost extends Error {}
/** This instance is shutting down: give the job back for another to resume. */
class Stopping extends Error {}

export interface ImportRunner {
  /** Claims the job and runs it here in the background; the claimed row, or undefined when not due or at capacity. */
  start(id: number): Promise<ImportRow | undefined>;
  /** A reconciler pass: starts queued jobs and running ones whose lease lapsed, up to capacity. Returns their ids. */
  runDue(now: number): Promise<number[]>;
  /** Stops the job if it runs here (it was just cancelled). */
  abandon(id: number): void;
  /** Keeps a job's portal API key in this instance's memory (it is never stored) until the job ends here. */
  holdKey(id: number, apiKey: string): void;
  /** Resolves once no job runs here: tests await it instead of sleeping. */
  idle(): Promise<void>;
  /** Stops claiming, gives running jobs back (queued, with their resume point) and waits for them. */
  stop(): Promise<void>;
}

async function* noPages(): AsyncGenerator<CatalogPage> {}

export function createImportRunner(deps: { db: Db; config: Config; clock: Clock; logger: Logger }): ImportRunner {
  const { db, config, clock, logger } = deps;
  const owner = crypto.randomUUID();
  const running = new Map<number, { controller: AbortController; done: Promise<void> }>();
  const keys = new Map<number, string>();
  let claiming = 0;
  let stopping = false;

  /** Reads the pages after the job's cursor, each written with its progress in one transaction, then sweeps. */
  async function readPages(job: ImportRow, request: ImportRequest, signal: AbortSignal): Promise<void> {
    const plan = planImport(config, request);
    // Progress is the job's row; what the CLI would print as a notice (retries, page caps) is logged.
    const display = {
      pages: () => undefined,
      sizes: () => undefined,
      finish: () => undefined,
      notice: (line: string) => logger.info({ import: job.id, source: job.source }, line),
    };
    const io: ImportIo = { now: () => clock.now(), elapsedMs: () => performance.now(), sleep: sleepUnlessAborted(signal), display };
    const fetcher = createJsonFetcher({ ...fetchPolicyFrom(config, io), signal });
    // A cursor of null after some pages means every page was read: only the sweep is left.
    const pages = job.pages_done > 0 && job.cursor === null ? noPages() : plan.readPages(fetcher, job.cursor ?? undefined);
    const options: ImportOptions = {
      ...importOptionsFrom(config, plan, job.created_by, io),
      runStartedAt: job.started_at ?? clock.now(),
      eventData: { import_id: job.id },
      afterPage: async (trx, page) => {
        if (!(await recordImportPage(trx, job.id, owner, page, IMPORT_LEASE_MS, clock.now()))) throw new JobLost();
      },
      afterRun: async (trx, summary) => {
        if (!(await recordPagesFinished(trx, job.id, owner, summary.removed, clock.now()))) throw new JobLost();
      },
    };
    await importCatalog(db, pages, options, clock.now());
  }

  async function discover(job: ImportRow, signal: AbortSignal): Promise<DiscoverySummary> {
    return runSizeDiscovery(db, config, job.source, job.created_by, clock.now(), () => {
      if (signal.aborted) throw signal.reason;
    });
  }

  async function settle(job: ImportRow, controller: AbortController, work: Promise<DiscoverySummary | null>): Promise<void> {
    try {
      const sizes = await work;
      await db.transaction().execute(async (trx) => {
        const row = await finishImportJob(trx, job.id, owner, sizes, clock.now());
        if (!row) throw new JobLost();
        const data = { pages_done: row.pages_done, resources_seen: row.resources_seen, removed: row.removed };
        await appendEvents(trx, clock.now(), [{ actor: 'system', kind: 'import.succeeded', subjectType: 'import', subjectId: job.id, data }]);
      });
      logger.info({ import: job.id, source: job.source }, 'import succeeded');
    } catch (caught) {
      const reason = controller.signal.aborted ? controller.signal.reason : caught;
      if (reason instanceof JobLost || caught instanceof JobLost) {
        logger.info({ import: job.id }, 'import cancelled or taken over by another instance; stopped here');
      } else if (reason instanceof Stopping) {
        await releaseImportJob(db, job.id, owner);
        logger.info({ import: job.id }, 'import given back for another instance to resume');
      } else {
        const detail = caught instanceof Error ? caught.message : String(caught);
        logger.warn({ import: job.id, source: job.source, err: caught }, 'import failed');
        await db.transaction().execute(async (trx) => {
          if (!(await failImportJob(trx, job.id, owner, detail, clock.now()))) return;
          await appendEvents(trx, clock.now(), [{ actor: 'system', kind: 'import.failed', subjectType: 'import', subjectId: job.id, data: { detail } }]);
        });
      }
    }
  }

  function run(job: ImportRow): void {
    const controller = new AbortController();
    const stored = JSON.parse(job.params) as ImportRequest & { api_key_given?: boolean };
    const { api_key_given: _given, ...request } = { ...stored, ...(keys.has(job.id) ? { api_key: keys.get(job.id) } : {}) };
    const renew = async () => {
      const held = await renewImportLease(db, job.id, owner, IMPORT_LEASE_MS, clock.now()).catch(() => true);
      if (!held) controller.abort(new JobLost());
    };
    const heartbeat = setInterval(() => void renew(), IMPORT_LEASE_MS / 3);
    heartbeat.unref();
    const work = (async () => {
      if (job.pages_finished_at === null) await readPages(job, request, controller.signal);
      return request.discover_sizes ? discover(job, controller.signal) : null;
    })();
    const done = settle(job, controller, work)
      .catch((error: unknown) => logger.error({ import: job.id, err: error }, 'import bookkeeping failed; its lease will lapse and it will be resumed'))
      .finally(() => {
        clearInterval(heartbeat);
        running.delete(job.id);
        keys.delete(job.id);
      });
    running.set(job.id, { controller, done });
  }

  async function start(id: number): Promise<ImportRow | undefined> {
    if (stopping || running.has(id) || running.size + claiming >= MAX_IMPORTS_PER_INSTANCE) return undefined;
    claiming += 1;
    let job: ImportRow | undefined;
    try {
      job = await claimImportJob(db, id, owner, IMPORT_LEASE_MS, clock.now());
    } finally {
      claiming -= 1;
    }
    if (!job) return undefined;
    if (stopping) {
      await releaseImportJob(db, id, owner);
      return undefined;
    }
    logger.info({ import: id, source: job.source, attempt: job.attempts, resume_from: job.cursor }, 'import started');
    run(job);
    return job;
  }

  return {
    start,
    async runDue(now) {
      const free = MAX_IMPORTS_PER_INSTANCE - running.size - claiming;
      if (stopping || free <= 0) return [];
      const started: number[] = [];
      for (const id of await findDueImportJobIds(db, now, free)) if (await start(id)) started.push(id);
      return started;
    },
    holdKey(id, apiKey) {
      keys.set(id, apiKey);
    },
    abandon(id) {
      running.get(id)?.controller.abort(new JobLost());
    },
    async idle() {
      while (running.size > 0) await Promise.all([...running.values()].map((job) => job.done));
    },
    async stop() {
      stopping = true;
      for (const job of running.values()) job.controller.abort(new Stopping());
      while (running.size > 0) await Promise.all([...running.values()].map((job) => job.done));
    },
  };
}
