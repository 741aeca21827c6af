import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { sql } from 'kysely';
import { afterEach, describe, expect, it } from 'vitest';
import { openDatabase, SQLITE_FILE_NAME, type DatabaseHandle } from '../src/db/database.js';
import { checkAllocations, CONSISTENT, describeAnswers, startAllocationLoad, unexpectedAnswers, type AllocationLoad } from './allocation-load.js';
import { runCli } from './cli-runner.js';
import { killHard, runServerToExit, seedAssetsAndNodes, serverEnv, spawnServer, stopGracefully, waitFor, type ServerProcess } from './server-process.js';
import { fillUp, mountTmpfs, tmpfsUnavailable, type Tmpfs } from './tmpfs.js';

/**
 * Faults of a single server on SQLite, with real `dispatcher serve` processes, real HTTP and nodes
 * registered and allocating as agents do. Every wait polls for a condition under a deadline.
 */

const started: ServerProcess[] = [];
const cleanups: (() => void | Promise<void>)[] = [];
let load: AllocationLoad | undefined;
const context = () =>
  `${load ? describeAnswers(load.answers) : ''}\n${started.map((server) => `--- ${server.name}:\n${server.output().slice(-4000)}`).join('\n')}`;

afterEach(async () => {
  await load?.stop();
  load = undefined;
  await Promise.all(started.splice(0).map(killHard));
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
});

function scratchDirectory(): string {
  const directory = fs.mkdtempSync(path.join(os.tmpdir(), 'dispatcher-faults-'));
  cleanups.push(() => fs.rmSync(directory, { recursive: true, force: true }));
  return directory;
}

async function startServer(name: string, dataDirectory: string): Promise<ServerProcess> {
  const server = await spawnServer(name, serverEnv({ DATA_DIRECTORY: dataDirectory }));
  started.push(server);
  return server;
}

/** Opens the data directory's database as another process would, after the server is gone. */
function openData(dataDirectory: string): DatabaseHandle {
  const handle = openDatabase({ databaseUrl: undefined, dataDirectory });
  cleanups.push(() => handle.close());
  return handle;
}

async function integrityOf(handle: DatabaseHandle): Promise<string[]> {
  const { rows } = await sql<{ integrity_check: string }>`pragma integrity_check`.execute(handle.db);
  return rows.map((row) => row.integrity_check);
}

describe('a SQLite server killed mid-load', () => {
  it('keeps every acknowledged allocation and completion across SIGKILL and restart, with the database intact', async () => {
    const dataDirectory = scratchDirectory();
    const first = await startServer('first', dataDirectory);
    const nodes = await seedAssetsAndNodes(first, 3000, 8);
    load = startAllocationLoad(nodes, [first.url]);
    await waitFor('grants and completions under load', () => load!.grants.length >= 400 && load!.completed.length >= 30, 30_000, context);

    await killHard(first);
    expect(first.child.signalCode).toBe('SIGKILL');
    // Each client drops the instance at its first refused or reset request, and ends with none left.
    await load.stop();
    const unexpected = unexpectedAnswers(load.answers).filter((answer) => typeof answer.status !== 'string');
    expect(unexpected, describeAnswers(load.answers)).toEqual([]);

    // The restarted server opens the same files (SQLite replays its WAL) and serves from them.
    const second = await startServer('second', dataDirectory);
    const more = await second.api.post('/allocate', { node_id: nodes[0]!.name, free_space_gb: 1_000_000, max_assets: 1 }, nodes[0]!.token);
    expect(more.status, JSON.stringify(more.body)).toBe(200);
    expect(await stopGracefully(second), second.output()).toBe(0);

    const handle = openData(dataDirectory);
    expect(await integrityOf(handle)).toEqual(['ok']);
    expect(await checkAllocations(handle.db, load)).toEqual(CONSISTENT);
  }, 60_000);
});

/**
 * Making a directory read-only: for root (CI), whom permission bits do not stop, a tmpfs remounted
 * read-only (EROFS); for anyone else, mode 0555 (EACCES).
 */
const asRoot = process.getuid?.() === 0;
const readOnlyUnavailable = asRoot && tmpfsUnavailable !== undefined;

