import crypto from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { legacyName } from '../src/agent/storage.js';
import { createAgentLauncher, keptCopy, waitFor as waitUntil } from './agent-process.js';
import { createTestDatabase, dialects, type TestDatabase } from './databases.js';
import { freePort } from './free-port.js';
import { contentOf, sha256Of, startFileServer, type FileServer } from './file-server.js';
import { registerNode, startTestServer, type TestServer } from './server.js';
import type { Config } from '../src/config.js';

const MIB = 1024 * 1024;
const MINUTE = 60_000;

let scratch: string;
let server: TestServer;
const launcher = createAgentLauncher(
  () => scratch,
  () => server.url,
);
const waitFor = <T>(what: string, check: () => Promise<T | undefined | false> | T | undefined | false, timeoutMs = 60_000) =>
  waitUntil(what, check, launcher.describe, timeoutMs);

/** What a hostile or broken catalog and source can do to a volunteer's agent, and what it must not. */
describe.each(dialects)('the agent against hostile catalogs and sources on %s', (dialect) => {
  let database: TestDatabase;
  let files: FileServer;
  let enrollment: string;

  const start = async (overrides: Partial<Config> = {}) => {
    server = await startTestServer(database, { tokenTtlMs: 7 * 24 * 60 * MINUTE, loginRateLimitPerMinute: 1000, ...overrides });
    enrollment = (await server.api.post('/api/enrollment-tokens', {}, server.adminToken)).body.token;
  };
  beforeEach(async () => {
    database = await createTestDatabase(dialect);
    files = await startFileServer();
    scratch = fs.mkdtempSync(path.join(os.tmpdir(), 'dispatcher-agent-safety-'));
  });
  afterEach(async () => {
    launcher.killAll();
    await files.close();
    await server?.stop();
    await database.drop();
    fs.rmSync(scratch, { recursive: true, force: true });
  });

  const importAssets = async (assets: Record<string, unknown>[]) => expect((await server.api.post('/assets', assets, server.adminToken)).status).toBe(200);
  const assetRow = (id: string) => database.handle.db.selectFrom('assets').selectAll().where('id', '=', id).executeTakeFirstOrThrow();
  const allocationsOf = (id: string) => database.handle.db.selectFrom('allocations').selectAll().where('asset_id', '=', id).orderBy('id').execute();
  /** /allocate calls answered so far, from the server's own request metrics. */
  const pollCount = async () => {
    const text = (await server.api.get('/metrics')).body as string;
    return text
      .split('\n')
      .filter((line) => line.startsWith('dispatcher_http_request_duration_seconds_count') && line.includes('route="/allocate"'))
      .reduce((sum, line) => sum + Number(line.split(' ').at(-1)), 0);
  };
  /** Waits until the agents asked for work `more` more times than now. */
  const waitForPolls = async (more: number) => {
    const before = await pollCount();
    await waitFor(`${more} more requests for work`, async () => (await pollCount()) >= before + more);
  };
  const stop = async (agent: ReturnType<typeof launcher.start>) => {
    agent.child.kill('SIGTERM');
    return agent.exited;
  };

  it('keeps ids that a lossy name mapping would merge as distinct, correct files inside DATA_DIRECTORY', async () => {
    await start();
    const long = 'x'.repeat(200);
    const ids = ['a:b', 'a/b', 'a b', 'ａ:b', `${long}-one`, `${long}-two`, 'dup/1', 'dup:1'];
    await importAssets(
      ids.map((id, index) => ({
        id,
        name: 'data.bin',
        url: `${files.url}/files/f${index}?size=${(index + 1) * 65_536}`,
        size_bytes: (index + 1) * 65_536,
        priority: 5,
      })),
    );
    const agent = launcher.start('node-ids', enrollment, { AGENT_CONCURRENCY: '8' });
    await waitFor(
      'every id to be rescued',
      async () => (await database.handle.db.selectFrom('assets').select('state').where('state', '=', 'rescued').execute()).length === ids.length,
    );
    const paths = ids.map((id) => keptCopy(agent.dataDirectory, id));
    expect(new Set(paths).size).toBe(ids.length);
    ids.forEach((_, index) => {
      const file = paths[index] as string;
      expect(file.startsWith(path.join(agent.dataDirectory, 'assets') + path.sep)).toBe(true);
      expect(crypto.createHash('sha256').update(fs.readFileSync(file)).digest('hex')).toBe(sha256Of(`f${index}`, (index + 1) * 65_536));
    });
    expect(await stop(agent)).toBe(0);
  });

  it('fetches a mis-sized asset once per node, not in a loop, and flags it suspect after two nodes; the reasons are kept', async () => {
    await start({ mismatchConfirmations: 2 });
    await importAssets([{ id: 'wrong-size', name: 'w.bin', url: `${files.url}/lying/w?size=${2 * MIB}`, size_bytes: MIB, priority: 9, replicas_target: 2 }]);
    const first = launcher.start('node-1', enrollment);
    await waitFor(
      'the first mismatch',
      async () => (await allocationsOf('wrong-size')).length === 1 && (await allocationsOf('wrong-size'))[0]?.state === 'failed',
    );
    // Let it ask for work many times: it must not get the asset back.
    await waitForPolls(8);
    expect(files.requests.filter((request) => request.kind === 'lying')).toHaveLength(1);
    expect(await allocationsOf('wrong-size')).toHaveLength(1);
    const [failed] = await allocationsOf('wrong-size');
    expect(failed?.end_reason).toMatch(/^size_mismatch: /);
    const second = launcher.start('node-2', enrollment);
    await waitFor('the asset to be suspect', async () => (await assetRow('wrong-size')).state === 'suspect');
    expect(files.requests.filter((request) => request.kind === 'lying')).toHaveLength(2);
    const strikes = await database.handle.db.selectFrom('nodes').select('strikes').execute();
    expect(strikes.map((row) => row.strikes)).toEqual([0, 0]);
    expect(await stop(first)).toBe(0);
    expect(await stop(second)).toBe(0);
  });

  it('does not give an unreachable source back to the same node within its cooldown', async () => {
    await start();
    const port = await freePort();
    await importAssets([{ id: 'unreachable', name: 'u.bin', url: `http://127.0.0.1:${port}/u.bin`, size_bytes: MIB, priority: 9 }]);
    const agent = launcher.start('node-u', enrollment, { AGENT_RETRIES: '1' });
    await waitFor('the failure', async () => (await allocationsOf('unreachable')).some((allocation) => allocation.state === 'released'));
    await waitForPolls(8);
    const tries = await allocationsOf('unreachable');
    expect(tries).toHaveLength(1);
    expect(tries[0]).toMatchObject({ state: 'released' });
    expect(tries[0]?.end_reason).toMatch(/^source_unreachable: /);
    expect((await database.handle.db.selectFrom('nodes').select('strikes').executeTakeFirstOrThrow()).strikes).toBe(0);
    expect(await stop(agent)).toBe(0);
  });

  it('never grows a file past its expected size on an endless body, and keeps nothing of it', async () => {
    await start();
    await importAssets([
      { id: 'endless-known', name: 'e.bin', url: `${files.url}/endless/known`, size_bytes: MIB, priority: 9 },
      { id: 'endless-unknown', name: 'e2.bin', url: `${files.url}/endless/unknown`, priority: 8 },
    ]);
    const agent = launcher.start('node-e', enrollment);
    await waitFor('both to be given back', async () => {
      const rows = await database.handle.db.selectFrom('allocations').select('state').where('state', '!=', 'active').execute();
      return rows.length === 2;
    });
    const reasons = (await database.handle.db.selectFrom('allocations').select(['asset_id', 'state', 'end_reason']).orderBy('asset_id').execute()).map(
      (row) => [row.asset_id, row.state, row.end_reason?.split(':')[0]],
    );
    // A catalogued size makes the overrun the node's strike until others see it; an unknown one is nobody's.
    expect(reasons).toEqual([
      ['endless-known', 'failed', 'oversize'],
      ['endless-unknown', 'released', 'oversize'],
    ]);
    const leftovers = fs.readdirSync(path.join(agent.dataDirectory, 'partial'));
    expect(leftovers).toEqual([]);
    // The source sent what the socket buffers took; the agent wrote nothing past the limit (unit-tested to the byte).
    expect(files.sent.get('known') ?? 0).toBeGreaterThan(MIB);
    expect(await stop(agent)).toBe(0);
  });

  it('sends nothing to a source for its Retry-After once it answered 429, on any node', async () => {
    await start({ sourceHostMaxActive: 1 });
    await importAssets(
      [1, 2, 3].map((index) => ({ id: `busy-${index}`, name: `b${index}.bin`, url: `${files.url}/busy/b${index}`, size_bytes: MIB, priority: 9 })),
    );
    const agents = [launcher.start('node-p', enrollment), launcher.start('node-q', enrollment)];
    await waitFor(
      'the 429 to pause the host',
      async () => (await database.handle.db.selectFrom('source_hosts').select('paused_until').where('paused_until', '>', 0).execute()).length === 1,
    );
    await waitForPolls(8);
    expect(files.requests.filter((request) => request.kind === 'busy')).toHaveLength(1);
    const paused = await database.handle.db.selectFrom('source_hosts').select(['host', 'paused_until']).executeTakeFirstOrThrow();
    expect(Number(paused.paused_until)).toBe(server.clock.now() + 30_000);
    expect(files.requests.every((request) => request.userAgent?.startsWith('dispatcher-agent/'))).toBe(true);
    // Once the 30 s are over (the control plane's clock), the host is served again.
    const grantedBefore = await database.handle.db.selectFrom('allocations').select('id').execute();
    server.clock.advance(30_000);
    await waitFor(
      'a new grant on that host',
      async () => (await database.handle.db.selectFrom('allocations').select('id').execute()).length > grantedBefore.length,
    );
    for (const agent of agents) expect(await stop(agent)).toBe(0);
  });

  it('refuses a redirect into loopback by default, and says which variable allows it', async () => {
    await start();
    const outside = await startFileServer({ host: '127.0.0.2' });
    try {
      await importAssets([
        {
          id: 'inward',
          name: 'i.bin',
          url: `${outside.url}/bounce/i?to=${encodeURIComponent(`${files.url}/files/secret?size=1024`)}`,
          size_bytes: 1024,
          priority: 9,
        },
      ]);
      // 127.0.0.2 stands for a public source here: allowed by name, as a campus mirror would be.
      const agent = launcher.start('node-r', enrollment, { AGENT_ALLOW_PRIVATE_NETWORKS: '127.0.0.2/32' });
      await waitFor('the refusal', async () => (await allocationsOf('inward')).some((allocation) => allocation.state === 'released'));
      const [refused] = await allocationsOf('inward');
      expect(refused?.end_reason).toMatch(/^refused_destination: .*127\.0\.0\.1.*AGENT_ALLOW_PRIVATE_NETWORKS/);
      expect(outside.requests).toHaveLength(1);
      expect(files.requests).toEqual([]);
      expect(await stop(agent)).toBe(0);
    } finally {
      await outside.close();
    }
  });

  it('exits 0 on SIGTERM while the control plane cannot be reached', async () => {
    await start();
    const agent = launcher.start('node-alone', enrollment, { API_ENDPOINT: `http://127.0.0.1:${await freePort()}` });
    await waitFor('a retry', () => /retrying in/.test(agent.output()));
    expect(await stop(agent)).toBe(0);
  });

  it('names nodes after their host with a suffix of their own, and explains a name clash', async () => {
    await start();
    const [one, two] = [
      launcher.start('first-default', enrollment, { NODE_NAME: undefined }),
      launcher.start('second-default', enrollment, { NODE_NAME: undefined }),
    ];
    await waitFor('both to register', () => /registered as node/.test(one.output()) && /registered as node/.test(two.output()));
    const names = (await database.handle.db.selectFrom('nodes').select('name').execute()).map((row) => row.name).sort();
    const host = os
      .hostname()
      .replace(/[^A-Za-z0-9_.-]/g, '-')
      .slice(0, 58);
    expect(names).toHaveLength(2);
    for (const name of names) expect(name).toMatch(new RegExp(`^${host.replace(/[.]/g, '\\.')}-[0-9a-f]{4}$`));
    // The name is kept: a restart registers nothing new.
    expect(await stop(one)).toBe(0);
    const again = launcher.start('first-default', 'not-needed', { NODE_NAME: undefined });
    await waitFor('the restart to register', () => /registered as node/.test(again.output()));
    expect(await database.handle.db.selectFrom('nodes').select('id').execute()).toHaveLength(2);
    // A name another machine holds (registered from elsewhere): the volunteer is told what to set.
    await registerNode(server, 'taken-elsewhere');
    const clash = launcher.start('third', enrollment, { NODE_NAME: 'taken-elsewhere' });
    expect(await clash.exited).toBe(1);
    expect(clash.output()).toMatch(/already registered by another node\. Choose another NODE_NAME \(or --node-name\)/);
    expect(await stop(again)).toBe(0);
    expect(await stop(two)).toBe(0);
  });

  it('takes over a data directory of the old layout without downloading again, and clears stale partials', async () => {
    await start();
    const size = 256 * 1024;
    await importAssets([
      { id: 'old:copy', name: 'old copy.bin', url: `${files.url}/files/old?size=${size}`, size_bytes: size, priority: 9 },
      { id: 'other', name: 'other.bin', url: `${files.url}/files/other?size=${size}`, size_bytes: size, priority: 1 },
    ]);
    const node = await registerNode(server, 'node-old');
    expect((await server.api.post('/allocate', { free_space_gb: 10, node_id: 'node-old', max_assets: 1 }, node.token)).status).toBe(200);
    expect(
      (await server.api.post('/complete', { asset_id: 'old:copy', node_id: 'node-old', sha256: sha256Of('old', size), bytes: size }, node.token)).status,
    ).toBe(200);
    const dataDirectory = path.join(scratch, 'node-old');
    const legacy = path.join(dataDirectory, 'assets', legacyName('old:copy'));
    fs.mkdirSync(legacy, { recursive: true });
    fs.writeFileSync(path.join(legacy, legacyName('old copy.bin')), Buffer.concat([...contentOf('old', 0, size)]));
    fs.mkdirSync(path.join(dataDirectory, 'partial'), { recursive: true });
    fs.writeFileSync(path.join(dataDirectory, 'partial', `${legacyName('gone-elsewhere')}.part`), 'stale');
    fs.mkdirSync(path.join(dataDirectory, 'assets', 'empty-folder'));
    fs.writeFileSync(
      path.join(dataDirectory, 'node-identity.json'),
      JSON.stringify({ api_endpoint: server.url, node_id: node.id, name: node.name, node_token: node.token }),
      { mode: 0o600 },
    );

    const agent = launcher.start('node-old', 'not-needed');
    await waitFor('the other asset to be rescued', async () => (await assetRow('other')).state === 'rescued');
    expect(agent.output()).toMatch(/kept 1 copies/);
    expect(fs.readFileSync(keptCopy(dataDirectory, 'old:copy')).equals(Buffer.concat([...contentOf('old', 0, size)]))).toBe(true);
    expect(files.requests.filter((request) => request.name === 'old')).toEqual([]);
    expect(fs.existsSync(legacy)).toBe(false);
    expect(fs.existsSync(path.join(dataDirectory, 'assets', 'empty-folder'))).toBe(false);
    expect(fs.readdirSync(path.join(dataDirectory, 'partial'))).toEqual([]);
    expect(await stop(agent)).toBe(0);
  });
});
