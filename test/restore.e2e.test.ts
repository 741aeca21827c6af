import crypto from 'node:crypto';
import fs from 'node:fs';
import http from 'node:http';
import os from 'node:os';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { createAgentLauncher, keptCopy, waitFor as waitUntil, type AgentProcess } from './agent-process.js';
import { runCli } from './cli-runner.js';
import { createTestDatabase, dialects, type TestDatabase } from './databases.js';
import { sha256Of, startFileServer, type FileServer } from './file-server.js';
import { startTestServer, type TestServer } from './server.js';

const MIB = 1024 * 1024;
const MINUTE = 60_000;
const SIZES: Record<string, number> = { 'sst-daily': 24 * MIB, 'sst-monthly': 3 * MIB, readme: 40_000 };

let scratch: string;
// The agents' control plane: on PostgreSQL another instance than the one the requester asks.
let agentsServer: TestServer;
const launcher = createAgentLauncher(
  () => scratch,
  () => agentsServer.url,
);
const waitFor = <T>(what: string, check: () => Promise<T | undefined | false> | T | undefined | false, timeoutMs = 60_000) =>
  waitUntil(what, check, () => launcher.describe(), timeoutMs);

describe.each(dialects)('getting the data back end to end on %s', (dialect) => {
  let database: TestDatabase;
  let server: TestServer;
  let files: FileServer;
  let userToken: string;

  beforeEach(async () => {
    database = await createTestDatabase(dialect);
    const settings = {
      nodeTimeoutMs: 5 * MINUTE,
      sourceGoneConfirmations: 1,
      transferStartMs: 10_000,
      sourceAllowPrivate: true,
      tokenTtlMs: 7 * 24 * 60 * MINUTE,
    };
    server = await startTestServer(database, settings);
    agentsServer = dialect === 'postgres' ? await startTestServer(database, settings, server.clock) : server;
    files = await startFileServer();
    scratch = fs.mkdtempSync(path.join(os.tmpdir(), 'dispatcher-restore-'));
    await server.api.post('/auth/signup', { username: 'archivist', password: 'password-1' });
    userToken = (await server.api.post('/auth/login', { username: 'archivist', password: 'password-1' })).body.token;
  });
  afterEach(async () => {
    launcher.killAll();
    await files.close().catch(() => undefined);
    if (agentsServer !== server) await agentsServer.stop();
    await server.stop();
    await database.drop();
    fs.rmSync(scratch, { recursive: true, force: true });
  });

  const fetchCli = (args: string[]) => runCli(['fetch', ...args], { API_ENDPOINT: server.url, DISPATCHER_TOKEN: userToken });
  const copiesOf = (id: string) =>
    database.handle.db
      .selectFrom('allocations')
      .innerJoin('nodes', 'nodes.id', 'allocations.node_id')
      .select(['allocations.id', 'nodes.name', 'allocations.state'])
      .where('asset_id', '=', id)
      .where('allocations.state', '=', 'completed')
      .where('allocations.verified', '=', 1)
      .orderBy('allocations.id')
      .execute();
  const openTransfer = () =>
    database.handle.db
      .selectFrom('transfers')
      .innerJoin('nodes', 'nodes.id', 'transfers.node_id')
      .select(['nodes.name'])
      .where('state', '=', 'sending')
      .executeTakeFirst();
  const sha256File = (file: string) => crypto.createHash('sha256').update(fs.readFileSync(file)).digest('hex');

  /** Three agents rescue every asset onto two of them, then the source goes dark. */
  async function rescueThenSwitchOff(): Promise<AgentProcess[]> {
    await server.api.post(
      '/assets',
      Object.entries(SIZES).map(([name, size]) => ({
        id: name,
        name: `${name}.nc`,
        url: `${files.url}/files/${name}?size=${size}`,
        size_bytes: size,
        sha256: sha256Of(name, size),
        priority: 8,
        replicas_target: 2,
        dataset: 'sea-surface-temperature',
        organization: 'noaa',
      })),
      server.adminToken,
    );
    const enrollment = (await server.api.post('/api/enrollment-tokens', {}, server.adminToken)).body.token;
    const agents = ['node-a', 'node-b', 'node-c'].map((name) => launcher.start(name, enrollment, { AGENT_CONCURRENCY: '1' }));
    for (const name of Object.keys(SIZES)) {
      await waitFor(`${name} to be rescued`, async () => (await server.api.get(`/assets/${name}`, userToken)).body.state === 'rescued');
    }
    await files.close();
    return agents;
  }

  it('restores every file byte for byte after the source went dark, across a killed holder, a corrupted copy and a deleted one, and exports a valid bag', async () => {
    const agents = await rescueThenSwitchOff();
    const byName = new Map(agents.map((agent) => [agent.name, agent]));

    // 1. Every asset, through dispatcher fetch.
    const out = path.join(scratch, 'restored');
    fs.mkdirSync(out);
    const fetched = await fetchCli([...Object.keys(SIZES), '--out', out]);
    if (fetched.code !== 0) console.log('fetch', fetched.code, fetched.stdout, launcher.describe());
    expect(fetched.code, fetched.stderr).toBe(0);
    for (const [name, size] of Object.entries(SIZES)) expect(sha256File(path.join(out, `${name}.nc`))).toBe(sha256Of(name, size));

    // 2. The holder serving a restore is killed midway: another holder finishes it.
    let killed: AgentProcess | undefined;
    const received = await new Promise<Buffer>((resolve, reject) => {
      const chunks: Buffer[] = [];
      const request = http.get(`${server.url}/assets/sst-daily/content`, { headers: { authorization: `Bearer ${userToken}` } }, (response) => {
        expect(response.statusCode).toBe(200);
        response.once('data', (first: Buffer) => {
          chunks.push(first);
          response.pause();
          void (async () => {
            const serving = await waitFor('a holder to be serving', openTransfer);
            killed = byName.get(serving.name);
            killed?.child.kill('SIGKILL');
            response.on('data', (chunk: Buffer) => chunks.push(chunk));
            response.resume();
          })().catch(reject);
        });
        response.on('end', () => resolve(Buffer.concat(chunks)));
        response.on('error', reject);
      });
      request.on('error', reject);
    });
    expect(crypto.createHash('sha256').update(received).digest('hex')).toBe(sha256Of('sst-daily', SIZES['sst-daily'] as number));

    // The killed holder comes back, its copies intact.
    await killed?.exited;
    byName.set(killed!.name, launcher.start(killed!.name, '', {}));
    await waitFor('the killed holder to be back', async () => (await openTransfer()) === undefined && (await copiesOf('sst-monthly')).length === 2);

    // 3. The first holder asked for sst-monthly has its copy altered on disk: it is caught, and the restore is still exact.
    const [firstHolder] = await copiesOf('sst-monthly');
    const altered = byName.get(firstHolder!.name) as AgentProcess;
    const file = keptCopy(altered.dataDirectory, 'sst-monthly');
    const handle = fs.openSync(file, 'r+');
    fs.writeSync(handle, Buffer.from('tampered'), 0, 8, 1000);
    fs.closeSync(handle);
    const again = await fetchCli(['sst-monthly', '--out', path.join(scratch, 'again.nc')]);
    expect(again.code, again.stderr).toBe(0);
    expect(sha256File(path.join(scratch, 'again.nc'))).toBe(sha256Of('sst-monthly', SIZES['sst-monthly'] as number));
    await waitFor('the altered copy to be lost', async () => (await copiesOf('sst-monthly')).every((copy) => copy.name !== altered.name));

    // 4. The bag of the dataset, checked line by line.
    const bag = path.join(scratch, 'bag');
    const exported = await fetchCli(['--dataset', 'sea-surface-temperature', '--bag', bag]);
    expect(exported.code, exported.stderr).toBe(0);
    expectValidBag(bag, Object.keys(SIZES).length);
  }, 240_000);

  it('rebuilds a copy deleted from disk on another node from a peer while the source stays down', async () => {
    const agents = await rescueThenSwitchOff();
    const [lostOn, kept] = await copiesOf('sst-monthly');
    const owner = agents.find((agent) => agent.name === lostOn!.name) as AgentProcess;
    fs.rmSync(keptCopy(owner.dataDirectory, 'sst-monthly'));
    owner.child.kill('SIGTERM');
    await owner.exited;
    // At its next start the agent finds the copy gone and says so.
    launcher.start(owner.name, '', {});
    await waitFor('the deleted copy to stop counting', async () => (await copiesOf('sst-monthly')).length === 1);
    // The nodes without a copy find the source dark, then get the asset from the copy left; cooldowns lapse on the server's clock,
    // in steps small enough that holders heartbeating every second stay online (nodeTimeoutMs) for the restore.
    await waitFor(
      'the asset to be rescued again from its copy',
      async () => {
        server.clock.advance(15_000);
        return (await server.api.get('/assets/sst-monthly', userToken)).body.state === 'rescued';
      },
      120_000,
    );
    const copies = await copiesOf('sst-monthly');
    expect(copies).toHaveLength(2);
    expect(copies.map((copy) => copy.name)).toContain(kept!.name);
    const events = (await server.api.get('/events?kind=asset.source_gone', server.adminToken)).body.items;
    expect(events.some((event: { subject_id: string }) => event.subject_id === 'sst-monthly')).toBe(true);
  }, 240_000);

  it('answers NO_HOLDER_ONLINE once every holder has stopped', async () => {
    const agents = await rescueThenSwitchOff();
    for (const agent of agents) agent.child.kill('SIGTERM');
    await Promise.all(agents.map((agent) => agent.exited));
    const response = await fetch(`${server.url}/assets/readme/content`, { headers: { authorization: `Bearer ${userToken}` } });
    expect(response.status).toBe(503);
    expect(response.headers.get('retry-after')).toBeTruthy();
    expect(await response.json()).toMatchObject({ code: 'NO_HOLDER_ONLINE', copies: 2 });
  }, 120_000);
});

