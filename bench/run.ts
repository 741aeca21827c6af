/**
 * Dispatcher benchmark: import rate, then POST /allocate over real HTTP against the built server,
 * on SQLite and PostgreSQL. See bench/README.md for the flags and what each figure means.
 */
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { sql } from 'kysely';
import { migrateToLatest } from '../src/db/migrate.js';
import { registerNodes } from './api.js';
import { createBenchDatabase, describePostgres, type BenchDatabase } from './databases.js';
import { importCatalogue, type ImportResult } from './dataset.js';
import { runLoad } from './load.js';
import { parseOptions, USAGE, type BenchOptions, type DatabaseKind } from './options.js';
import { formatProfile } from './profile-top.js';
import { describeMachine, formatMachine, formatResults, writeJson, type RunRow } from './report.js';
import { startServer, tail } from './server.js';
import { resetAllocations, verifyAllocations, type Verification } from './verify.js';

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

/** Opens the bench database from this process, runs `work`, and closes it again. */
async function withHandle<T>(database: BenchDatabase, work: (handle: ReturnType<BenchDatabase['open']>) => Promise<T>): Promise<T> {
  const handle = database.open();
  try {
    return await work(handle);
  } finally {
    await handle.close();
  }
}

/** Migrations, then the catalogue, straight through the project's modules (before the server starts). */
async function prepareCatalogue(database: BenchDatabase, options: BenchOptions): Promise<ImportResult> {
  return withHandle(database, async (handle) => {
    await migrateToLatest(handle);
    log(`  importing ${options.assets.toLocaleString('en-US')} assets in batches of ${options.importBatch || options.assets}…`);
    const result = await importCatalogue(handle.db, options.assets, options.importBatch, log);
    // Autovacuum would analyze the new table within a minute anyway; without statistics the first
    // seconds of load would measure a planner guessing, not the steady state.
    if (database.kind === 'postgres') await sql`analyze`.execute(handle.db);
    return result;
  });
}

async function verifyAndReset(database: BenchDatabase, reset: boolean): Promise<Verification> {
  return withHandle(database, async (handle) => {
    const verification = await verifyAllocations(handle.db);
    if (reset) {
      await resetAllocations(handle.db);
      if (database.kind === 'postgres') await sql`vacuum analyze allocations, assets`.execute(handle.db);
    }
    return verification;
  });
}

async function benchDatabase(kind: DatabaseKind, options: BenchOptions, cleanup: Cleanup, stamp: string): Promise<RunRow[]> {
  log(`\n== ${kind} ==`);
  const database = await createBenchDatabase(kind, options.pgUrl);
  cleanup.push(`remove ${kind} database`, () => database.destroy());
  log(`  database: ${database.location}`);
  const imported = await prepareCatalogue(database, options);
  log(`  import: ${Math.round(imported.assetsPerSecond).toLocaleString('en-US')} assets/s (${imported.seconds.toFixed(1)} s, bench RSS peak ${Math.round(imported.peakRssMb)} MB)`);

  const profileDirectory = options.profile ? path.join(outDirectory, 'profiles', `${stamp}-${kind}`) : undefined;
  if (profileDirectory) fs.mkdirSync(profileDirectory, { recursive: true });
  fs.mkdirSync(outDirectory, { recursive: true });
  const server = await startServer({
    projectRoot,
    databaseEnv: database.serverEnv,
    logFile: path.join(outDirectory, `server-${kind}.log`),
    profileDirectory,
  });
  cleanup.push(`stop ${kind} server`, () => server.stop());
  log(`  server pid ${server.pid} at ${server.url}`);

  const nodes = await registerNodes(server.url, server.adminPassword, Math.max(...options.clients));
  log(`  registered ${nodes.length} nodes`);
  const rows: RunRow[] = [];
  for (const [index, clients] of options.clients.entries()) {
    server.resetPeakRss();
    log(`  load: ${clients} clients, ${options.warmupSeconds} s warm-up + ${options.durationSeconds} s measured…`);
    const load = await runLoad({
      baseUrl: server.url,
      nodes: nodes.slice(0, clients),
      warmupSeconds: options.warmupSeconds,
      durationSeconds: options.durationSeconds,
      maxAssets: options.maxAssets,
      serverPid: server.pid,
      postgresDatabase: database.postgresDatabase,
    });
    const serverPeakRssMb = server.peakRssMb();
    const verification = await verifyAndReset(database, index < options.clients.length - 1);
    log(
      `    ${Math.round(load.requestsPerSecond)} req/s, ${Math.round(load.allocationsPerSecond)} allocations/s, p99 ${load.latencyMs.p99.toFixed(1)} ms, ` +
        `errors ${load.errors}, duplicates ${verification.duplicates}, server CPU ${load.cpu.serverPercent}%, load generator CPU ${load.cpu.loadGeneratorPercent}%`,
    );
    log(`    req/s in each second: ${load.requestsPerSecondOverTime.join(' ')}`);
    rows.push({ database: kind, import: imported, load, serverPeakRssMb, verification });
  }

  const serverHighWaterMb = server.highWaterMb();
  await server.stop();
  if (serverHighWaterMb !== undefined) log(`  server VmHWM over its life: ${Math.round(serverHighWaterMb)} MB`);
  const serverErrors = tail(server.logFile, 5);
  if (serverErrors.trim() !== '') log(`  last server log lines:\n${serverErrors}`);
  if (profileDirectory) {
    for (const file of fs.readdirSync(profileDirectory).filter((name) => name.endsWith('.cpuprofile'))) {
      log(`\nServer CPU profile (${kind}), top 15 by self time:\n${formatProfile(path.join(profileDirectory, file), 15)}`);
    }
  }
  await database.destroy();
  return rows;
}

export async function main(argv: string[]): Promise<void> {
  const options = parseOptions(argv);
  if (options.help) {
    process.stdout.write(USAGE);
    return;
  }
  const machine = describeMachine(projectRoot);
  if (options.databases.includes('postgres')) machine.postgres = await describePostgres(options.pgUrl);
  log(formatMachine(machine));
  if (options.build) build();

  const cleanup = new Cleanup();
  const interrupt = (signal: NodeJS.Signals) => {
    console.error(`\n${signal}: cleaning up…`);
    void cleanup.runAll().finally(() => process.exit(130));
  };
  process.once('SIGINT', interrupt);
  process.once('SIGTERM', interrupt);

  const stamp = machine.date.replace(/[:.]/g, '-');
  const rows: RunRow[] = [];
  try {
    for (const kind of options.databases) rows.push(...(await benchDatabase(kind, options, cleanup, stamp)));
  } finally {
    await cleanup.runAll();
  }

  log(`\n${formatMachine(machine)}\n`);
  log(formatResults(rows));
  const file = writeJson(outDirectory, { machine, options, results: rows }, machine.date);
  log(`\nJSON: ${path.relative(process.cwd(), file)}`);
}

main(process.argv.slice(2)).catch((error: unknown) => {
  console.error(`bench failed: ${(error as Error).stack ?? String(error)}`);
  process.exit(1);
});
