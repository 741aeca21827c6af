import { spawn } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { request } from 'undici';
import { readMemoryMb } from './procfs.js';

/** A child process the bench started, with its memory polled. */
export interface ChildProcessHandle {
  pid: number;
  logFile: string;
  /** Peak VmRSS (MiB) seen by the 200 ms poller since the last reset. */
  peakRssMb(): number;
  resetPeakRss(): void;
  /** VmHWM: the peak RSS over the server's whole life. */
  highWaterMb(): number | undefined;
  /** SIGTERM (so --cpu-prof can write its profile), SIGKILL after 15 s; safe to call twice. */
  stop(): Promise<void>;
  /** Settles with the exit code when the process ends (null when a signal ended it). */
  exited: Promise<number | null>;
}

/** A server child process, health-checked before it is handed out. */
export interface ChildServer extends ChildProcessHandle {
  url: string;
}

/** `dispatcher serve`, with the admin password it was started with. */
export interface ServerProcess extends ChildServer {
  adminPassword: string;
}

export interface ServerOptions {
  projectRoot: string;
  databaseEnv: Record<string, string>;
  logFile: string;
  /** When set, the server runs with --cpu-prof and writes its profile here on exit. */
  profileDirectory?: string;
  /** Instances sharing a database must share the admin password; a random one when absent. */
  adminPassword?: string;
}

/** A port the kernel says is free right now. */
export async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const probe = net.createServer();
    probe.once('error', reject);
    probe.listen(0, '127.0.0.1', () => {
      const { port } = probe.address() as net.AddressInfo;
      probe.close(() => resolve(port));
    });
  });
}

/**
 * The server's environment, built from scratch so variables in the caller's shell (DATABASE_URL,
 * PRIORITY_POLICY, …) cannot change what is measured.
 */
function serverEnvironment(port: number, adminPassword: string, databaseEnv: Record<string, string>): NodeJS.ProcessEnv {
  return {
    PATH: process.env.PATH ?? '/usr/bin:/bin',
    HOME: process.env.HOME ?? '/tmp',
    NODE_ENV: 'production',
    PORT: String(port),
    DISPATCHER_HOST: '127.0.0.1',
    LOG_LEVEL: 'warn',
    // The highest value config.ts accepts: 50 nodes at thousands of requests/s stay far below it.
    NODE_RATE_LIMIT_PER_MINUTE: '10000000',
    LOGIN_RATE_LIMIT_PER_MINUTE: '1000000',
    DISPATCHER_ADMIN_PASSWORD: adminPassword,
    PRIORITY_POLICY: 'none',
    // The synthetic catalog lies on one host and its nodes never finish: with the per-host cap
    // the fleet would hold SOURCE_HOST_MAX_ACTIVE allocations in all. The queues compared take no
    // such care either.
    SOURCE_HOST_MAX_ACTIVE: '0',
    ...databaseEnv,
  };
}

export async function startServer(options: ServerOptions): Promise<ServerProcess> {
  const port = await freePort();
  const adminPassword = options.adminPassword ?? crypto.randomBytes(18).toString('base64url');
  const profileFlags = options.profileDirectory ? ['--cpu-prof', '--cpu-prof-dir', options.profileDirectory] : [];
  const child = await startChild({
    projectRoot: options.projectRoot,
    args: [...profileFlags, path.join('dist', 'cli.js'), 'serve'],
    env: serverEnvironment(port, adminPassword, options.databaseEnv),
    port,
    logFile: options.logFile,
  });
  return { ...child, adminPassword };
}

/**
 * The Fastify hello-world app (`bench/fastify-hello.ts`): Fastify's own limit on this machine.
 * tsx only transpiles the file when it loads; the request path runs as plain JavaScript.
 */
export async function startFastifyHello(projectRoot: string, logFile: string): Promise<ChildServer> {
  const port = await freePort();
  return startChild({
    projectRoot,
    args: ['--import', 'tsx', path.join('bench', 'fastify-hello.ts')],
    env: { PATH: process.env.PATH ?? '/usr/bin:/bin', HOME: process.env.HOME ?? '/tmp', NODE_ENV: 'production', PORT: String(port) },
    port,
    logFile,
  });
}

/** The restore suite's file server (`bench/file-server.ts`), serving `file` at `<url>/file`. */
export async function startFileServer(projectRoot: string, file: string, logFile: string): Promise<ChildServer> {
  const port = await freePort();
  return startChild({
    projectRoot,
    args: ['--import', 'tsx', path.join('bench', 'file-server.ts')],
    env: { PATH: process.env.PATH ?? '/usr/bin:/bin', HOME: process.env.HOME ?? '/tmp', NODE_ENV: 'production', PORT: String(port), BENCH_FILE: file },
    port,
    logFile,
  });
}

