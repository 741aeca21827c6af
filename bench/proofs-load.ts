import crypto from 'node:crypto';
import path from 'node:path';
import { performance } from 'node:perf_hooks';
import { setTimeout as sleep } from 'node:timers/promises';
import { sql } from 'kysely';
import type { Db } from '../src/db/database.js';
import { registerNodes } from './api.js';
import { createBenchDatabase, withHandle, type BenchDatabase } from './databases.js';
import type { SuiteContext } from './http-suites.js';
import type { DatabaseKind } from './options.js';
import { startCpuWindow, type CpuUsage } from './procfs.js';
import type { Shape } from './proofs-content.js';
import { startHolders, type HolderTotals } from './proofs-holders.js';
import { printProfiles, profileDirectoryFor } from './proofs-profile.js';
import { readSeedNodes, seedCountedCopies, settleAfterSeed } from './proofs-seed.js';
import { startServer } from './server.js';

/** Nodes the counted copies are spread over, each a simulated holder. */
export const AUDIT_HOLDERS = 200;
/** audits.repository.ts UNFINISHED_PER_NODE: audits under way per node at most. */
const UNFINISHED_PER_NODE = 8;
/** The server's defaults the measure keeps: AUDIT_INTERVAL_HOURS, AUDIT_SCORE_WINDOW_DAYS, AUDITS_PER_MINUTE, the pass's 10 s interval. */
export const INTERVAL_HOURS = 168;
const SCORE_WINDOW_DAYS = 30;
export const DEFAULT_AUDITS_PER_MINUTE = 600;
/**
 * High for the capacity measure: a pass (AUDITS_PER_MINUTE / 6 of them) may start every node's
 * whole room, so the per-node limit binds, not the budget.
 */
export const LOAD_AUDITS_PER_MINUTE = 6 * UNFINISHED_PER_NODE * AUDIT_HOLDERS;
/** How often the bench reads the server's `loops` row to note each prove-copies pass. */
const WATCH_MS = 250;
/**
 * A holder whose heartbeat listed nothing asks again after this long: the pass's interval, since
 * nothing new is started sooner (an agent waits next_heartbeat_seconds, 60 s). A holder that
 * answered heartbeats again at once.
 */
const IDLE_MS = 10_000;
const PROOFS_LOOP = 'prove-copies';
/** The audit load is measured for at least three of the pass's 10 s intervals, whatever `--duration` says. */
export const AUDIT_MIN_SECONDS = 30;

export interface AuditLoadRun {
  database: DatabaseKind;
  copies: number;
  holders: number;
  shapes: { size: number; depth: number }[];
  /** Passed audits per copy already on record (one per interval within the score window). */
  historyAudits: number;
  seedSeconds: number;
  auditsPerMinute: number;
  intervalHours: number;
  seconds: number;
  /**
   * In the measured window: audits started (inserted), answered (a 200 to the holder: its verdict
   * applied), judged (left the unfinished states: under way at the start + started − under way at
   * the end; exact, where verdict timestamps are the request's start and may precede the window).
   */
  started: number;
  answered: number;
  judged: number;
  /** Verdicts whose ended_at falls in the window, by state. */
  verdicts: Record<string, number>;
  /** Audits under way (queued, preparing, open) when the window opened and when it closed: started = judged + their difference. */
  inFlight: { from: number; to: number };
  answersPerSecondOverTime: number[];
  passes: number;
  passMs: number[];
  /** Every prove-copies pass that finished during the run: its start relative to the window's (s) and its duration (ms). */
  passLog: { atSeconds: number; ms: number }[];
  cpu: CpuUsage;
  holderTotals: HolderTotals;
  serverRssMb: number;
  /** Copies counted before and after: every answer was honest, so none may be lost. */
  countedBefore: number;
  countedAfter: number;
}

/**
 * Part 2 of the proofs suite on one database: `--copies` counted copies seeded in bulk, then the
 * built server's own prove-copies pass (every 10 s, AUDITS_PER_MINUTE high) starting block audits,
 * simulated holders answering them over HTTP, and the verdicts, end to end for `--warmup` +
 * `--duration` seconds.
 */
