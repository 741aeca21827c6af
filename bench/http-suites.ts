import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { registerNodes, type BenchNode } from './api.js';
import type { BenchDatabase } from './databases.js';
import { allocateBody, allocateTargets, runHttpLoad, type HttpTarget } from './load.js';
import type { WindowOptions } from './loops.js';
import type { BenchOptions } from './options.js';
import { formatProfile } from './profile-top.js';
import type { MeasuredRow } from './rows.js';
import { startFastifyHello, startServer, tail, type ServerProcess } from './server.js';
import { checkThenReset, verifyAllocations } from './verify.js';

export interface SuiteContext {
  options: BenchOptions;
  projectRoot: string;
  outDirectory: string;
  /** Registers an undo action run on success, error and Ctrl-C alike. */
  onCleanup: (label: string, run: () => Promise<void>) => void;
  log: (line: string) => void;
  /** Names profile directories after the run. */
  stamp: string;
}

const windowFor = (options: BenchOptions, serverPids: number[], postgresDatabase?: string): WindowOptions => ({
  warmupSeconds: options.warmupSeconds,
  durationSeconds: options.durationSeconds,
  serverPids,
  postgresDatabase,
});

/** Fastify's own limit: the hello-world child, the same clients and request bodies as /allocate. */
export async function benchFastify(context: SuiteContext): Promise<MeasuredRow[]> {
  const { options, log } = context;
  log('\n== fastify hello world ==');
  fs.mkdirSync(context.outDirectory, { recursive: true });
  const server = await startFastifyHello(context.projectRoot, path.join(context.outDirectory, 'server-fastify.log'));
  context.onCleanup('stop fastify hello world', () => server.stop());
  const rows: MeasuredRow[] = [];
  for (const clients of options.clients) {
    server.resetPeakRss();
    const targets: HttpTarget[] = Array.from({ length: clients }, (_, index) => ({
      baseUrl: server.url,
      path: '/echo',
      headers: { 'content-type': 'application/json', authorization: 'Bearer unused' },
      body: allocateBody(`bench-node-${index + 1}`, options.maxAssets),
    }));
    const result = await runHttpLoad(targets, windowFor(options, [server.pid]));
    const row: MeasuredRow = { suite: 'fastify', subject: 'POST /echo', instances: 1, connections: '-', result, serverRssMb: [server.peakRssMb()], check: {} };
    log(summaryLine(row));
    rows.push(row);
  }
  await server.stop();
  return rows;
}

/** Starts `count` servers on the database one after another (each runs migrations at start-up). */
async function startInstances(
  context: SuiteContext,
  database: BenchDatabase,
  count: number,
  adminPassword: string,
): Promise<{ servers: ServerProcess[]; profileDirectory?: string }> {
  const profileDirectory = context.options.profile ? path.join(context.outDirectory, 'profiles', `${context.stamp}-${database.kind}-${count}`) : undefined;
  if (profileDirectory) fs.mkdirSync(profileDirectory, { recursive: true });
  const servers: ServerProcess[] = [];
  for (let index = 0; index < count; index += 1) {
    const server = await startServer({
      projectRoot: context.projectRoot,
      databaseEnv: database.serverEnv,
      logFile: path.join(context.outDirectory, `server-${database.kind}-${index + 1}.log`),
      profileDirectory,
      adminPassword,
    });
    context.onCleanup(`stop ${database.kind} server ${index + 1}`, () => server.stop());
    servers.push(server);
  }
  context.log(`  ${count} server(s): ${servers.map((server) => `pid ${server.pid} at ${server.url}`).join(', ')}`);
  return { servers, profileDirectory };
}