/** An independent check of a BagIt bag: every payload file listed with its sha256, nothing else, and the Payload-Oxum. */
function expectValidBag(bag: string, files: number): void {
  expect(fs.readFileSync(path.join(bag, 'bagit.txt'), 'utf8')).toMatch(/^BagIt-Version: 1\.0\nTag-File-Character-Encoding: UTF-8\n$/);
  const lines = fs.readFileSync(path.join(bag, 'manifest-sha256.txt'), 'utf8').split('\n').filter(Boolean);
  expect(lines).toHaveLength(files);
  let octets = 0;
  for (const line of lines) {
    const [digest, relative] = line.split(/ +/, 2) as [string, string];
    expect(relative.startsWith('data/noaa/sea-surface-temperature/')).toBe(true);
    const bytes = fs.readFileSync(path.join(bag, relative));
    octets += bytes.length;
    expect(crypto.createHash('sha256').update(bytes).digest('hex')).toBe(digest);
  }
  const info = fs.readFileSync(path.join(bag, 'bag-info.txt'), 'utf8');
  expect(info).toContain(`Payload-Oxum: ${octets}.${files}`);
  const listed = fs.readdirSync(path.join(bag, 'data/noaa/sea-surface-temperature'));
  expect(listed).toHaveLength(files);
}
