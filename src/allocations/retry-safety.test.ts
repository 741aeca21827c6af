import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { createTestDatabase, dialects, type TestDatabase } from '../../test/databases.js';
import { registerNode, startTestServer, type TestServer } from '../../test/server.js';
import type { Config } from '../config.js';
import { EXPIRY_LOOP, LIVENESS_LOOP } from '../loops.js';

const MIB = 1024 * 1024;
const GIB = 1024 * MIB;
const MINUTE = 60_000;

type Node = { id: number; name: string; token: string };

/** Invariant 9: no node-asset pair is retried in a loop, and no source host gets more than its share. */
describe.each(dialects)('retries and politeness on %s', (dialect) => {
  let database: TestDatabase;
  let server: TestServer;
  const servers: TestServer[] = [];

  const start = async (overrides: Partial<Config> = {}) => {
    server = await startTestServer(database, {
      retryCooldownMs: 10 * MINUTE,
      retryCooldownMaxMs: 60 * MINUTE,
      loginRateLimitPerMinute: 1000,
      tokenTtlMs: 30 * 24 * 60 * MINUTE,
      ...overrides,
    });
    servers.push(server);
  };
  beforeEach(async () => {
    database = await createTestDatabase(dialect);
  });
  afterEach(async () => {
    for (const running of servers.splice(0)) await running.stop();
    await database.drop();
  });

  const importAssets = async (assets: Record<string, unknown>[]) => expect((await server.api.post('/assets', assets, server.adminToken)).status).toBe(200);
  const allocate = (node: Node, body: Record<string, unknown> = {}, on = server) =>
    on.api.post('/allocate', { free_space_gb: 100, node_id: node.name, ...body }, node.token);
  const granted = async (node: Node, body: Record<string, unknown> = {}) => {
    const response = await allocate(node, body);
    return response.status === 200 ? (response.body as { id: string }[]).map((asset) => asset.id).sort() : [];
  };
  const release = (node: Node, assetId: string, body: Record<string, unknown>) =>
    server.api.post('/release', { asset_id: assetId, node_id: node.name, ...body }, node.token);
  const nodeRow = (name: string) => database.handle.db.selectFrom('nodes').selectAll().where('name', '=', name).executeTakeFirstOrThrow();
  const assetRow = (id: string) => database.handle.db.selectFrom('assets').selectAll().where('id', '=', id).executeTakeFirstOrThrow();
  const runLoop = (name: string) => server.loops.find((loop) => loop.name === name)!.runOnce();

  it('a mismatch is a strike and a cooldown for that node; mismatches from two nodes make the asset suspect and take the strikes back', async () => {
    await start();
    await importAssets([
      { id: 'wrong', url: 'https://a.example.org/wrong.nc', name: 'wrong', size_bytes: MIB, priority: 9 },
      { id: 'other', url: 'https://b.example.org/other.nc', name: 'other', size_bytes: MIB, priority: 1, replicas_target: 2 },
    ]);
    const [a, b] = [await registerNode(server, 'node-a'), await registerNode(server, 'node-b')];
    expect(await granted(a, { max_assets: 1 })).toEqual(['wrong']);
    expect((await release(a, 'wrong', { cause: 'size_mismatch', reason: 'got 300 MiB' })).status).toBe(200);
    expect(await nodeRow('node-a')).toMatchObject({ strikes: 1 });
    const [failed] = (await server.api.get('/allocations?asset=wrong', server.adminToken)).body.items;
    expect(failed).toMatchObject({ state: 'failed', end_reason: 'size_mismatch: got 300 MiB' });

    // The same node does not get it back, however often it asks, until the cooldown is over.
    for (let ask = 0; ask < 5; ask += 1) expect(await granted(a, { max_assets: 1 })).toEqual(ask === 0 ? ['other'] : []);
    server.clock.advance(10 * MINUTE - 1);
    expect(await granted(a, { max_assets: 1 })).toEqual([]);

    // A second node finds the same: the catalog is wrong, not the nodes.
    expect(await granted(b, { max_assets: 1 })).toEqual(['wrong']);
    expect((await release(b, 'wrong', { cause: 'size_mismatch' })).status).toBe(200);
    expect(await assetRow('wrong')).toMatchObject({ state: 'suspect', holders: 0 });
    expect([(await nodeRow('node-a')).strikes, (await nodeRow('node-b')).strikes]).toEqual([0, 0]);
    const events = (await server.api.get('/events?kind=asset.suspect', server.adminToken)).body.items;
    expect(events).toHaveLength(1);
    expect(events[0]).toMatchObject({ subject_id: 'wrong' });

    // Suspect: handed to nobody, not even after every cooldown, and listed as such.
    server.clock.advance(24 * 60 * MINUTE);
    const c = await registerNode(server, 'node-c');
    expect(await granted(c)).toEqual(['other']);
    expect(await granted(a)).toEqual([]);
    expect((await server.api.get('/assets?state=suspect', server.adminToken)).body.items.map((asset: { id: string }) => asset.id)).toEqual(['wrong']);

    // A re-import with the same values keeps it suspect; one with another size resolves it.
    await importAssets([{ id: 'wrong', url: 'https://a.example.org/wrong.nc', name: 'wrong', size_bytes: MIB, priority: 9 }]);
    expect((await assetRow('wrong')).state).toBe('suspect');
    await importAssets([{ id: 'wrong', url: 'https://a.example.org/wrong.nc', name: 'wrong', size_bytes: 300 * MIB, priority: 9 }]);
    expect((await assetRow('wrong')).state).toBe('pending');
    const d = await registerNode(server, 'node-d');
    expect(await granted(d, { max_assets: 1 })).toEqual(['wrong']);
    // The old mismatches no longer count: one more does not make it suspect again.
    expect((await release(d, 'wrong', { cause: 'size_mismatch' })).status).toBe(200);
    expect((await assetRow('wrong')).state).toBe('pending');
  });

  it('a copy refused by /complete for its size counts as a mismatch too', async () => {
    await start({ mismatchConfirmations: 1 });
    await importAssets([{ id: 'sized', url: 'https://a.example.org/sized.nc', name: 'sized', size_bytes: MIB, priority: 5 }]);
    const a = await registerNode(server, 'node-a');
    expect(await granted(a)).toEqual(['sized']);
    const answer = await server.api.post('/complete', { asset_id: 'sized', node_id: 'node-a', sha256: 'b'.repeat(64), bytes: 2 * MIB }, a.token);
    expect(answer.body.code).toBe('SIZE_MISMATCH');
    expect(await assetRow('sized')).toMatchObject({ state: 'suspect', retry_failures: 1 });
  });

  it('an unreachable source is not given to the same node again within its cooldown, which doubles; other nodes still get it; no strike', async () => {
    await start();
    await importAssets([{ id: 'far', url: 'https://far.example.org/x.nc', name: 'far', size_bytes: MIB, priority: 5, replicas_target: 1 }]);
    const [a, b] = [await registerNode(server, 'node-a'), await registerNode(server, 'node-b')];
    expect(await granted(a)).toEqual(['far']);
    expect((await release(a, 'far', { cause: 'source_unreachable', reason: 'connect ECONNREFUSED' })).status).toBe(200);
    expect(await nodeRow('node-a')).toMatchObject({ strikes: 0 });
    expect(await assetRow('far')).toMatchObject({ source_error: 'source_unreachable: connect ECONNREFUSED', source_errors: 0 });
    expect(await granted(a)).toEqual([]);
    server.clock.advance(10 * MINUTE);
    expect(await granted(a)).toEqual(['far']);
    expect((await release(a, 'far', { cause: 'source_unreachable' })).status).toBe(200);
    // The second failure of the pair waits twice as long.
    server.clock.advance(10 * MINUTE);
    expect(await granted(a)).toEqual([]);
    expect(await granted(b)).toEqual(['far']);
    expect((await release(b, 'far', { cause: 'stopping' })).status).toBe(200);
    // A clean stop costs nothing: b gets it straight back.
    expect(await granted(b)).toEqual(['far']);
    expect((await release(b, 'far', { cause: 'stopping' })).status).toBe(200);
    server.clock.advance(10 * MINUTE);
    expect(await granted(a)).toEqual(['far']);
    const cooldown = await database.handle.db.selectFrom('retry_cooldowns').selectAll().where('asset_id', '=', 'far').execute();
    expect(cooldown.map((row) => [Number(row.node_id), row.failures])).toEqual([[a.id, 2]]);
    // An admin's clear lifts a node's cooldowns: the volunteer fixed its set-up.
    expect((await release(a, 'far', { cause: 'source_unreachable' })).status).toBe(200);
    expect(await granted(a)).toEqual([]);
    expect((await server.api.request('POST', `/api/nodes/${a.id}/clear`, { token: server.adminToken })).status).toBe(200);
    expect(await granted(a)).toEqual(['far']);
  });

  it('a release by a client that names no cause (the seeds) costs a cooldown; a lease that lapses does too', async () => {
    await start();
    await importAssets([
      { id: 'one', url: 'https://a.example.org/1', name: 'one', size_bytes: MIB, priority: 5 },
      { id: 'two', url: 'https://a.example.org/2', name: 'two', size_bytes: MIB, priority: 4 },
    ]);
    const a = await registerNode(server, 'node-a');
    expect(await granted(a, { max_assets: 1 })).toEqual(['one']);
    expect((await release(a, 'one', {})).status).toBe(200);
    expect(await granted(a, { max_assets: 1 })).toEqual(['two']);
    server.clock.advance(25 * 60 * MINUTE);
    await runLoop(EXPIRY_LOOP);
    expect(await database.handle.db.selectFrom('allocations').select('state').where('asset_id', '=', 'two').executeTakeFirstOrThrow()).toEqual({
      state: 'expired',
    });
    // 'one''s cooldown ran out long ago; 'two' just lapsed.
    expect(await granted(a)).toEqual(['one']);
  });

  it('a 429 with Retry-After pauses its host for the whole fleet, and the heartbeat tells the nodes that hold work there', async () => {
    await start();
    await importAssets([
      { id: 'busy-1', url: 'https://busy.example.org/1', name: 'busy 1', size_bytes: MIB, priority: 9, replicas_target: 3 },
      { id: 'busy-2', url: 'https://busy.example.org/2', name: 'busy 2', size_bytes: MIB, priority: 8 },
      { id: 'calm', url: 'https://calm.example.org:8443/1', name: 'calm', size_bytes: MIB, priority: 1 },
    ]);
    const [a, b, c] = [await registerNode(server, 'node-a'), await registerNode(server, 'node-b'), await registerNode(server, 'node-c')];
    expect(await granted(a, { max_assets: 1 })).toEqual(['busy-1']);
    expect(await granted(b, { max_assets: 1 })).toEqual(['busy-1']);
    expect((await release(a, 'busy-1', { cause: 'source_busy', source_status: 429, retry_after_seconds: 30 })).status).toBe(200);
    expect(await nodeRow('node-a')).toMatchObject({ strikes: 0 });
    expect(await granted(c)).toEqual(['calm']);
    expect(await granted(a)).toEqual([]);
    const beat = await server.api.post(
      `/api/nodes/${b.id}/heartbeat`,
      { free_bytes: 100 * GIB, allocations: [{ asset_id: 'busy-1', bytes_done: 0 }] },
      b.token,
    );
    expect(beat.body.paused_sources).toEqual([{ host: 'busy.example.org', until: new Date(server.clock.now() + 30_000).toISOString(), retry_in_seconds: 30 }]);
    server.clock.advance(29_999);
    expect(await granted(c)).toEqual([]);
    server.clock.advance(1);
    expect(await granted(c)).toEqual(['busy-1', 'busy-2']);
    expect((await server.api.get('/events?kind=source.paused', server.adminToken)).body.items[0]).toMatchObject({ subject_id: 'busy.example.org' });
  });

  it('never has more than SOURCE_HOST_MAX_ACTIVE active allocations on one host across concurrent nodes and instances', async () => {
    await start({ sourceHostMaxActive: 3 });
    if (dialect === 'postgres') servers.push(await startTestServer(database, { sourceHostMaxActive: 3, loginRateLimitPerMinute: 1000 }, server.clock));
    await importAssets([
      ...Array.from({ length: 20 }, (_, index) => ({
        id: `big-${index}`,
        url: `https://big.example.org/${index}`,
        name: `big ${index}`,
        size_bytes: MIB,
        priority: 9,
        replicas_target: 2,
      })),
      ...Array.from({ length: 20 }, (_, index) => ({
        id: `small-${index}`,
        url: `https://small.example.org/${index}`,
        name: `small ${index}`,
        size_bytes: MIB,
        priority: 1,
      })),
    ]);
    const nodes: Node[] = [];
    for (let index = 0; index < 12; index += 1) nodes.push(await registerNode(server, `node-${index}`));
    const hostCounts = async () => {
      const rows = await database.handle.db.selectFrom('allocations').select('source_host').where('state', '=', 'active').execute();
      return rows.reduce<Record<string, number>>(
        (counts, row) => ({ ...counts, [row.source_host as string]: (counts[row.source_host as string] ?? 0) + 1 }),
        {},
      );
    };
    const answers = await Promise.all(nodes.map((node, index) => allocate(node, { max_assets: 2 }, servers[index % servers.length])));
    expect(answers.every((answer) => answer.status === 200 || answer.body.code === 'NO_ASSETS_AVAILABLE')).toBe(true);
    expect(await hostCounts()).toEqual({ 'big.example.org': 3, 'small.example.org': 3 });
    // A slot freed on a host goes to the next node that asks, and no further.
    const holder = await database.handle.db
      .selectFrom('allocations')
      .innerJoin('nodes', 'nodes.id', 'allocations.node_id')
      .select(['nodes.name', 'allocations.asset_id'])
      .where('allocations.source_host', '=', 'big.example.org')
      .where('allocations.state', '=', 'active')
      .executeTakeFirstOrThrow();
    const node = nodes.find((candidate) => candidate.name === holder.name) as Node;
    expect((await release(node, holder.asset_id, { cause: 'stopping' })).status).toBe(200);
    await Promise.all(nodes.map((each, index) => allocate(each, { max_assets: 2 }, servers[index % servers.length])));
    expect(await hostCounts()).toEqual({ 'big.example.org': 3, 'small.example.org': 3 });
  });

  it('a node that says goodbye is offline, not suspect or dead: no strike, its copies keep counting, a heartbeat brings it back', async () => {
    await start({ nodeTimeoutMs: 5 * MINUTE, nodeDeadGraceMs: 10 * MINUTE });
    await importAssets([{ id: 'kept', url: 'https://a.example.org/kept', name: 'kept', size_bytes: MIB, priority: 5 }]);
    const a = await registerNode(server, 'node-a');
    await server.api.post(`/api/nodes/${a.id}/heartbeat`, { free_bytes: 100 * GIB }, a.token);
    expect(await granted(a)).toEqual(['kept']);
    expect((await server.api.post('/complete', { asset_id: 'kept', node_id: 'node-a', sha256: 'c'.repeat(64), bytes: MIB }, a.token)).status).toBe(200);
    const bye = await server.api.request('POST', `/api/nodes/${a.id}/offline`, { token: a.token });
    expect(bye.status, JSON.stringify(bye.body)).toBe(200);
    expect(bye.body).toEqual({ status: 'ok', node_status: 'offline' });
    server.clock.advance(60 * MINUTE);
    await runLoop(LIVENESS_LOOP);
    expect(await nodeRow('node-a')).toMatchObject({ status: 'offline', strikes: 0 });
    expect(await assetRow('kept')).toMatchObject({ state: 'rescued', copies: 1 });
    expect((await server.api.get('/events?kind=node.offline', server.adminToken)).body.items).toHaveLength(1);
    // Another node cannot say goodbye for it.
    const b = await registerNode(server, 'node-b');
    expect((await server.api.request('POST', `/api/nodes/${a.id}/offline`, { token: b.token })).status).toBe(403);
    await server.api.post(`/api/nodes/${a.id}/heartbeat`, { free_bytes: 100 * GIB }, a.token);
    expect((await nodeRow('node-a')).status).toBe('alive');
  });

  it('tells a node in its heartbeat which of its allocations ended elsewhere', async () => {
    await start();
    await importAssets([{ id: 'lapsed', url: 'https://a.example.org/lapsed', name: 'lapsed', size_bytes: MIB, priority: 5 }]);
    const a = await registerNode(server, 'node-a');
    expect(await granted(a)).toEqual(['lapsed']);
    server.clock.advance(25 * 60 * MINUTE);
    await runLoop(EXPIRY_LOOP);
    const beat = await server.api.post(
      `/api/nodes/${a.id}/heartbeat`,
      { free_bytes: 100 * GIB, allocations: [{ asset_id: 'lapsed', bytes_done: 10 }] },
      a.token,
    );
    expect(beat.body.ended).toEqual(['lapsed']);
  });

  it('refuses asset ids with control characters or bidirectional overrides, and keeps odd but printable ones apart', async () => {
    await start();
    for (const id of ['a\u001b[2Jb', 'x\u202eexe.txt', 'nul\u0000', 'tab\there', 'del\u007f']) {
      const answer = await server.api.post('/assets', [{ id, url: 'https://a.example.org/x', name: 'x', priority: 5 }], server.adminToken);
      expect(answer.status, JSON.stringify(id)).toBe(422);
      expect(answer.body.detail).toMatch(/id/);
    }
    const ids = ['a:b', 'a/b', 'a b', 'ａ:b', 'a_b'];
    await importAssets(ids.map((id, index) => ({ id, url: `https://a.example.org/${index}`, name: id, priority: 5 })));
    const stored = await database.handle.db.selectFrom('assets').select('id').execute();
    expect(stored.map((row) => row.id).sort()).toEqual([...ids].sort());
  });
});