async function stopInstances(context: SuiteContext, servers: ServerProcess[], profileDirectory: string | undefined): Promise<void> {
  for (const server of servers) {
    const highWater = server.highWaterMb();
    await server.stop();
    if (highWater !== undefined) context.log(`  server pid ${server.pid} VmHWM over its life: ${Math.round(highWater)} MB`);
    const lastLines = tail(server.logFile, 5);
    if (lastLines.trim() !== '') context.log(`  last lines of ${path.basename(server.logFile)}:\n${lastLines}`);
  }
  if (!profileDirectory) return;
  for (const file of fs.readdirSync(profileDirectory).filter((name) => name.endsWith('.cpuprofile'))) {
    context.log(`\nServer CPU profile (${file}), top 15 by self time:\n${formatProfile(path.join(profileDirectory, file), 15)}`);
  }
}

/**
 * POST /allocate over HTTP against the built server: for each instance count (PostgreSQL only;
 * SQLite serves one process), for each client count, clients spread round-robin over the instances.
 */
export async function benchDispatcherHttp(context: SuiteContext, database: BenchDatabase): Promise<MeasuredRow[]> {
  const { options, log } = context;
  const instanceCounts = database.kind === 'postgres' ? options.instances : [1];
  const adminPassword = crypto.randomBytes(18).toString('base64url');
  let nodes: BenchNode[] | undefined;
  const rows: MeasuredRow[] = [];
  for (const count of instanceCounts) {
    const { servers, profileDirectory } = await startInstances(context, database, count, adminPassword);
    if (!nodes) {
      nodes = await registerNodes((servers[0] as ServerProcess).url, adminPassword, Math.max(...options.clients));
      log(`  registered ${nodes.length} nodes`);
    }
    for (const clients of options.clients) {
      for (const server of servers) server.resetPeakRss();
      const targets = allocateTargets(
        nodes.slice(0, clients),
        servers.map((server) => server.url),
        options.maxAssets,
      );
      const result = await runHttpLoad(
        targets,
        windowFor(
          options,
          servers.map((server) => server.pid),
          database.postgresDatabase,
        ),
      );
      const serverRssMb = servers.map((server) => server.peakRssMb());
      const verification = await checkThenReset(database, verifyAllocations);
      const row: MeasuredRow = {
        suite: 'dispatcher',
        subject: 'POST /allocate',
        database: database.kind,
        instances: count,
        connections: database.kind === 'postgres' ? '10 per instance' : '1',
        result,
        serverRssMb,
        check: {
          duplicates: verification.duplicates,
          holdersMismatch: verification.holdersMismatch,
          handedOut: result.itemsTotal,
          stored: verification.activeAllocations,
        },
      };
      log(summaryLine(row));
      log(`    calls in each second: ${result.callsPerSecondOverTime.join(' ')}`);
      rows.push(row);
    }
    await stopInstances(context, servers, profileDirectory);
  }
  return rows;
}

/** One line per finished run, printed as the bench goes. */
export function summaryLine(row: MeasuredRow): string {
  const { result } = row;
  const latency = result.latencyMs
    ? `, p50 ${result.latencyMs.p50.toFixed(1)} / p99 ${result.latencyMs.p99.toFixed(1)} / max ${result.latencyMs.max.toFixed(1)} ms`
    : '';
  const rss = row.serverRssMb ? `, server RSS ${row.serverRssMb.map((mb) => Math.round(mb)).join('+')} MB` : '';
  const duplicates = row.check.duplicates === undefined ? '' : `, duplicates ${row.check.duplicates}`;
  return (
    `  ${row.suite} ${row.subject}${row.database ? ` on ${row.database}` : ''}${row.instances ? `, ${row.instances} instance(s)` : ''}, ${result.concurrency} concurrent: ` +
    `${Math.round(result.okPerSecond)} calls/s, ${Math.round(result.itemsPerSecond)} items/s${latency}, errors ${result.errors}${rss}${duplicates}, ` +
    `CPU server ${result.cpu.serverPercent}% / load gen ${result.cpu.loadGeneratorPercent}% / postgres ${result.cpu.postgresPercent}%`
  );
}
