import crypto from 'node:crypto';
import path from 'node:path';
import { performance } from 'node:perf_hooks';
import { sql } from 'kysely';
import { registerNodes, type BenchNode } from './api.js';
import { createBenchDatabase, withHandle, type BenchDatabase } from './databases.js';
import type { SuiteContext } from './http-suites.js';
import type { LoopResult } from './loops.js';
import type { DatabaseKind } from './options.js';
import type { Shape } from './proofs-content.js';
import { runCompletions } from './proofs-holders.js';
import { answerSpotChecks, prepareSpotChecks, spotCheckEnv, type AnswerRun, type PrepareRun } from './proofs-prepare.js';
import { printProfiles, profileDirectoryFor } from './proofs-profile.js';
import { activeAssetsOf, cloneDatabase, queueRemainingSpotChecks, readSeedNodes, seedActiveAllocations, settleAfterSeed } from './proofs-seed.js';
import { startServer, tail, type ChildServer, type ServerProcess } from './server.js';

/** Active allocations seeded for the completion rounds: more than any round completes (checked: `exhausted`). */
export const SPOT_ASSETS = 100_000;
/** The two settings compared; nothing else differs between their servers. */
export const SPOT_VARIANTS = [0, 3] as const;

/** One measured window of `/complete` on a fresh copy of the seeded database. */
export interface CompletionRound {
  spotChecks: number;
  round: number;
  result: LoopResult;
  serverRssMb: number;
  /** After the round: copies completed, copies counted, spot checks queued, and those the server's own pass opened meanwhile. */
  completed: number;
  counted: number;
  spotChecksQueued: number;
  openedByServerPass: number;
  /** The server's longest background pass as its `loops` table shows it after the round (each loop's last pass). */
  slowestLoop: { name: string; ms: number };
}

export interface SpotCheckRun {
  database: DatabaseKind;
  clients: number;
  seededAllocations: number;
  seedSeconds: number;
  rounds: CompletionRound[];
  prepare: PrepareRun;
  answer: AnswerRun;
}

/**
 * Part 1 of the proofs suite on one database: `/complete` with VERIFY_SPOT_CHECKS=0 against =3 in
 * alternated rounds, each on a fresh copy of the same seeded database; then, on the last =3
 * round's database, the proof pass preparing the spot checks those completions queued, and the
 * holders answering them over HTTP.
 */
export async function benchSpotChecks(context: SuiteContext, kind: DatabaseKind, shape: Shape, files: ChildServer): Promise<SpotCheckRun> {
  const { options, log } = context;
  const clients = options.clients.includes(50) ? 50 : (options.clients[0] as number);
  const adminPassword = crypto.randomBytes(18).toString('base64url');
  const seed = await createBenchDatabase(kind, options.pgUrl);
  context.onCleanup(`remove proofs ${kind} seed database`, () => seed.destroy());
  const seeded = await seedCompletions(context, seed, { clients, adminPassword, shape, url: `${files.url}/file` });
  log(`  seeded ${SPOT_ASSETS.toLocaleString('en-US')} active allocations on ${clients} nodes in ${seeded.seconds.toFixed(1)} s`);

  const rounds: CompletionRound[] = [];
  let kept: BenchDatabase | undefined;
  for (let round = 1; round <= options.proofRounds; round += 1) {
    for (const spotChecks of SPOT_VARIANTS) {
      const clone = await cloneDatabase(seed, options.pgUrl);
      context.onCleanup(`remove proofs ${kind} round database`, () => clone.destroy());
      const result = await completionRound(context, clone, { spotChecks, round, adminPassword, nodes: seeded.nodes, shape });
      log(roundLine(result));
      rounds.push(result);
      if (kept) await kept.destroy();
      kept = clone;
    }
  }
  await seed.destroy();
  const database = kept as BenchDatabase;
  const queued = await withHandle(database, async (handle) => {
    const count = await queueRemainingSpotChecks(handle.db, shape, Date.now());
    // A bulk update of every row: autovacuum would re-analyze within a minute; until then PostgreSQL plans for the old states.
    await settleAfterSeed(handle.db, database.kind);
    return count;
  });
  log(
    `  the ${SPOT_ASSETS.toLocaleString('en-US')} allocations all completed (the rest in bulk as /complete leaves them): ${queued.toLocaleString('en-US')} spot checks queued`,
  );
  const prepare = await prepareSpotChecks(context, database, files);
  const answer = await answerSpotChecks(context, database, { adminPassword, nodes: seeded.nodes, shape });
  await database.destroy();
  return { database: kind, clients, seededAllocations: SPOT_ASSETS, seedSeconds: seeded.seconds, rounds, prepare, answer };
}