export async function benchAuditLoad(context: SuiteContext, kind: DatabaseKind, shapes: Shape[]): Promise<AuditLoadRun> {
  const { options, log } = context;
  const database = await createBenchDatabase(kind, options.pgUrl);
  context.onCleanup(`remove proofs ${kind} audit database`, () => database.destroy());
  const adminPassword = crypto.randomBytes(18).toString('base64url');
  const env = { ...database.serverEnv, AUDITS_PER_MINUTE: String(LOAD_AUDITS_PER_MINUTE) };
  const logFile = (role: string) => path.join(context.outDirectory, `server-proofs-${kind}-${role}.log`);
  const historyAudits = Math.floor((SCORE_WINDOW_DAYS * 24) / INTERVAL_HOURS);
  const seeding = performance.now();
  const setup = await startServer({ projectRoot: context.projectRoot, databaseEnv: env, logFile: logFile('audit-seed'), adminPassword });
  const nodes = await registerNodes(setup.url, adminPassword, AUDIT_HOLDERS).finally(() => setup.stop());
  const countedBefore = await withHandle(database, async (handle) => {
    const seedNodes = await readSeedNodes(handle.db);
    const intervalMs = INTERVAL_HOURS * 3_600_000;
    await seedCountedCopies(handle.db, kind, { count: options.copies, nodes: seedNodes, shapes, now: Date.now(), intervalMs, historyAudits });
    await settleAfterSeed(handle.db, kind);
    // The fleet is online when the server starts, so its first pass finds every holder alive.
    await handle.db.updateTable('nodes').set({ status: 'alive', last_heartbeat_at: Date.now() }).execute();
    return countCounted(handle.db);
  });
  const seedSeconds = (performance.now() - seeding) / 1000;
  log(
    `  seeded ${countedBefore.toLocaleString('en-US')} counted copies on ${nodes.length} nodes, ${historyAudits} passed audits each on record, in ${seedSeconds.toFixed(1)} s`,
  );

  const profileDirectory = profileDirectoryFor(context, `${kind}-audits`);
  const serverStartedAt = Date.now();
  const server = await startServer({ projectRoot: context.projectRoot, databaseEnv: env, logFile: logFile('audits'), adminPassword, profileDirectory });
  context.onCleanup(`stop proofs ${kind} audit server`, () => server.stop());
  const shapeOf = (assetId: string) => shapes[Number(assetId.slice(assetId.indexOf('-') + 1)) % shapes.length] as Shape;
  const holders = startHolders({ baseUrl: server.url, nodes, shapeOf, idleMs: IDLE_MS });
  const measured = await withHandle(database, async (handle) => {
    const watching = watchPasses(handle.db);
    // The window opens once the first pass has started its audits (it takes seconds on 1M copies), plus --warmup.
    const firstPass = await waitFor(() => watching.passes.some((pass) => pass.startedAt >= serverStartedAt), FIRST_PASS_TIMEOUT_MS);
    if (!firstPass) log(`  no prove-copies pass finished within ${FIRST_PASS_TIMEOUT_MS / 1000} s of the server's start; measuring anyway`);
    await sleep(options.warmupSeconds * 1000);
    const { from, ...window } = await measureWindow(
      handle.db,
      server.pid,
      database,
      holders.answeredAt,
      Math.max(options.durationSeconds, AUDIT_MIN_SECONDS),
      watching.passes,
    );
    await watching.stop();
    const passLog = watching.passes.map((pass) => ({ atSeconds: Math.round((pass.startedAt - from) / 100) / 10, ms: pass.ms }));
    return { ...window, passLog };
  });
  const holderTotals = await holders.stop();
  const serverRssMb = server.peakRssMb();
  await server.stop();
  printProfiles(context, profileDirectory, `${kind} audit load`);
  const countedAfter = await withHandle(database, (handle) => countCounted(handle.db));
  await database.destroy();
  const run: AuditLoadRun = {
    database: kind,
    copies: options.copies,
    holders: nodes.length,
    shapes: shapes.map((shape) => ({ size: shape.size, depth: shape.levels.length - 1 })),
    historyAudits,
    seedSeconds,
    auditsPerMinute: LOAD_AUDITS_PER_MINUTE,
    intervalHours: INTERVAL_HOURS,
    ...measured,
    holderTotals,
    serverRssMb,
    countedBefore,
    countedAfter,
  };
  log(auditLoadLine(run));
  return run;
}

async function countInFlight(db: Db): Promise<number> {
  const { rows } = await sql<{ count: number }>`select count(*) as count from audits where state in ('queued', 'preparing', 'open')`.execute(db);
  return Number(rows[0]?.count ?? 0);
}

async function lastAuditId(db: Db): Promise<number> {
  const { rows } = await sql<{ id: number | null }>`select max(id) as id from audits`.execute(db);
  return Number(rows[0]?.id ?? 0);
}

async function countCounted(db: Db): Promise<number> {
  const { rows } = await sql<{ count: number }>`select count(*) as count from allocations where state = 'completed' and verified = 1`.execute(db);
  return Number(rows[0]?.count ?? 0);
}

