import { afterEach, describe, expect, it } from 'vitest';
import { openDatabase } from '../src/db/database.js';
import { PRIORITY_LOOP, WORKER_CHECK_LOOP } from '../src/loops.js';
import { checkAllocations, CONSISTENT, describeAnswers, startAllocationLoad, unexpectedAnswers, type AllocationLoad } from './allocation-load.js';
import { createTestDatabase, dialects, POSTGRES_URL } from './databases.js';
import { createPrivatePostgres, privatePostgresUnavailable } from './private-postgres.js';
import { killHard, loopPassesRun, seedAssetsAndNodes, serverEnv, spawnServer, stopGracefully, waitFor, type ServerProcess } from './server-process.js';

/**
 * Faults of a deployment on PostgreSQL, with real `dispatcher serve` processes, real HTTP and nodes
 * registered and allocating as agents do. Every wait polls for a condition under a deadline.
 */

// Loops with short intervals, so that passes after a fault show within seconds: the priority loop
// every 1.2 s and the worker check every second (there are no workers: each pass is a query).
const FAST_LOOPS = { AUTO_UPDATE_INTERVAL_MINUTES: '0.02', WORKER_PROBE_INTERVAL_SECONDS: '1' };
const WATCHED_LOOPS = [PRIORITY_LOOP, WORKER_CHECK_LOOP];

const started: ServerProcess[] = [];
/** Run after each test, last registered first, once its servers are gone. */
const cleanups: (() => Promise<void>)[] = [];
let load: AllocationLoad | undefined;
const outputs = () => started.map((server) => `--- ${server.name} (${server.url}):\n${server.output().slice(-4000)}`).join('\n');
const context = () => `${load ? describeAnswers(load.answers) : ''}\n${outputs()}`;

/** True while the process runs; throws with its output once it has exited, so a crash fails at once. */
function alive(instance: ServerProcess): true {
  if (instance.child.exitCode !== null || instance.child.signalCode !== null) throw new Error(`${instance.name} exited:\n${instance.output()}`);
  return true;
}

async function startInstances(count: number, env: Record<string, string | undefined>): Promise<ServerProcess[]> {
  return Promise.all(
    Array.from({ length: count }, async (_, index) => {
      const instance = await spawnServer(`instance-${index + 1}`, serverEnv({ ...FAST_LOOPS, ...env }));
      started.push(instance);
      return instance;
    }),
  );
}

afterEach(async () => {
  await load?.stop();
  load = undefined;
  await Promise.all(started.splice(0).map(killHard));
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
});

describe.skipIf(!dialects.includes('postgres'))('three instances sharing PostgreSQL', () => {
  it('keeps serving when one is SIGKILLed under load: nothing granted is lost or doubled, and its loop passes move to the others', async () => {
    const database = await createTestDatabase('postgres');
    cleanups.push(() => database.drop());
    const instances = await startInstances(3, { DATABASE_URL: POSTGRES_URL, DATABASE_SCHEMA: database.options.databaseSchema, DATABASE_POOL_SIZE: '4' });
    const nodes = await seedAssetsAndNodes(instances[0]!, 3000, 9);
    load = startAllocationLoad(
      nodes,
      instances.map((instance) => instance.url),
    );

    // The victim is an instance that has been running loop passes, while the load runs on all three.
    const victim = await waitFor(
      'grants on every instance and an instance with loop passes of its own',
      async () => {
        const granted = instances.every((instance) => load!.grants.some((grant) => grant.target === instance.url));
        if (!granted || load!.grants.length < 200) return undefined;
        for (const instance of instances) {
          const passes = await loopPassesRun(instance);
          if (WATCHED_LOOPS.every((loop) => (passes[loop] ?? 0) > 0)) return instance;
        }
        return undefined;
      },
      30_000,
      context,
    );
    const survivors = instances.filter((instance) => instance !== victim);
    const killedAt = Date.now();
    await killHard(victim);
    load.targets.delete(victim.url);
    expect(victim.child.signalCode).toBe('SIGKILL');
    const before = await Promise.all(survivors.map(loopPassesRun));

    // The survivors keep granting, and run the passes of every loop between them.
    await waitFor('grants after the kill', () => load!.grantsSince(killedAt) >= 200, 30_000, context);
    await waitFor(
      'two passes of each watched loop on the survivors',
      async () => {
        const now = await Promise.all(survivors.map(loopPassesRun));
        const ran = (loop: string) => now.reduce((sum, passes, index) => sum + (passes[loop] ?? 0) - (before[index]![loop] ?? 0), 0);
        return WATCHED_LOOPS.every((loop) => ran(loop) >= 2);
      },
      30_000,
      context,
    );
    await load.stop();

    // The loops table agrees: every watched loop's latest pass started after the kill, and succeeded.
    const loops = await database.handle.db.selectFrom('loops').selectAll().where('name', 'in', WATCHED_LOOPS).execute();
    expect(loops).toHaveLength(WATCHED_LOOPS.length);
    for (const loop of loops) {
      expect(loop.last_started_at, loop.name).toBeGreaterThan(killedAt);
      expect(loop.last_error, loop.name).toBeNull();
    }
    // The only failures are the requests that were in flight to the killed instance.
    const unexpected = unexpectedAnswers(load.answers).filter((answer) => !(answer.target === victim.url && typeof answer.status === 'string'));
    expect(unexpected, describeAnswers(load.answers)).toEqual([]);
    expect(await checkAllocations(database.handle.db, load)).toEqual(CONSISTENT);
    for (const survivor of survivors) expect(await stopGracefully(survivor), survivor.output()).toBe(0);
  }, 90_000);
});

