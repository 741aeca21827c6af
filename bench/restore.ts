import crypto from 'node:crypto';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { performance } from 'node:perf_hooks';
import { setTimeout as sleep } from 'node:timers/promises';
import { createEnrollmentToken, getJson, logIn, postJson, signUpAndLogIn } from './api.js';
import { createBenchDatabase, type BenchDatabase } from './databases.js';
import type { SuiteContext } from './http-suites.js';
import type { DatabaseKind } from './options.js';
import { formatProfile } from './profile-top.js';
import { readMemoryMb } from './procfs.js';
import { roundLine, runRound, type RestorePath, type RestoreRound, type Target } from './restore-round.js';
import { startAgent, startFileServer, startServer, tail, type ChildProcessHandle, type ChildServer, type ServerProcess } from './server.js';

const MIB = 1024 * 1024;
const ASSET_ID = 'restore-file';

/** The restore suite on one database: the agent's first download, then the rounds, alternated. */
export interface RestoreRun {
  database: DatabaseKind;
  bytes: number;
  /** From the import to `copies: 1`: the agent's download from the file server, hashing and completion. */
  agentDownloadSeconds: number;
  /** The control plane's VmRSS just before the first round, and its VmHWM (peak over its life) after the last. */
  serverRssBeforeMb: number;
  serverHighWaterMb: number;
  agentHighWaterMb: number;
  rounds: RestoreRound[];
}

/**
 * The restore suite: one generated file served by a plain Node file server; on each database a
 * control plane and one real agent, which downloads and completes the file; then rounds of the bench
 * client downloading it directly from the file server and relayed by the control plane from the
 * agent's copy, alternated so that drift hits both.
 */
export async function benchRestore(context: SuiteContext): Promise<RestoreRun[]> {
  const { options, log } = context;
  log('\n== restore ==');
  const scratch = await fs.mkdtemp(path.join(os.tmpdir(), 'dispatcher-bench-restore-'));
  context.onCleanup('remove restore scratch directory', () => fs.rm(scratch, { recursive: true, force: true }));
  const file = path.join(scratch, 'restore.bin');
  const generated = performance.now();
  const sha256 = await writeRandomFile(file, options.restoreBytes);
  log(`  generated ${mib(options.restoreBytes)} MiB in ${secondsSince(generated).toFixed(1)} s: ${file}`);
  const files = await startFileServer(context.projectRoot, file, path.join(context.outDirectory, 'file-server.log'));
  context.onCleanup('stop restore file server', () => files.stop());
  log(`  file server: pid ${files.pid} at ${files.url}/file`);
  const runs: RestoreRun[] = [];
  for (const kind of options.databases) {
    const run = await restoreOn(context, kind, { files, scratch, sha256 });
    runs.push(run);
  }
  await files.stop();
  return runs;
}

/** Random bytes (nothing a cache or a compressor could shorten), written in 8 MiB pieces; returns their sha256. */
async function writeRandomFile(file: string, bytes: number): Promise<string> {
  const hash = crypto.createHash('sha256');
  const piece = Buffer.allocUnsafe(Math.min(bytes, 8 * MIB));
  const handle = await fs.open(file, 'w');
  try {
    for (let written = 0; written < bytes;) {
      const part = piece.subarray(0, Math.min(piece.length, bytes - written));
      crypto.randomFillSync(part);
      hash.update(part);
      await handle.write(part);
      written += part.length;
    }
  } finally {
    await handle.close();
  }
  return hash.digest('hex');
}

interface Shared {
  files: ChildServer;
  scratch: string;
  sha256: string;
}

/** The processes of one database's run, running and holding a counted copy. */
interface Fleet {
  database: BenchDatabase;
  server: ServerProcess;
  agent: ChildProcessHandle;
  userToken: string;
  dataDirectory: string;
  agentDownloadSeconds: number;
  profileDirectory?: string;
}

async function restoreOn(context: SuiteContext, kind: DatabaseKind, shared: Shared): Promise<RestoreRun> {
  const { options, log } = context;
  log(`\n  -- ${kind} --`);
  const fleet = await startFleet(context, kind, shared);
  const { server, agent } = fleet;
  const serverRssBeforeMb = readMemoryMb(server.pid, 'VmRSS') ?? 0;
  const targets: Record<RestorePath, Target> = {
    direct: { url: `${shared.files.url}/file`, headers: {} },
    relayed: { url: `${server.url}/assets/${ASSET_ID}/content?prefer_source=false`, headers: { authorization: `Bearer ${fleet.userToken}` } },
  };
  const pids = { server: server.pid, agent: agent.pid, fileServer: shared.files.pid };
  const expected = { bytes: options.restoreBytes, sha256: shared.sha256, postgresDatabase: fleet.database.postgresDatabase };
  const rounds: RestoreRound[] = [];
  for (let round = 1; round <= options.restoreRounds; round += 1) {
    for (const which of ['direct', 'relayed'] as const) {
      const result = await runRound(which, round, targets[which], pids, expected);
      log(roundLine(result));
      rounds.push(result);
    }
  }
  const run: RestoreRun = {
    database: kind,
    bytes: options.restoreBytes,
    agentDownloadSeconds: fleet.agentDownloadSeconds,
    serverRssBeforeMb,
    serverHighWaterMb: readMemoryMb(server.pid, 'VmHWM') ?? 0,
    agentHighWaterMb: readMemoryMb(agent.pid, 'VmHWM') ?? 0,
    rounds,
  };
  log(
    `  control plane VmRSS before the rounds ${Math.round(serverRssBeforeMb)} MB, VmHWM after them ${Math.round(run.serverHighWaterMb)} MB; agent VmHWM ${Math.round(run.agentHighWaterMb)} MB`,
  );
  await stopFleet(fleet, log);
  return run;
}