const FIRST_PASS_TIMEOUT_MS = 120_000;

async function waitFor(condition: () => boolean, timeoutMs: number): Promise<boolean> {
  for (const deadline = Date.now() + timeoutMs; Date.now() < deadline; await sleep(WATCH_MS)) if (condition()) return true;
  return condition();
}

/** Notes each prove-copies pass the server finished, from its `loops` row. */
function watchPasses(db: Db): { passes: { startedAt: number; ms: number }[]; stop(): Promise<void> } {
  const passes: { startedAt: number; ms: number }[] = [];
  let stopped = false;
  const running = (async () => {
    while (!stopped) {
      const row = await db.selectFrom('loops').select(['last_started_at', 'last_finished_at']).where('name', '=', PROOFS_LOOP).executeTakeFirst();
      const [startedAt, finishedAt] = [Number(row?.last_started_at ?? 0), Number(row?.last_finished_at ?? 0)];
      if (startedAt > 0 && finishedAt >= startedAt && passes.at(-1)?.startedAt !== startedAt) passes.push({ startedAt, ms: finishedAt - startedAt });
      await sleep(WATCH_MS);
    }
  })();
  return {
    passes,
    stop: async () => {
      stopped = true;
      await running;
    },
  };
}

/** The window's figures, and when it began (epoch ms). */
type Window = Pick<
  AuditLoadRun,
  'seconds' | 'started' | 'answered' | 'judged' | 'verdicts' | 'inFlight' | 'answersPerSecondOverTime' | 'passes' | 'passMs' | 'cpu'
> & {
  from: number;
};

async function measureWindow(
  db: Db,
  serverPid: number,
  database: BenchDatabase,
  answers: readonly number[],
  durationSeconds: number,
  passes: { startedAt: number; ms: number }[],
): Promise<Window> {
  const [inFlightBefore, lastIdBefore] = [await countInFlight(db), await lastAuditId(db)];
  const [from, fromMark] = [Date.now(), performance.now()];
  const stopCpu = startCpuWindow([serverPid], database.postgresDatabase);
  await sleep(durationSeconds * 1000);
  const cpu = stopCpu();
  const [to, toMark] = [Date.now(), performance.now()];
  const [inFlightAfter, lastIdAfter] = [await countInFlight(db), await lastAuditId(db)];
  const answeredAt = answers.filter((at) => at >= fromMark && at <= toMark);
  const perSecond = new Array<number>(Math.ceil(durationSeconds)).fill(0);
  for (const at of answeredAt) {
    const second = Math.min(perSecond.length - 1, Math.floor((at - fromMark) / 1000));
    perSecond[second] = (perSecond[second] ?? 0) + 1;
  }
  const ended = await sql<{ state: string; count: number }>`
    select state, count(*) as count from audits where ended_at >= ${from} and ended_at <= ${to} and state in ('passed', 'failed', 'missed') group by state`.execute(
    db,
  );
  const verdicts = Object.fromEntries(ended.rows.map((row) => [row.state, Number(row.count)]));
  const inWindow = passes.filter((pass) => pass.startedAt >= from && pass.startedAt <= to);
  return {
    from,
    seconds: (toMark - fromMark) / 1000,
    // Audits inserted meanwhile (their created_at is their pass's start, which may precede the window).
    started: lastIdAfter - lastIdBefore,
    answered: answeredAt.length,
    judged: inFlightBefore + (lastIdAfter - lastIdBefore) - inFlightAfter,
    verdicts,
    inFlight: { from: inFlightBefore, to: inFlightAfter },
    answersPerSecondOverTime: perSecond,
    passes: inWindow.length,
    passMs: inWindow.map((pass) => pass.ms),
    cpu,
  };
}

export function auditLoadLine(run: AuditLoadRun): string {
  const rate = (count: number) => Math.round(count / run.seconds);
  return (
    `  audits: started ${rate(run.started)}/s, answered ${rate(run.answered)}/s, judged ${rate(run.judged)}/s (${JSON.stringify(run.verdicts)}), ${run.passes} passes, ` +
    `CPU server ${run.cpu.serverPercent}% / holders ${run.cpu.loadGeneratorPercent}% / postgres ${run.cpu.postgresPercent}% / machine ${run.cpu.machinePercent}%; ` +
    `counted ${run.countedBefore} → ${run.countedAfter}, holder errors ${JSON.stringify(run.holderTotals.errors)}; ` +
    `passes (start s from the window's, ms): ${run.passLog.map((pass) => `${pass.atSeconds}:${pass.ms}`).join(' ')}`
  );
}