const postgresRequired = process.env.DISPATCHER_TEST_POSTGRES === 'required';
const skipPrivate = privatePostgresUnavailable !== undefined && !postgresRequired;
if (skipPrivate) console.warn(`\n*** The PostgreSQL restart test is SKIPPED: ${privatePostgresUnavailable}. ***\n`);

describe('PostgreSQL restarted under load', () => {
  it.skipIf(skipPrivate)(
    'answers 503 with a detail while it is down, reconnects by itself once it is back, and loses nothing',
    async () => {
      // Its own cluster: the shared one at :5432 must keep serving the other test files.
      const cluster = await createPrivatePostgres();
      cleanups.push(() => cluster.destroy());
      const instances = await startInstances(2, { DATABASE_URL: cluster.url, DATABASE_POOL_SIZE: '4' });
      const nodes = await seedAssetsAndNodes(instances[0]!, 2000, 6);
      const handle = openDatabase({ databaseUrl: cluster.url, dataDirectory: '' });
      cleanups.push(() => handle.close().catch(() => undefined));
      load = startAllocationLoad(
        nodes,
        instances.map((instance) => instance.url),
      );
      await waitFor(
        'grants on both instances',
        () => instances.every((instance) => load!.grants.filter((grant) => grant.target === instance.url).length >= 50),
        30_000,
        context,
      );

      // A crash: no checkpoint, every connection cut, recovery from the WAL at the next start.
      const stoppedAt = Date.now();
      const logged = instances.map((instance) => instance.output().length);
      await cluster.stop('immediate');
      const answeredSince = (instance: ServerProcess, status: number, since: number) =>
        load!.answers.filter((answer) => answer.target === instance.url && answer.path === '/allocate' && answer.status === status && answer.at > since).length;
      // Down long enough for both instances to refuse requests and to fail loop passes, and to live on.
      await waitFor(
        '503s and failed loop passes on both instances',
        () =>
          instances.every(
            (instance, index) =>
              alive(instance) && answeredSince(instance, 503, stoppedAt) >= 10 && instance.output().slice(logged[index]).includes('loop claim failed'),
          ),
        20_000,
        context,
      );
      for (const instance of instances) {
        const health = await instance.api.get('/health');
        expect(health).toMatchObject({ status: 503, body: { status: 'unhealthy' } });
      }

      const restartedAt = Date.now();
      await cluster.start();
      await waitFor(
        '200s from both instances again',
        () => instances.every((instance) => alive(instance) && answeredSince(instance, 200, restartedAt) > 0),
        30_000,
        () => `${context()}\n${cluster.log()}`,
      );
      await waitFor(
        'loop passes after the restart',
        async () => {
          const loops = await handle.db.selectFrom('loops').select(['name', 'last_started_at']).where('name', 'in', WATCHED_LOOPS).execute();
          return loops.length === WATCHED_LOOPS.length && loops.every((loop) => (loop.last_started_at ?? 0) > restartedAt);
        },
        20_000,
        context,
      );
      await load.stop();

      for (const instance of instances) expect((await instance.api.get('/health')).status).toBe(200);
      // Down, every request got a clean 503 with a detail; never a 500, a hang or a dropped connection.
      const refused = load.answers.filter((answer) => answer.status === 503);
      expect(refused.length).toBeGreaterThan(0);
      expect(refused.filter((answer) => answer.at < stoppedAt)).toEqual([]);
      for (const answer of refused) {
        expect(answer.code).toBe('DATABASE_UNAVAILABLE');
        expect(answer.detail).toEqual(expect.stringMatching(/database/i));
      }
      expect(
        unexpectedAnswers(load.answers).filter((answer) => answer.status !== 503),
        describeAnswers(load.answers),
      ).toEqual([]);
      expect(await checkAllocations(handle.db, load)).toEqual(CONSISTENT);
      for (const instance of instances) expect(await stopGracefully(instance), instance.output()).toBe(0);
    },
    90_000,
  );
});
