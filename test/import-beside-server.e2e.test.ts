import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { openDatabase } from '../src/db/database.js';
import { describeAnswers, startAllocationLoad, type AllocationLoad } from './allocation-load.js';
import { runCli } from './cli-runner.js';
import { generatePackages, startFakePortal, type FakePortal } from './fake-portal.js';
import { killHard, seedAssetsAndNodes, serverEnv, spawnServer, waitFor, type ServerProcess } from './server-process.js';

const cleanups: (() => unknown)[] = [];
afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
});

describe('dispatcher import next to a server on the same SQLite file', () => {
  it('waits for the server\'s write lock instead of failing with "database is locked", under /allocate load', async () => {
    const dataDirectory = fs.mkdtempSync(path.join(os.tmpdir(), 'dispatcher-import-load-'));
    cleanups.push(() => fs.rmSync(dataDirectory, { recursive: true, force: true }));
    const portal: FakePortal = await startFakePortal();
    cleanups.push(() => portal.close());
    portal.setPackages('busy', generatePackages(1200, 4));
    const server: ServerProcess = await spawnServer('server', serverEnv({ DATA_DIRECTORY: dataDirectory, SOURCE_HOST_MAX_ACTIVE: '0' }));
    cleanups.push(() => killHard(server));
    const nodes = await seedAssetsAndNodes(server, 3000, 8);
    const load: AllocationLoad = startAllocationLoad(nodes, [server.url], { maxAssets: 1 });
    cleanups.push(() => load.stop());
    await waitFor(
      'the load to be granted work',
      () => load.grants.length >= 100,
      30_000,
      () => describeAnswers(load.answers),
    );

    const importStarted = Date.now();
    const run = await runCli(['import', 'ckan', `${portal.url}/busy`, '--rows', '100'], {
      DATA_DIRECTORY: dataDirectory,
      LOG_LEVEL: 'warn',
      CATALOG_REQUESTS_PER_SECOND: '1000',
    });
    expect(run.stderr, run.stderr).not.toMatch(/database is locked/);
    expect(run.code, run.stderr).toBe(0);
    expect(run.stdout).toMatch(/Imported 4800 resources from 1200 datasets \(12 pages\)/);
    // The server kept granting while the import wrote: they shared the file, neither stopped.
    expect(load.grantsSince(importStarted)).toBeGreaterThan(0);
    await load.stop();

    const handle = openDatabase({ databaseUrl: undefined, dataDirectory });
    cleanups.push(() => handle.close());
    const imported = await handle.db.selectFrom('assets').select('id').where('source', '=', `${portal.url}/busy`).execute();
    expect(imported).toHaveLength(4800);
  }, 120_000);
});
