import { execFile, execFileSync } from 'node:child_process';
import fs from 'node:fs';
import { freePort } from './free-port.js';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';

const run = promisify(execFile);

/**
 * A throw-away PostgreSQL cluster of this test's own, on a free loopback port, that the test may
 * stop and start: the shared one at :5432 serves every other test file running in parallel.
 * PostgreSQL refuses to run as root, so as root its binaries run as the `postgres` user (runuser).
 */
export interface PrivatePostgres {
  url: string;
  port: number;
  /** `pg_ctl stop`: `immediate` is a crash (no checkpoint, recovery at the next start), `fast` a clean stop. */
  stop(mode: 'fast' | 'immediate'): Promise<void>;
  /** Starts it again on the same port and data directory, once it accepts connections. */
  start(): Promise<void>;
  /** Stops it if running and deletes its files. Never throws. */
  destroy(): Promise<void>;
  /** PostgreSQL's own log, for failure messages. */
  log(): string;
}

const asRoot = process.getuid?.() === 0;

function findBinDirectory(): string | undefined {
  if (process.env.PG_BIN) return process.env.PG_BIN;
  try {
    const bindir = execFileSync('pg_config', ['--bindir'], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] }).trim();
    if (fs.existsSync(path.join(bindir, 'initdb'))) return bindir;
  } catch {
    // No pg_config: look in Debian's versioned directories.
  }
  const versions = fs.existsSync('/usr/lib/postgresql') ? fs.readdirSync('/usr/lib/postgresql').sort((a, b) => Number(b) - Number(a)) : [];
  return versions.map((version) => `/usr/lib/postgresql/${version}/bin`).find((bindir) => fs.existsSync(path.join(bindir, 'initdb')));
}

function postgresUser(): { uid: number; gid: number } | undefined {
  try {
    const uid = Number(execFileSync('id', ['-u', 'postgres'], { encoding: 'utf8' }).trim());
    const gid = Number(execFileSync('id', ['-g', 'postgres'], { encoding: 'utf8' }).trim());
    return { uid, gid };
  } catch {
    return undefined;
  }
}

const bindir = findBinDirectory();
const owner = asRoot ? postgresUser() : undefined;

/** Why a private cluster cannot be made here, or undefined when it can. */
export const privatePostgresUnavailable: string | undefined = !bindir
  ? 'no PostgreSQL server binaries (initdb, pg_ctl) were found (set PG_BIN, or install postgresql)'
  : asRoot && !owner
    ? 'running as root, and there is no "postgres" user to run PostgreSQL as'
    : undefined;

/** initdb into a new temporary directory, then start it. */
export async function createPrivatePostgres(): Promise<PrivatePostgres> {
  if (privatePostgresUnavailable) throw new Error(`cannot create a private PostgreSQL: ${privatePostgresUnavailable}`);
  const directory = fs.mkdtempSync(path.join(os.tmpdir(), 'dispatcher-pg-'));
  const data = path.join(directory, 'data');
  const logFile = path.join(directory, 'postgres.log');
  if (owner) fs.chownSync(directory, owner.uid, owner.gid);
  const tool = (name: string, args: string[]) => {
    const command = path.join(bindir as string, name);
    return asRoot ? run('runuser', ['-u', 'postgres', '--', command, ...args], { timeout: 60_000 }) : run(command, args, { timeout: 60_000 });
  };
  const port = await freePort();
  const cluster: PrivatePostgres = {
    url: `postgres://postgres@127.0.0.1:${port}/postgres`,
    port,
    async stop(mode) {
      await tool('pg_ctl', ['stop', '-D', data, '-m', mode, '-w', '-t', '30']);
    },
    async start() {
      // fsync off: the test kills PostgreSQL, never the machine, so the page cache keeps every write.
      const options = `-p ${port} -c listen_addresses=127.0.0.1 -k ${directory} -c fsync=off -c max_connections=60`;
      await tool('pg_ctl', ['start', '-D', data, '-l', logFile, '-w', '-t', '30', '-o', options]);
    },
    async destroy() {
      await tool('pg_ctl', ['stop', '-D', data, '-m', 'immediate', '-w', '-t', '30']).catch(() => undefined);
      fs.rmSync(directory, { recursive: true, force: true });
    },
    log: () => (fs.existsSync(logFile) ? fs.readFileSync(logFile, 'utf8') : ''),
  };
  try {
    await tool('initdb', ['-D', data, '-U', 'postgres', '--auth=trust', '--no-sync', '--encoding=UTF8', '--locale=C']);
    await cluster.start();
  } catch (error) {
    const log = cluster.log();
    await cluster.destroy();
    throw new Error(`could not create a private PostgreSQL in ${directory}: ${(error as Error).message}\n${log}`, { cause: error });
  }
  return cluster;
}