describe('a SQLite server on a read-only or full data directory', () => {
  function readOnlyDirectory(): { directory: string; set(readOnly: boolean): void } {
    if (asRoot) {
      const tmpfs: Tmpfs = mountTmpfs(16 * 1024 * 1024);
      cleanups.push(() => tmpfs.unmount());
      return { directory: tmpfs.directory, set: (readOnly) => tmpfs.remount(readOnly ? 'ro' : 'rw') };
    }
    const directory = scratchDirectory();
    return { directory, set: (readOnly) => fs.chmodSync(directory, readOnly ? 0o555 : 0o755) };
  }

  it.skipIf(readOnlyUnavailable)(
    'refuses to start on a read-only data directory, exiting non-zero with a message naming it, and leaves its database intact',
    async () => {
      const data = readOnlyDirectory();
      const env = (directory: string) => serverEnv({ DATA_DIRECTORY: directory });

      // A new deployment whose volume is read-only: no database yet.
      data.set(true);
      const empty = await runServerToExit(env(data.directory));
      expect(empty.code, empty.output).not.toBe(0);
      expect(empty.output).toContain(data.directory);
      expect(empty.output).toMatch(/not writable/);
      expect(empty.output).not.toMatch(/\n\s+at /); // a message, not a stack trace

      // A data directory to be created inside a read-only one.
      const nested = path.join(data.directory, 'dispatcher');
      const inside = await runServerToExit(env(nested));
      expect(inside.code, inside.output).not.toBe(0);
      expect(inside.output).toContain(nested);

      // An existing database on a volume that has become read-only (remounted, or a read-only mount).
      data.set(false);
      const migrated = await runCli(['migrate'], { DATA_DIRECTORY: data.directory, LOG_LEVEL: 'warn' });
      expect(migrated.code, migrated.stderr).toBe(0);
      const before = fs.readFileSync(path.join(data.directory, SQLITE_FILE_NAME));
      data.set(true);
      const existing = await runServerToExit(env(data.directory));
      expect(existing.code, existing.output).not.toBe(0);
      expect(existing.output).toContain(data.directory);
      expect(existing.output).toMatch(/not writable/);
      expect(fs.readFileSync(path.join(data.directory, SQLITE_FILE_NAME)).equals(before)).toBe(true);

      data.set(false);
      const server = await startServer('writable-again', data.directory);
      expect((await server.api.get('/health')).status).toBe(200);
      expect(await stopGracefully(server)).toBe(0);
      expect(await integrityOf(openData(data.directory))).toEqual(['ok']);
    },
    60_000,
  );

  /*
   * A data directory that becomes read-only under a running server is not tested: Linux refuses to
   * remount a filesystem read-only while a file on it is open for writing (EBUSY, and SQLite keeps the
   * database and its WAL open), and permission changes do not reach descriptors already open. What an
   * operator sees after such a change is the next start: the read-only test above.
   */
  it.skipIf(tmpfsUnavailable !== undefined)(
    'answers 503 with a clear detail while its disk is full, then works again once space is freed, the database intact',
    async () => {
      const tmpfs = mountTmpfs(16 * 1024 * 1024);
      cleanups.push(() => tmpfs.unmount());
      const server = await startServer('full', tmpfs.directory);
      const nodes = await seedAssetsAndNodes(server, 1000, 4);
      load = startAllocationLoad(nodes, [server.url], { maxAssets: 1 });
      await waitFor('grants under load', () => load!.grants.length >= 100, 30_000, context);

      const filledAt = Date.now();
      const filler = fillUp(tmpfs.directory);
      const refusedSince = (since: number) => load!.answers.filter((answer) => answer.status === 503 && answer.at > since).length;
      await waitFor('503s while the disk is full', () => server.child.exitCode === null && refusedSince(filledAt) >= 20, 20_000, context);

      const freedAt = Date.now();
      fs.rmSync(filler);
      await waitFor('grants again once space is freed', () => server.child.exitCode === null && load!.grantsSince(freedAt) >= 20, 20_000, context);
      await load.stop();

      const refused = load.answers.filter((answer) => answer.status === 503);
      expect(refused.filter((answer) => answer.at < filledAt)).toEqual([]);
      for (const answer of refused) {
        expect(answer.code).toBe('DATABASE_UNAVAILABLE');
        expect(answer.detail).toEqual(expect.stringMatching(/disk .*full/i));
      }
      expect(
        unexpectedAnswers(load.answers).filter((answer) => answer.status !== 503),
        describeAnswers(load.answers),
      ).toEqual([]);
      expect(await stopGracefully(server), server.output()).toBe(0);
      const handle = openData(tmpfs.directory);
      expect(await integrityOf(handle)).toEqual(['ok']);
      expect(await checkAllocations(handle.db, load)).toEqual(CONSISTENT);
    },
    60_000,
  );
});
