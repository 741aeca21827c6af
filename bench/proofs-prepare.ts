import path from 'node:path';
import { performance } from 'node:perf_hooks';
import { setTimeout as sleep } from 'node:timers/promises';
import { sql } from 'kysely';
import { createSafeFetch } from '../src/agent/safe-fetch.js';
import { proofDepsFrom } from '../src/audits/proof-deps.js';
import { runProofs } from '../src/audits/proof.service.js';
import { SPOT_CHECK_BYTES } from '../src/audits/source-ranges.js';
import { loadConfig } from '../src/config.js';
import type { Db } from '../src/db/database.js';
import type { BenchNode } from './api.js';
import { withHandle, type BenchDatabase } from './databases.js';
import type { SuiteContext } from './http-suites.js';
import { startCpuWindow, type CpuUsage } from './procfs.js';
import type { Shape } from './proofs-content.js';
import { startHolders, type HolderTotals } from './proofs-holders.js';
import { printProfiles, profileDirectoryFor } from './proofs-profile.js';
import { startServer, type ChildServer } from './server.js';

/** The prepare measure calls the pass back to back, each as a pass of this length would be budgeted. */
const PREPARE_PASS_MS = 1000;
/** High on purpose: 1,000 per pass, so that the cap never binds and the pass's own speed is measured. */
const PREPARE_AUDITS_PER_MINUTE = 60_000;
const SPOT_CHECKS = 3;

/** The environment both variants' servers get (beside `serve`'s bench defaults, bench/server.ts): only VERIFY_SPOT_CHECKS differs. */
export function spotCheckEnv(database: BenchDatabase, spotChecks: number): Record<string, string> {
  // The spot checks read the bench's loopback file server, which the control plane refuses by default.
  return { ...database.serverEnv, VERIFY_SPOT_CHECKS: String(spotChecks), SOURCE_ALLOW_PRIVATE_NETWORKS: 'true' };
}

export interface PrepareRun {
  /** Spot checks queued by the last VERIFY_SPOT_CHECKS=3 round when the passes began. */
  queued: number;
  prepared: number;
  passes: number;
  seconds: number;
  perSecond: number;
  /** Ranges read from the file server (SPOT_CHECKS per spot check) and their bytes. */
  rangeReads: number;
  bytesRead: number;
  /** Spot checks the pass gave up on (the source could not be read): must be 0. */
  cancelled: number;
  /** Whether the queue ran out before the measured time did. */
  drained: boolean;
  /** loadGeneratorPercent is the pass itself (it runs in the bench process); serverPercent is the file server. */
  cpu: CpuUsage;
  auditsPerMinute: number;
  passMs: number;
}

/**
 * `runProofs` called in this process on the database of the last VERIFY_SPOT_CHECKS=3 round, back
 * to back, with the server's settings but AUDITS_PER_MINUTE high: it claims queued spot checks and
 * reads three 64 KiB ranges of the file server for each (`Range` requests through the control
 * plane's guarded fetch), for `--warmup` unmeasured then `--duration` measured seconds, or until
 * nothing is queued.
 */
export async function prepareSpotChecks(context: SuiteContext, database: BenchDatabase, files: ChildServer): Promise<PrepareRun> {
  const { options, log } = context;
  const config = loadConfig({
    VERIFY_SPOT_CHECKS: String(SPOT_CHECKS),
    SOURCE_ALLOW_PRIVATE_NETWORKS: 'true',
    AUDITS_PER_MINUTE: String(PREPARE_AUDITS_PER_MINUTE),
  });
  const deps = proofDepsFrom(config, createSafeFetch({ allowPrivate: true, userAgent: 'dispatcher (copy audits)' }));
  return withHandle(database, async (handle) => {
    const pass = async () => (await runProofs(handle.db, handle.dialect, deps, PREPARE_PASS_MS, Date.now())).prepared;
    for (const warmupEnds = performance.now() + options.warmupSeconds * 1000; performance.now() < warmupEnds;) if ((await pass()) === 0) break;
    const queued = await countSpotChecks(handle.db, 'queued');
    const stopCpu = startCpuWindow([files.pid], database.postgresDatabase);
    const started = performance.now();
    let [prepared, passes, drained] = [0, 0, false];
    while (performance.now() - started < options.durationSeconds * 1000) {
      const count = await pass();
      passes += 1;
      prepared += count;
      if (count === 0) {
        drained = true;
        break;
      }
    }
    const seconds = (performance.now() - started) / 1000;
    const cpu = stopCpu();
    const run: PrepareRun = {
      queued,
      prepared,
      passes,
      seconds,
      perSecond: prepared / seconds,
      rangeReads: prepared * SPOT_CHECKS,
      bytesRead: prepared * SPOT_CHECKS * SPOT_CHECK_BYTES,
      cancelled: await countSpotChecks(handle.db, 'cancelled'),
      drained,
      cpu,
      auditsPerMinute: PREPARE_AUDITS_PER_MINUTE,
      passMs: PREPARE_PASS_MS,
    };
    log(
      `  prepare: ${Math.round(run.perSecond)} spot checks/s (${prepared} in ${seconds.toFixed(1)} s, ${passes} passes${drained ? ', queue drained' : ''}), ` +
        `CPU pass ${cpu.loadGeneratorPercent}% / file server ${cpu.serverPercent}% / postgres ${cpu.postgresPercent}% / machine ${cpu.machinePercent}%, cancelled ${run.cancelled}`,
    );
    return run;
  });
}

