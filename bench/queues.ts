import { performance } from 'node:perf_hooks';
import { setTimeout as sleep } from 'node:timers/promises';
import { Logger, makeWorkerUtils, run } from 'graphile-worker';
import pg from 'pg';
import PgBoss from 'pg-boss';
import type { BenchDatabase } from './databases.js';
import { MeasuredWindow, runLoops, type LoopResult, type WindowOptions } from './loops.js';
import type { QueueBacklog } from './options.js';
import { integer } from './report.js';
import { RepeatCounter, type MeasuredRow } from './rows.js';

/**
 * The two PostgreSQL job queues people would reach for instead, claiming one job per call at the
 * same concurrency as the Dispatcher clients, on the same PostgreSQL: pg-boss 10.4 (`fetch` with
 * batchSize 1, then `complete`) and graphile-worker 0.17 (`run` with `concurrency`, a no-op task;
 * its local queue and completion batching are off by default, so each worker takes one job per
 * get_job call). Each run gets a fresh schema in the bench database, dropped afterwards.
 *
 * Two backlogs, because pg-boss 10's fetch sorts every pending job (its index `job_i5` is on
 * (name, start_after), not in fetch order: 27 ms per fetch at 20,000 pending, measured):
 * `deep` enqueues --queue-jobs beforehand, like Dispatcher's catalogue; `shallow` keeps between
 * --queue-shallow and twice that pending, topped up every 50 ms from this process.
 */
export interface QueueRunOptions {
  loops: number;
  backlog: QueueBacklog;
  /** --queue-jobs for the deep backlog, --queue-shallow for the shallow one. */
  jobs: number;
  /** PostgreSQL pool size: loops + 2 (graphile-worker's advice), capped by --queue-pool. */
  poolSize: number;
  window: WindowOptions;
  log: (line: string) => void;
}

/** What the backlog handling needs from a queue library. */
interface QueueDriver {
  /** Enqueues jobs numbered `from`..`to - 1`. */
  insert(from: number, to: number): Promise<void>;
  /** Jobs waiting to be taken. */
  pending(): Promise<number>;
  analyze(): Promise<void>;
}

const QUEUE = 'bench';
const ENQUEUE_CHUNK = 10_000;
const TOP_UP_EVERY_MS = 50;

async function query<T extends pg.QueryResultRow>(database: BenchDatabase, text: string): Promise<T[]> {
  const client = new pg.Client({ connectionString: database.connectionString });
  await client.connect();
  try {
    return (await client.query<T>(text)).rows;
  } finally {
    await client.end();
  }
}

const subjectFor = (call: string, options: QueueRunOptions) =>
  `${call}, ${options.backlog === 'deep' ? `${integer(options.jobs)} queued` : `${integer(options.jobs)}–${integer(2 * options.jobs)} queued`}`;

/** Fills the backlog, runs `work`, and for a shallow backlog keeps it topped up meanwhile; returns the jobs enqueued. */
async function withBacklog(driver: QueueDriver, options: QueueRunOptions, work: () => Promise<LoopResult>): Promise<{ result: LoopResult; enqueued: number }> {
  let enqueued = 0;
  const enqueue = async (count: number) => {
    for (const end = enqueued + count; enqueued < end;) {
      const to = Math.min(end, enqueued + ENQUEUE_CHUNK);
      await driver.insert(enqueued, to);
      enqueued = to;
    }
  };
  const started = performance.now();
  await enqueue(options.backlog === 'deep' ? options.jobs : 2 * options.jobs);
  const seconds = (performance.now() - started) / 1000;
  options.log(`    enqueued ${integer(enqueued)} jobs in ${seconds.toFixed(1)} s (${integer(enqueued / seconds)} jobs/s)`);
  await driver.analyze();
  let topping = options.backlog === 'shallow';
  const topUp = (async () => {
    while (topping) {
      if ((await driver.pending()) < options.jobs) await enqueue(options.jobs);
      await sleep(TOP_UP_EVERY_MS);
    }
  })();
  try {
    return { result: await work(), enqueued };
  } finally {
    topping = false;
    await topUp;
  }
}

