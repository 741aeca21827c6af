/**
 * Dispatcher benchmark: several suites measured in one run on this machine and printed side by
 * side, with the headline ratios against the targets, written to bench/RESULTS.md too.
 * See bench/README.md for the suites, the flags and what each figure means.
 */
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { performance } from 'node:perf_hooks';
import { fileURLToPath } from 'node:url';
import { sql } from 'kysely';
import { migrateToLatest } from '../src/db/migrate.js';
import { createBenchDatabase, describePostgres, withHandle, type BenchDatabase } from './databases.js';
import { importCatalogue, type ImportResult } from './dataset.js';
import { computeHeadlines, disturbance, formatHeadlines, formatMarkdown, picksFor } from './headline.js';
import { benchDispatcherHttp, benchFastify, summaryLine, type SuiteContext } from './http-suites.js';
import type { WindowOptions } from './loops.js';
import { parseOptions, USAGE, type BenchOptions, type DatabaseKind } from './options.js';
import { proofsHeadlines } from './proofs-figures.js';
import { formatProofs, proofsMarkdown } from './proofs-report.js';
import { benchProofs, type ProofsRun } from './proofs.js';
import { benchGraphileWorker, benchPgBoss } from './queues.js';
import { benchDispatcherClaim, benchRawClaim } from './raw-claim.js';
import { formatRestore, restoreDisturbance } from './restore-report.js';
import { benchRestore, type RestoreRun } from './restore.js';
import { describeMachine, formatMachine, formatResults, writeJson } from './report.js';
import type { MeasuredRow } from './rows.js';

const projectRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const outDirectory = path.join(projectRoot, 'bench', 'out');
const log = (line: string) => console.log(line);

/** Undo actions run last-in first-out, on success, on error and on Ctrl-C alike. */
class Cleanup {
  private readonly actions: { label: string; run: () => Promise<void> }[] = [];

  push(label: string, run: () => Promise<void>): void {
    this.actions.push({ label, run });
  }

  async runAll(): Promise<void> {
    while (this.actions.length > 0) {
      const action = this.actions.pop() as { label: string; run: () => Promise<void> };
      try {
        await action.run();
      } catch (error) {
        console.error(`cleanup "${action.label}" failed: ${(error as Error).message}`);
      }
    }
  }
}

function build(): void {
  log('Building (npm run build)…');
  const started = Date.now();
  execFileSync('npm', ['run', '--silent', 'build'], { cwd: projectRoot, stdio: 'inherit' });
  log(`  built in ${((Date.now() - started) / 1000).toFixed(1)} s`);
}

/** Migrations, then the catalogue, straight through the project's modules (before any server starts). */
async function prepareCatalogue(database: BenchDatabase, options: BenchOptions): Promise<ImportResult> {
  return withHandle(database, async (handle) => {
    await migrateToLatest(handle);
    log(`  importing ${options.assets.toLocaleString('en-US')} assets in batches of ${options.importBatch || options.assets}…`);
    const result = await importCatalogue(handle.db, options.assets, options.importBatch, log);
    // Autovacuum would analyze the new table within a minute anyway; without statistics the first
    // seconds of load would measure a planner guessing, not the steady state.
    if (database.kind === 'postgres') await sql`analyze`.execute(handle.db);
    log(
      `  import: ${Math.round(result.assetsPerSecond).toLocaleString('en-US')} assets/s (${result.seconds.toFixed(1)} s, bench RSS peak ${Math.round(result.peakRssMb)} MB)`,
    );
    return result;
  });
}

/** raw-claim rows of one database: the one-item claim SQL, then Dispatcher's claim without HTTP. */
async function benchClaims(database: BenchDatabase, options: BenchOptions, window: WindowOptions): Promise<MeasuredRow[]> {
  const rows: MeasuredRow[] = [];
  const keep = (row: MeasuredRow) => {
    log(summaryLine(row));
    rows.push(row);
  };
  for (const connections of database.kind === 'postgres' ? options.rawConnections : [1]) keep(await benchRawClaim(database, connections, window));
  for (const loops of options.rawConnections) keep(await benchDispatcherClaim(database, loops, options.maxAssets, window));
  return rows;
}

async function benchQueues(database: BenchDatabase, options: BenchOptions, window: WindowOptions): Promise<MeasuredRow[]> {
  const rows: MeasuredRow[] = [];
  for (const [suite, bench] of [
    ['pg-boss', benchPgBoss],
    ['graphile-worker', benchGraphileWorker],
  ] as const) {
    if (!options.suites.includes(suite)) continue;
    log(`\n== ${suite} ==`);
    for (const backlog of options.queueBacklogs) {
      for (const loops of options.queueLoops) {
        const jobs = backlog === 'deep' ? options.queueJobs : options.queueShallow;
        const row = await bench(database, { loops, backlog, jobs, poolSize: Math.min(loops + 2, options.queuePool), window, log });
        log(summaryLine(row));
        rows.push(row);
      }
    }
  }
  return rows;
}