/** Nodes registered through a server on the seed database, then the active allocations in bulk (the server stopped: the seed is cloned). */
async function seedCompletions(
  context: SuiteContext,
  seed: BenchDatabase,
  input: { clients: number; adminPassword: string; shape: Shape; url: string },
): Promise<{ nodes: BenchNode[]; seconds: number }> {
  const started = performance.now();
  const server = await startServer({
    projectRoot: context.projectRoot,
    databaseEnv: spotCheckEnv(seed, 0),
    logFile: path.join(context.outDirectory, `server-proofs-${seed.kind}-seed.log`),
    adminPassword: input.adminPassword,
  });
  let nodes: BenchNode[];
  try {
    nodes = await registerNodes(server.url, input.adminPassword, input.clients);
  } finally {
    await server.stop();
  }
  await withHandle(seed, async (handle) => {
    const seedNodes = await readSeedNodes(handle.db);
    await seedActiveAllocations(handle.db, { count: SPOT_ASSETS, nodes: seedNodes, shape: input.shape, url: input.url, now: Date.now() });
    await settleAfterSeed(handle.db, seed.kind);
  });
  return { nodes, seconds: (performance.now() - started) / 1000 };
}

async function completionRound(
  context: SuiteContext,
  database: BenchDatabase,
  input: { spotChecks: number; round: number; adminPassword: string; nodes: BenchNode[]; shape: Shape },
): Promise<CompletionRound> {
  const { options } = context;
  const label = `${database.kind}-complete-${input.spotChecks}-r${input.round}`;
  const profileDirectory = profileDirectoryFor(context, label);
  const server: ServerProcess = await startServer({
    projectRoot: context.projectRoot,
    databaseEnv: spotCheckEnv(database, input.spotChecks),
    logFile: path.join(context.outDirectory, `server-proofs-${database.kind}-complete-${input.spotChecks}.log`),
    adminPassword: input.adminPassword,
    profileDirectory,
  });
  context.onCleanup(`stop proofs ${database.kind} server`, () => server.stop());
  const assets = input.nodes.map((_, index) => activeAssetsOf(index, input.nodes.length, SPOT_ASSETS));
  const result = await runCompletions(server.url, input.nodes, assets, input.shape, {
    warmupSeconds: options.warmupSeconds,
    durationSeconds: options.durationSeconds,
    serverPids: [server.pid],
    postgresDatabase: database.postgresDatabase,
  });
  const serverRssMb = server.peakRssMb();
  await server.stop();
  const lastLines = tail(server.logFile, 5);
  if (lastLines.trim() !== '') context.log(`    last lines of ${path.basename(server.logFile)}:\n${lastLines}`);
  printProfiles(context, profileDirectory, label);
  const counts = await withHandle(database, async (handle) => {
    const { rows } = await sql<{ completed: number; counted: number; queued: number; opened: number }>`
      select (select count(*) from allocations where state = 'completed') as completed,
             (select count(*) from allocations where state = 'completed' and verified = 1) as counted,
             (select count(*) from audits where kind = 'spot_check') as queued,
             (select count(*) from audits where kind = 'spot_check' and state <> 'queued') as opened`.execute(handle.db);
    const loops = await handle.db.selectFrom('loops').select(['name', 'last_started_at', 'last_finished_at']).execute();
    const passes = loops.map((loop) => ({ name: loop.name, ms: Number(loop.last_finished_at ?? 0) - Number(loop.last_started_at ?? 0) }));
    const slowest = passes.reduce((a, b) => (b.ms > a.ms ? b : a), { name: '-', ms: 0 });
    return { ...(rows[0] as { completed: number; counted: number; queued: number; opened: number }), slowest };
  });
  return {
    spotChecks: input.spotChecks,
    round: input.round,
    result,
    serverRssMb,
    completed: Number(counts.completed),
    counted: Number(counts.counted),
    spotChecksQueued: Number(counts.queued),
    openedByServerPass: Number(counts.opened),
    slowestLoop: counts.slowest,
  };
}

export function roundLine(round: CompletionRound): string {
  const { result } = round;
  const latency = result.latencyMs ? `, p50 ${result.latencyMs.p50.toFixed(1)} / p99 ${result.latencyMs.p99.toFixed(1)} ms` : '';
  return (
    `  round ${round.round} VERIFY_SPOT_CHECKS=${round.spotChecks}: ${Math.round(result.okPerSecond)} completions/s${latency}, errors ${result.errors}, ` +
    `CPU server ${result.cpu.serverPercent}% / load gen ${result.cpu.loadGeneratorPercent}% / postgres ${result.cpu.postgresPercent}% / machine ${result.cpu.machinePercent}%; ` +
    `completed ${round.completed}, counted ${round.counted}, spot checks queued ${round.spotChecksQueued} (${round.openedByServerPass} prepared by the server's own pass); slowest loop pass ${round.slowestLoop.name} ${round.slowestLoop.ms} ms; per second: ${result.callsPerSecondOverTime.join(' ')}`
  );
}
