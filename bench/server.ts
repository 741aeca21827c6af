import { spawn, type ChildProcess } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { request } from 'undici';
import { readMemoryMb } from './procfs.js';

/** A server child process the bench started, health-checked, with its memory polled. */
export interface ChildServer {
  pid: number;
  url: string;
  logFile: string;
  /** Peak VmRSS (MiB) seen by the 200 ms poller since the last reset. */
  peakRssMb(): number;
  resetPeakRss(): void;
  /** VmHWM: the peak RSS over the server's whole life. */
  highWaterMb(): number | undefined;
  /** SIGTERM (so --cpu-prof can write its profile), SIGKILL after 15 s; safe to call twice. */
  stop(): Promise<void>;
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

async function startChild(options: { projectRoot: string; args: string[]; env: NodeJS.ProcessEnv; port: number; logFile: string }): Promise<ChildServer> {
  // bench/out/ is not in a fresh clone; a suite run alone must make it too.
  fs.mkdirSync(path.dirname(options.logFile), { recursive: true });
  const log = fs.openSync(options.logFile, 'w');
  const child = spawn(process.execPath, options.args, { cwd: options.projectRoot, env: options.env, stdio: ['ignore', log, log] });
  fs.closeSync(log);
  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
  // Last resort: never leave a server running when the bench itself dies.
  const killOnExit = () => child.kill('SIGKILL');
  process.once('exit', killOnExit);

  const url = `http://127.0.0.1:${options.port}`;
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

  try {
    await waitUntilHealthy(url, child, exited, options.logFile);
  } catch (error) {
    await stop();
    throw error;
  }
  return {
    pid: child.pid as number,
    url,
    logFile: options.logFile,
    peakRssMb: () => Math.max(peak, readMemoryMb(child.pid as number, 'VmRSS') ?? 0),
    resetPeakRss: () => {
      peak = 0;
    },
    highWaterMb: () => readMemoryMb(child.pid as number, 'VmHWM'),
    stop,
  };
}

async function waitUntilHealthy(url: string, child: ChildProcess, exited: Promise<number | null>, logFile: string): Promise<void> {
  let dead = false;
  void exited.then(() => {
    dead = true;
  });
  const deadline = Date.now() + 60_000;
  while (Date.now() < deadline) {
    if (dead) throw new Error(`server exited with code ${child.exitCode} before it was healthy:\n${tail(logFile)}`);
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