async function countSpotChecks(db: Db, state: 'queued' | 'cancelled'): Promise<number> {
  const { rows } = await sql<{ count: number }>`select count(*) as count from audits where kind = 'spot_check' and state = ${state}`.execute(db);
  return Number(rows[0]?.count ?? 0);
}

export interface AnswerRun {
  /** Spot checks open (prepared) when the holders started. */
  open: number;
  /** Everything the holders did, the few seconds stop() waited included. */
  holders: HolderTotals;
  /** Answers judged (200) until the holders ran out of audits or the measured time was up. */
  answered: number;
  seconds: number;
  /** Answers judged (200) per second. */
  perSecond: number;
  drained: boolean;
  cpu: CpuUsage;
  /** The CPU window: from the holders' start until they were stopped. */
  cpuSeconds: number;
  serverRssMb: number;
  /** Copies that count after the answers: each passed spot check makes one count. */
  counted: number;
}

/**
 * The holders answering the prepared spot checks through the built server (VERIFY_SPOT_CHECKS=3,
 * as in the rounds): each heartbeats, answers every audit listed with sha256(nonce ‖ range) of its
 * copy, and stops when a heartbeat lists nothing; at most `--duration` seconds.
 */
export async function answerSpotChecks(
  context: SuiteContext,
  database: BenchDatabase,
  input: { adminPassword: string; nodes: BenchNode[]; shape: Shape },
): Promise<AnswerRun> {
  const { options, log } = context;
  const open = await withHandle(database, async (handle) => {
    const { rows } = await sql<{ count: number }>`select count(*) as count from audits where kind = 'spot_check' and state = 'open'`.execute(handle.db);
    return Number(rows[0]?.count ?? 0);
  });
  const profileDirectory = profileDirectoryFor(context, `${database.kind}-answer`);
  const server = await startServer({
    projectRoot: context.projectRoot,
    databaseEnv: spotCheckEnv(database, SPOT_CHECKS),
    logFile: path.join(context.outDirectory, `server-proofs-${database.kind}-answer.log`),
    adminPassword: input.adminPassword,
    profileDirectory,
  });
  context.onCleanup(`stop proofs ${database.kind} answer server`, () => server.stop());
  const stopCpu = startCpuWindow([server.pid], database.postgresDatabase);
  const started = performance.now();
  const holders = startHolders({ baseUrl: server.url, nodes: input.nodes, shapeOf: () => input.shape });
  const drained = await Promise.race([holders.done.then(() => true), sleep(options.durationSeconds * 1000).then(() => false)]);
  const endedAt = performance.now();
  const cpu = stopCpu();
  const cpuSeconds = (endedAt - started) / 1000;
  const answeredAt = holders.answeredAt.filter((at) => at <= endedAt);
  const totals = await holders.stop();
  const seconds = ((drained ? (answeredAt.at(-1) ?? started) : endedAt) - started) / 1000;
  const serverRssMb = server.peakRssMb();
  await server.stop();
  printProfiles(context, profileDirectory, `${database.kind} spot-check answers`);
  const counted = await withHandle(database, async (handle) => {
    const { rows } = await sql<{ count: number }>`select count(*) as count from allocations where state = 'completed' and verified = 1`.execute(handle.db);
    return Number(rows[0]?.count ?? 0);
  });
  const run: AnswerRun = {
    open,
    holders: totals,
    answered: answeredAt.length,
    seconds,
    perSecond: answeredAt.length / Math.max(seconds, 0.001),
    drained,
    cpu,
    cpuSeconds,
    serverRssMb,
    counted,
  };
  log(
    `  answer: ${Math.round(run.perSecond)} spot checks answered and judged/s (${run.answered} of ${open} open in ${seconds.toFixed(1)} s${drained ? ', all answered' : ''}; ` +
      `passed ${totals.passed}, failed ${totals.failed}, errors ${JSON.stringify(totals.errors)}), CPU server ${cpu.serverPercent}% / holders ${cpu.loadGeneratorPercent}% / postgres ${cpu.postgresPercent}% / machine ${cpu.machinePercent}%`,
  );
  return run;
}
