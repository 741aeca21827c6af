import fs from 'node:fs';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { createAgentLauncher, keptCopy, waitFor as waitUntil } from './agent-process.js';
import { createTestDatabase, dialects, type TestDatabase } from './databases.js';
import { sha256Of, startFileServer, type FileServer } from './file-server.js';
import { startTestServer, type TestServer } from './server.js';

const MIB = 1024 * 1024;
const MINUTE = 60_000;

const launcher = createAgentLauncher(
  () => scratch,
  () => server.url,
);
let scratch: string;
let server: TestServer;
const agentOutputs = () => launcher.describe();
const waitFor = <T>(what: string, check: () => Promise<T | undefined | false> | T | undefined | false, timeoutMs = 60_000) =>
  waitUntil(what, check, agentOutputs, timeoutMs);

describe.each(dialects)('rescue nodes end to end on %s', (dialect) => {
  let database: TestDatabase;
  let files: FileServer;

  beforeEach(async () => {
    database = await createTestDatabase(dialect);
    server = await startTestServer(database, {
      nodeTimeoutMs: 5 * MINUTE,
      nodeDeadGraceMs: 5 * MINUTE,
      sourceGoneConfirmations: 2,
      tokenTtlMs: 7 * 24 * 60 * MINUTE,
    });
    files = await startFileServer();
    scratch = fs.mkdtempSync(path.join(os.tmpdir(), 'dispatcher-agents-'));
  });
  afterEach(async () => {
    launcher.killAll();
    await files.close();
    await server.stop();
    await database.drop();
    fs.rmSync(scratch, { recursive: true, force: true });
  });

  /**
   * A reverse proxy in front of the control plane that answers the first `/complete` as a busy
   * control plane does (503 DATABASE_BUSY), and forwards everything else.
   */
  async function startBusyOnceProxy(): Promise<{ url: string; refused: number; close(): Promise<void> }> {
    const state = { refused: 0 };
    const proxy = http.createServer(async (request, response) => {
      if (request.url === '/complete' && state.refused === 0) {
        state.refused += 1;
        request.resume();
        response.writeHead(503, { 'content-type': 'application/json', 'retry-after': '1' });
        response.end(JSON.stringify({ detail: 'The database is busy; retry in a moment.', code: 'DATABASE_BUSY' }));
        return;
      }
      const chunks: Buffer[] = [];
      for await (const chunk of request) chunks.push(chunk as Buffer);
      const upstream = await fetch(`${server.url}${request.url}`, {
        method: request.method,
        headers: Object.fromEntries(Object.entries(request.headers).filter(([name]) => ['authorization', 'content-type'].includes(name)) as [string, string][]),
        ...(chunks.length > 0 ? { body: Buffer.concat(chunks) } : {}),
      });
      response.writeHead(upstream.status, { 'content-type': upstream.headers.get('content-type') ?? 'application/json' });
      response.end(Buffer.from(await upstream.arrayBuffer()));
    });
    await new Promise<void>((resolve) => proxy.listen(0, '127.0.0.1', resolve));
    const { port } = proxy.address() as AddressInfo;
    return {
      url: `http://127.0.0.1:${port}`,
      get refused() {
        return state.refused;
      },
      close: () => new Promise<void>((resolve) => proxy.close(() => resolve())),
    };
  }

  const startAgent = async (name: string, enrollment: string, extra: Record<string, string> = {}) => launcher.start(name, enrollment, extra);

  const assetRow = (id: string) => database.handle.db.selectFrom('assets').selectAll().where('id', '=', id).executeTakeFirstOrThrow();
  const completedCopies = (id: string) =>
    database.handle.db
      .selectFrom('allocations')
      .innerJoin('nodes', 'nodes.id', 'allocations.node_id')
      .select(['nodes.name', 'allocations.sha256', 'allocations.verified'])
      .where('asset_id', '=', id)
      .where('allocations.state', '=', 'completed')
      .execute();

  it('rescues every asset on distinct nodes, survives a killed agent, catches a changing source, and gives up on a 404', async () => {
    const sizes: Record<string, number> = { 'big-1': 24 * MIB, 'big-2': 12 * MIB, 'small-1': MIB, 'small-2': 2 * MIB, 'small-3': 3 * MIB };
    await server.api.post(
      '/assets',
      [
        ...Object.entries(sizes).map(([name, size], index) => ({
          id: name,
          name: `${name}.bin`,
          url: `${files.url}/${name === 'big-2' ? 'redirect' : 'files'}/${name}?size=${size}`,
          size_bytes: size,
          // The first ones carry their checksum, like CKAN resources that publish one.
          ...(index < 2 ? { sha256: sha256Of(name, size) } : {}),
          priority: 9 - index,
          replicas_target: 2,
        })),
        { id: 'changing', name: 'changing.bin', url: `${files.url}/changing/x?size=${MIB}`, size_bytes: MIB, priority: 4, replicas_target: 2 },
        { id: 'missing', name: 'missing.bin', url: `${files.url}/missing/x`, priority: 3, replicas_target: 2, size_mb: 1 },
      ],
      server.adminToken,
    );
    const enrollment = (await server.api.post('/api/enrollment-tokens', {}, server.adminToken)).body.token;
    // The slow agent is the one to be killed mid-download.
    const slow = await startAgent('node-c', enrollment, { AGENT_BANDWIDTH_LIMIT_MB_S: '1', AGENT_CONCURRENCY: '2' });
    const partials = path.join(slow.dataDirectory, 'partial');
    await waitFor(
      'the slow agent to be mid-download',
      () => fs.existsSync(partials) && fs.readdirSync(partials).some((file) => file.endsWith('.part') && fs.statSync(path.join(partials, file)).size > 0),
    );
    slow.child.kill('SIGKILL');
    const held = await database.handle.db
      .selectFrom('allocations')
      .innerJoin('nodes', 'nodes.id', 'allocations.node_id')
      .select('asset_id')
      .where('nodes.name', '=', 'node-c')
      .where('allocations.state', '=', 'active')
      .execute();
    expect(held.length).toBeGreaterThan(0);
    // The next full transfer of big-1 breaks off after 5 MiB: whoever takes it must resume it.
    files.cut('big-1', 5 * MIB);

    const a = await startAgent('node-a', enrollment);
    const b = await startAgent('node-b', enrollment);
    // node-c is silent: past the timeout and grace it is dead and its work goes back to the pool.
    server.clock.advance(11 * MINUTE);
    await waitFor('both live agents to beat after the clock moved', async () => {
      const rows = await database.handle.db.selectFrom('nodes').select(['name', 'last_heartbeat_at']).where('name', 'in', ['node-a', 'node-b']).execute();
      return rows.length === 2 && rows.every((row) => (row.last_heartbeat_at ?? 0) >= server.clock.now());
    });
    await server.loops.find((loop) => loop.name === 'mark-silent-nodes')!.runOnce();
    await server.loops.find((loop) => loop.name === 'reclaim-dead-nodes')!.runOnce();
    expect((await database.handle.db.selectFrom('nodes').select('status').where('name', '=', 'node-c').executeTakeFirstOrThrow()).status).toBe('dead');

    for (const [name, size] of Object.entries(sizes)) {
      await waitFor(`${name} to be rescued`, async () => (await assetRow(name)).state === 'rescued');
      const copies = await completedCopies(name);
      expect(copies.map((copy) => copy.name).sort(), name).toEqual(['node-a', 'node-b']);
      expect(new Set(copies.map((copy) => copy.sha256))).toEqual(new Set([sha256Of(name, size)]));
      expect(await assetRow(name)).toMatchObject({ copies: 2, holders: 2 });
      for (const agent of [a, b]) expect(fs.statSync(keptCopy(agent.dataDirectory, name)).size).toBe(size);
    }
    // big-1 was cut off once and resumed with a Range request rather than started over.
    expect(files.requests.some((request) => request.name === 'big-1' && request.range !== undefined && request.range !== 'bytes=0-')).toBe(true);
    const reclaimed = await server.api.get('/allocations?state=reclaimed', server.adminToken);
    expect(reclaimed.body.items.map((allocation: { asset_id: string }) => allocation.asset_id).sort()).toEqual(held.map((row) => row.asset_id).sort());

    // The changing source: two copies that disagree, so none counts.
    await waitFor('both copies of the changing asset', async () => (await completedCopies('changing')).length === 2);
    expect(await assetRow('changing')).toMatchObject({ state: 'pending', copies: 0 });
    const mismatch = await server.api.get('/events?kind=asset.checksum_mismatch', server.adminToken);
    expect(mismatch.body.items[0]).toMatchObject({ subject_id: 'changing' });

    // The 404: released with its reason by two nodes, then gone, and not handed out again.
    await waitFor('the missing asset to be gone', async () => (await assetRow('missing')).state === 'gone');
    const tries = await server.api.get('/allocations?asset=missing', server.adminToken);
    expect(tries.body.items).toHaveLength(2);
    expect(tries.body.items.every((allocation: { end_reason: string }) => allocation.end_reason.startsWith('source_gone: 404'))).toBe(true);

    // A graceful stop: nothing new, unfinished work given back, exit 0, offline rather than dead.
    a.child.kill('SIGTERM');
    b.child.kill('SIGTERM');
    expect(await a.exited).toBe(0);
    expect(await b.exited).toBe(0);
    expect(a.output()).toContain('stopped');
    const active = await database.handle.db.selectFrom('allocations').select('id').where('state', '=', 'active').execute();
    expect(active).toEqual([]);
    const copiesBefore = (await assetRow('big-1')).copies;
    server.clock.advance(60 * MINUTE);
    await server.loops.find((loop) => loop.name === 'mark-silent-nodes')!.runOnce();
    const stopped = await database.handle.db
      .selectFrom('nodes')
      .select(['name', 'status', 'strikes'])
      .where('name', 'in', ['node-a', 'node-b'])
      .orderBy('name')
      .execute();
    expect(stopped).toEqual([
      { name: 'node-a', status: 'offline', strikes: 0 },
      { name: 'node-b', status: 'offline', strikes: 0 },
    ]);
    expect((await assetRow('big-1')).copies).toBe(copiesBefore);
    // The identity file keeps the node token, readable by its owner only.
    expect(fs.statSync(path.join(a.dataDirectory, 'node-identity.json')).mode & 0o777).toBe(0o600);
  }, 180_000);

  it('reports a finished copy again when the control plane answers busy, and keeps the file', async () => {
    await server.api.post(
      '/assets',
      [{ id: 'kept', name: 'kept.bin', url: `${files.url}/files/kept?size=${MIB}`, size_bytes: MIB, priority: 5 }],
      server.adminToken,
    );
    const enrollment = (await server.api.post('/api/enrollment-tokens', {}, server.adminToken)).body.token;
    const proxy = await startBusyOnceProxy();
    try {
      const agent = await startAgent('node-patient', enrollment, { API_ENDPOINT: proxy.url });
      await waitFor('the copy to be counted', async () => (await completedCopies('kept')).length === 1);
      expect(proxy.refused).toBe(1);
      expect(agent.output()).toMatch(/retrying in/);
      expect(fs.statSync(keptCopy(agent.dataDirectory, 'kept')).size).toBe(MIB);
      agent.child.kill('SIGTERM');
      expect(await agent.exited).toBe(0);
    } finally {
      await proxy.close();
    }
  });

  it('stops mid-download giving the work back, restarts without registering again, resumes, and downloads a file larger than its heap', async () => {
    const size = 160 * MIB;
    await server.api.post(
      '/assets',
      [{ id: 'huge', name: 'huge.bin', url: `${files.url}/files/huge?size=${size}`, size_bytes: size, sha256: sha256Of('huge', size), priority: 5 }],
      server.adminToken,
    );
    const enrollment = (await server.api.post('/api/enrollment-tokens', {}, server.adminToken)).body.token;
    // 48 MiB of heap for a 160 MiB file; slowed down so that it can be stopped halfway.
    const first = await startAgent('node-heap', enrollment, { NODE_OPTIONS: '--max-old-space-size=48', AGENT_BANDWIDTH_LIMIT_MB_S: '20' });
    const partialOf = () =>
      fs.existsSync(path.join(first.dataDirectory, 'partial'))
        ? fs.readdirSync(path.join(first.dataDirectory, 'partial')).find((file) => file.startsWith('huge-') && file.endsWith('.part'))
        : undefined;
    await waitFor(
      'the download to be under way',
      () => partialOf() !== undefined && fs.statSync(path.join(first.dataDirectory, 'partial', partialOf() as string)).size > 10 * MIB,
    );
    const partial = path.join(first.dataDirectory, 'partial', partialOf() as string);
    first.child.kill('SIGTERM');
    expect(await first.exited).toBe(0);
    const released = await server.api.get('/allocations?asset=huge&state=released', server.adminToken);
    expect(released.body.items, JSON.stringify(released.body.items)).toHaveLength(1);
    expect(released.body.items[0]).toMatchObject({ node_name: 'node-heap', end_reason: 'stopping: agent stopping' });
    const kept = fs.statSync(partial).size;

    const again = await startAgent('node-heap', 'not-needed-any-more', { NODE_OPTIONS: '--max-old-space-size=48' });
    await waitFor('the huge file to be rescued', async () => (await assetRow('huge')).state === 'rescued', 120_000);
    expect(await database.handle.db.selectFrom('nodes').select('id').execute()).toHaveLength(1);
    expect(fs.statSync(keptCopy(again.dataDirectory, 'huge')).size).toBe(size);
    expect(files.requests.filter((request) => request.name === 'huge').map((request) => request.range)).toContain(`bytes=${kept}-`);
    again.child.kill('SIGTERM');
    expect(await again.exited).toBe(0);
  }, 180_000);
});