/** A fresh database and control plane, the file imported, a user, and one agent that downloaded and completed it. */
async function startFleet(context: SuiteContext, kind: DatabaseKind, shared: Shared): Promise<Fleet> {
  const { options, log } = context;
  const database = await createBenchDatabase(kind, options.pgUrl);
  context.onCleanup(`remove restore ${kind} database`, () => database.destroy());
  const profileDirectory = options.profile ? path.join(context.outDirectory, 'profiles', `${context.stamp}-restore-${kind}`) : undefined;
  for (const role of profileDirectory ? ['server', 'agent'] : []) await fs.mkdir(path.join(profileDirectory as string, role), { recursive: true });
  const server = await startServer({
    projectRoot: context.projectRoot,
    // The suite measures relaying a counted copy, not how a copy comes to count: the one new agent's
    // copy counts on its checksum alone (no spot checks, no vetting audits, no plausible-rate check
    // of its loopback download).
    databaseEnv: { ...database.serverEnv, VERIFY_SPOT_CHECKS: '0', VETTING_AUDITS: '0', MAX_PLAUSIBLE_RATE_MB_S: '0' },
    logFile: path.join(context.outDirectory, `server-restore-${kind}.log`),
    profileDirectory: profileDirectory && path.join(profileDirectory, 'server'),
  });
  context.onCleanup(`stop restore ${kind} server`, () => server.stop());
  log(`  control plane: pid ${server.pid} at ${server.url} on ${database.location}`);

  const adminToken = await logIn(server.url, 'admin', server.adminPassword);
  const userToken = await signUpAndLogIn(server.url, 'bench-restorer', crypto.randomBytes(12).toString('base64url'));
  const asset = {
    id: ASSET_ID,
    url: `${shared.files.url}/file`,
    name: 'restore.bin',
    size_bytes: options.restoreBytes,
    sha256: shared.sha256,
    priority: 10,
    replicas_target: 1,
  };
  await postJson(`${server.url}/assets`, [asset], adminToken);
  const imported = performance.now();
  const dataDirectory = path.join(shared.scratch, `agent-${kind}`);
  const agent = startAgent({
    projectRoot: context.projectRoot,
    apiEndpoint: server.url,
    enrollmentToken: await createEnrollmentToken(server.url, adminToken),
    dataDirectory,
    nodeName: `restore-agent-${kind}`,
    logFile: path.join(context.outDirectory, `agent-restore-${kind}.log`),
    profileDirectory: profileDirectory && path.join(profileDirectory, 'agent'),
  });
  context.onCleanup(`stop restore ${kind} agent`, () => agent.stop());
  log(`  agent: pid ${agent.pid}, data in ${dataDirectory}`);
  await waitForCopy(server.url, adminToken, agent, options.restoreBytes);
  const agentDownloadSeconds = (performance.now() - imported) / 1000;
  log(`  the agent holds a counted copy after ${agentDownloadSeconds.toFixed(1)} s (download, hash, complete)`);
  return { database, server, agent, userToken, dataDirectory, agentDownloadSeconds, profileDirectory };
}

async function stopFleet(fleet: Fleet, log: (line: string) => void): Promise<void> {
  await fleet.agent.stop();
  await fleet.server.stop();
  const lastLines = tail(fleet.server.logFile, 5);
  if (lastLines.trim() !== '') log(`  last lines of ${path.basename(fleet.server.logFile)}:\n${lastLines}`);
  await fleet.database.destroy();
  await fs.rm(fleet.dataDirectory, { recursive: true, force: true });
  if (fleet.profileDirectory) await printProfiles(fleet.profileDirectory, log);
}

/** With --profile: the control plane's and the agent's top 15 functions by self time, over their whole lives. */
async function printProfiles(directory: string, log: (line: string) => void): Promise<void> {
  for (const role of ['server', 'agent']) {
    const files = await fs.readdir(path.join(directory, role)).catch(() => [] as string[]);
    for (const file of files.filter((name) => name.endsWith('.cpuprofile'))) {
      log(
        `\n  ${role === 'server' ? 'Control plane' : 'Agent'} CPU profile (${file}), top 15 by self time:\n${formatProfile(path.join(directory, role, file), 15)}`,
      );
    }
  }
}

/** Until GET /assets/{id} counts one copy; fails early when the agent exits, late after a generous floor of 10 MiB/s. */
async function waitForCopy(baseUrl: string, adminToken: string, agent: ChildProcessHandle, bytes: number): Promise<void> {
  let exitCode: number | null | undefined;
  void agent.exited.then((code) => {
    exitCode = code;
  });
  const deadline = Date.now() + 120_000 + (bytes / (10 * MIB)) * 1000;
  while (Date.now() < deadline) {
    if (exitCode !== undefined) throw new Error(`the agent exited with code ${exitCode} before it held a copy:\n${tail(agent.logFile)}`);
    const asset = await getJson<{ copies: number; state: string }>(`${baseUrl}/assets/${ASSET_ID}`, adminToken);
    if (asset.copies >= 1) return;
    await sleep(250);
  }
  throw new Error(`the agent held no counted copy in time:\n${tail(agent.logFile)}`);
}

const mib = (bytes: number) => (bytes / MIB).toLocaleString('en-US', { maximumFractionDigits: 1 });
const secondsSince = (since: number) => (performance.now() - since) / 1000;