export async function benchPgBoss(database: BenchDatabase, options: QueueRunOptions): Promise<MeasuredRow> {
  const schema = `pgboss_bench_${options.backlog}_${options.loops}`;
  // No maintenance, no cron: the bench measures fetching, and nothing else touches the jobs.
  const boss = new PgBoss({ connectionString: database.connectionString, schema, max: options.poolSize, supervise: false, schedule: false, migrate: true });
  boss.on('error', (error: Error) => options.log(`    pg-boss error: ${error.message}`));
  const repeats = new RepeatCounter();
  let result: LoopResult;
  try {
    await boss.start();
    await boss.createQueue(QUEUE);
    const driver: QueueDriver = {
      insert: (from, to) => boss.insert(Array.from({ length: to - from }, (_, index) => ({ name: QUEUE, data: { n: from + index } }))),
      pending: () => boss.getQueueSize(QUEUE),
      analyze: async () => void (await query(database, `analyze ${schema}.job`)),
    };
    ({ result } = await withBacklog(driver, options, () =>
      runLoops(
        Array.from({ length: options.loops }, () => async () => {
          const [job] = await boss.fetch(QUEUE, { batchSize: 1 });
          if (!job) return { ok: false, status: 'empty', items: 0, errorBody: 'fetch returned no job' };
          repeats.add(job.id);
          await boss.complete(QUEUE, job.id);
          return { ok: true, status: 'ok', items: 1 };
        }),
        options.window,
      ),
    ));
  } finally {
    await boss.stop({ graceful: false, wait: true, timeout: 5_000 });
  }
  const [completed] = await query<{ n: string }>(database, `select count(*) as n from ${schema}.job where name = '${QUEUE}' and state = 'completed'`);
  await query(database, `drop schema ${schema} cascade`);
  return {
    suite: 'pg-boss',
    subject: subjectFor('fetch(1) + complete', options),
    database: 'postgres',
    connections: String(options.poolSize),
    result,
    check: { duplicates: repeats.repeats, handedOut: result.itemsTotal, stored: Number(completed?.n ?? 0) },
  };
}

/** graphile-worker would print a line per job; errors are all the bench wants to see. */
const quietLogger = new Logger(() => (level, message) => {
  if (String(level) === 'error') console.error(`    graphile-worker: ${message}`);
});

/**
 * graphile-worker emits job:complete as it sends the completion (it does not wait for it), so
 * the last writes may land after `stop()` resolves: wait until the count stops moving.
 */
async function settledCount(count: () => Promise<number>): Promise<number> {
  let last = await count();
  for (let attempt = 0; attempt < 25; attempt += 1) {
    await sleep(200);
    const now = await count();
    if (now === last) return now;
    last = now;
  }
  return last;
}

export async function benchGraphileWorker(database: BenchDatabase, options: QueueRunOptions): Promise<MeasuredRow> {
  const schema = `gw_bench_${options.backlog}_${options.loops}`;
  const shared = { connectionString: database.connectionString, schema, logger: quietLogger };
  const utils = await makeWorkerUtils({ ...shared, maxPoolSize: 2 });
  const counter = new pg.Client({ connectionString: database.connectionString });
  await counter.connect();
  const count = async (where: string) =>
    Number((await counter.query<{ n: string }>(`select count(*) as n from ${schema}._private_jobs ${where}`)).rows[0]?.n ?? 0);
  const repeats = new RepeatCounter();
  try {
    await utils.migrate();
    const driver: QueueDriver = {
      insert: async (from, to) =>
        void (await utils.addJobs(Array.from({ length: to - from }, (_, index) => ({ identifier: QUEUE, payload: { n: from + index } })))),
      pending: () => count('where locked_at is null'),
      analyze: async () => void (await counter.query(`analyze ${schema}._private_jobs`)),
    };
    const { result, enqueued } = await withBacklog(driver, options, async () => {
      // graphile-worker pulls jobs itself: completions are counted as it reports them, so
      // there is no per-call latency to report.
      const window = new MeasuredWindow(options.window);
      const runner = await run({
        ...shared,
        concurrency: options.loops,
        maxPoolSize: options.poolSize,
        noHandleSignals: true,
        crontab: '',
        taskList: { [QUEUE]: async () => undefined },
      });
      runner.events.on('job:complete', ({ job, error }) => {
        repeats.add(String(job.id));
        window.record(
          undefined,
          performance.now(),
          error ? { ok: false, status: 'error', items: 0, errorBody: String(error) } : { ok: true, status: 'ok', items: 1 },
        );
      });
      try {
        await window.untilEnd();
      } finally {
        await runner.stop();
      }
      return window.finish(options.loops);
    });
    // A completed job is deleted: what left the table is what was done. A completion still
    // waiting for a connection when stop() ends the pool is dropped: its job stays locked (and
    // would run again after graphile-worker's lock timeout), so it counts as handed out.
    const left = await settledCount(() => count(''));
    const lockedLeft = await count('where locked_at is not null');
    if (lockedLeft > 0) options.log(`    ${lockedLeft} job(s) still locked after stop(): completion sent but not written before the pool closed`);
    return {
      suite: 'graphile-worker',
      subject: subjectFor('run({ concurrency }), no-op task', options),
      database: 'postgres',
      connections: String(options.poolSize),
      result,
      check: { duplicates: repeats.repeats, handedOut: result.itemsTotal, stored: enqueued - left + lockedLeft },
    };
  } finally {
    await utils.release();
    await counter.query(`drop schema if exists ${schema} cascade`);
    await counter.end();
  }
}