export interface AgentOptions {
  projectRoot: string;
  apiEndpoint: string;
  enrollmentToken: string;
  dataDirectory: string;
  nodeName: string;
  logFile: string;
  /** When set, the agent runs with --cpu-prof and writes its profile here on exit. */
  profileDirectory?: string;
}

/**
 * A real `dispatcher agent` from the build, with an environment built from scratch: a 1 s heartbeat
 * and a 0.5 s poll so the run does not wait on timers, loopback sources allowed, no reserve, no scrub
 * (its re-hashing would compete with the transfers measured).
 */
export function startAgent(options: AgentOptions): ChildProcessHandle {
  return spawnChild({
    projectRoot: options.projectRoot,
    args: [...(options.profileDirectory ? ['--cpu-prof', '--cpu-prof-dir', options.profileDirectory] : []), path.join('dist', 'cli.js'), 'agent'],
    env: {
      PATH: process.env.PATH ?? '/usr/bin:/bin',
      HOME: process.env.HOME ?? '/tmp',
      NODE_ENV: 'production',
      API_ENDPOINT: options.apiEndpoint,
      NODE_ENROLLMENT_TOKEN: options.enrollmentToken,
      DATA_DIRECTORY: options.dataDirectory,
      NODE_NAME: options.nodeName,
      AGENT_ALLOW_PRIVATE_NETWORKS: 'true',
      AGENT_HEARTBEAT_SECONDS: '1',
      AGENT_POLL_SECONDS: '0.5',
      AGENT_RESERVE_GB: '0',
      AGENT_SCRUB_MB_S: '0',
    },
    logFile: options.logFile,
  });
}

interface ChildOptions {
  projectRoot: string;
  args: string[];
  env: NodeJS.ProcessEnv;
  logFile: string;
}

async function startChild(options: ChildOptions & { port: number }): Promise<ChildServer> {
  const child = spawnChild(options);
  const url = `http://127.0.0.1:${options.port}`;
  try {
    await waitUntilHealthy(url, child.exited, options.logFile);
  } catch (error) {
    await child.stop();
    throw error;
  }
  return { ...child, url };
}

/** Spawns `node <args>` with its output in `logFile`, polling its VmRSS every 200 ms until it stops. */
export function spawnChild(options: ChildOptions): ChildProcessHandle {
  // bench/out/ is not in a fresh clone; a suite run alone must make it too.
  fs.mkdirSync(path.dirname(options.logFile), { recursive: true });
  const log = fs.openSync(options.logFile, 'w');
  const child = spawn(process.execPath, options.args, { cwd: options.projectRoot, env: options.env, stdio: ['ignore', log, log] });
  fs.closeSync(log);
  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
  // Last resort: never leave a child running when the bench itself dies.
  const killOnExit = () => child.kill('SIGKILL');
  process.once('exit', killOnExit);

  let peak = 0;
  const poller = setInterval(() => {
    peak = Math.max(peak, readMemoryMb(child.pid as number, 'VmRSS') ?? 0);
  }, 200);
  poller.unref();

  let stopping: Promise<void> | undefined;
  const stop = () =>
    (stopping ??= (async () => {
      clearInterval(poller);
      if (child.exitCode === null && child.signalCode === null) {
        child.kill('SIGTERM');
        const done = await Promise.race([exited.then(() => true), sleep(15_000).then(() => false)]);
        if (!done) {
          child.kill('SIGKILL');
          await exited;
        }
      }
      process.off('exit', killOnExit);
    })());

  return {
    pid: child.pid as number,
    logFile: options.logFile,
    peakRssMb: () => Math.max(peak, readMemoryMb(child.pid as number, 'VmRSS') ?? 0),
    resetPeakRss: () => {
      peak = 0;
    },
    highWaterMb: () => readMemoryMb(child.pid as number, 'VmHWM'),
    stop,
    exited,
  };
}

async function waitUntilHealthy(url: string, exited: Promise<number | null>, logFile: string): Promise<void> {
  let exitCode: number | null | undefined;
  void exited.then((code) => {
    exitCode = code;
  });
  const deadline = Date.now() + 60_000;
  while (Date.now() < deadline) {
    if (exitCode !== undefined) throw new Error(`server exited with code ${exitCode} before it was healthy:\n${tail(logFile)}`);
    try {
      const response = await request(`${url}/health`);
      await response.body.dump();
      if (response.statusCode === 200) return;
    } catch {
      // Not listening yet.
    }
    await sleep(100);
  }
  throw new Error(`server not healthy after 60 s:\n${tail(logFile)}`);
}

/** The last lines of a log file, to show why the server failed. */
export function tail(file: string, lines = 30): string {
  try {
    return fs.readFileSync(file, 'utf8').trimEnd().split('\n').slice(-lines).join('\n');
  } catch {
    return '(no log)';
  }
}