/** Every suite that needs this database, on one import of the catalogue. */
async function benchOnDatabase(kind: DatabaseKind, context: SuiteContext, imports: Partial<Record<DatabaseKind, ImportResult>>): Promise<MeasuredRow[]> {
  const { options } = context;
  const wantsCatalogue = options.suites.includes('raw-claim') || options.suites.includes('dispatcher');
  const wantsQueues = kind === 'postgres' && (options.suites.includes('pg-boss') || options.suites.includes('graphile-worker'));
  if (!wantsCatalogue && !wantsQueues) return [];
  log(`\n== ${kind} ==`);
  const database = await createBenchDatabase(kind, options.pgUrl);
  context.onCleanup(`remove ${kind} database`, () => database.destroy());
  log(`  database: ${database.location}`);
  const window: WindowOptions = {
    warmupSeconds: options.warmupSeconds,
    durationSeconds: options.durationSeconds,
    serverPids: [],
    postgresDatabase: database.postgresDatabase,
  };
  const rows: MeasuredRow[] = [];
  if (wantsCatalogue) imports[kind] = await prepareCatalogue(database, options);
  if (options.suites.includes('raw-claim')) rows.push(...(await benchClaims(database, options, window)));
  if (options.suites.includes('dispatcher')) rows.push(...(await benchDispatcherHttp(context, database)));
  if (wantsQueues) rows.push(...(await benchQueues(database, options, window)));
  await database.destroy();
  return rows;
}

export async function main(argv: string[]): Promise<void> {
  const options = parseOptions(argv);
  if (options.help) {
    process.stdout.write(USAGE);
    return;
  }
  const started = performance.now();
  const machine = describeMachine(projectRoot);
  if (options.databases.includes('postgres')) machine.postgres = await describePostgres(options.pgUrl);
  log(formatMachine(machine));
  if (options.build && (options.suites.includes('dispatcher') || options.suites.includes('restore') || options.suites.includes('proofs'))) build();

  const cleanup = new Cleanup();
  const interrupt = (signal: NodeJS.Signals) => {
    console.error(`\n${signal}: cleaning up…`);
    void cleanup.runAll().finally(() => process.exit(130));
  };
  process.once('SIGINT', interrupt);
  process.once('SIGTERM', interrupt);

  const context: SuiteContext = {
    options,
    projectRoot,
    outDirectory,
    onCleanup: (label, run) => cleanup.push(label, run),
    log,
    stamp: machine.date.replace(/[:.]/g, '-'),
  };
  const rows: MeasuredRow[] = [];
  const imports: Partial<Record<DatabaseKind, ImportResult>> = {};
  let restore: RestoreRun[] = [];
  let proofs: ProofsRun[] = [];
  try {
    if (options.suites.includes('fastify')) rows.push(...(await benchFastify(context)));
    for (const kind of options.databases) rows.push(...(await benchOnDatabase(kind, context, imports)));
    if (options.suites.includes('restore')) restore = await benchRestore(context);
    if (options.suites.includes('proofs')) proofs = await benchProofs(context);
  } finally {
    await cleanup.runAll();
  }

  const headlines = [...computeHeadlines(rows, picksFor(options), restore), ...proofsHeadlines(proofs)];
  log(`\n${formatMachine(machine)}\n`);
  if (rows.length > 0) log(formatResults(rows));
  if (restore.length > 0) log(`\n${formatRestore(restore)}`);
  if (proofs.length > 0) log(`\n${formatProofs(proofs, options)}`);
  const disturbed = [...(rows.length > 0 ? [disturbance(rows)] : []), ...(restore.length > 0 ? [restoreDisturbance(restore)] : [])];
  log(`\n${formatHeadlines(headlines)}\n\n${disturbed.join('\n')}`);
  const file = writeJson(outDirectory, { machine, options, imports, headlines, results: rows, restore, proofs }, machine.date);
  log(`\nJSON: ${path.relative(process.cwd(), file)}`);
  const command = ['npm run bench', ...(argv.length ? ['--', ...argv] : [])].join(' ');
  const markdown = formatMarkdown({ machine, options, rows, imports, headlines, restore, totalSeconds: (performance.now() - started) / 1000, command });
  const resultsFile = path.resolve(projectRoot, options.resultsFile);
  fs.writeFileSync(resultsFile, markdown + proofsMarkdown(proofs, options));
  log(`Markdown: ${path.relative(process.cwd(), resultsFile)}`);
}

main(process.argv.slice(2)).catch((error: unknown) => {
  console.error(`bench failed: ${(error as Error).stack ?? String(error)}`);
  process.exit(1);
});
