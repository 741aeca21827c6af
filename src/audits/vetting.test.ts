import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { dialects } from '../../test/databases.js';
import { answerFor, sourceFile } from '../../test/audit-holder.js';
import { startFileServer, type FileServer } from '../../test/file-server.js';
import { registerNode, useTestServer, type TestServer } from '../../test/server.js';
import { proofDepsOf } from './audits.routes.js';
import { runProofs } from './proof.service.js';

const GIB = 1024 ** 3;
const MB = 1_000_000;

const file = (name: string) => sourceFile(name, 50_000);

describe.each(dialects)('new nodes on %s', (dialect) => {
  const suite = useTestServer(dialect, { sourceAllowPrivate: true, nodeRateLimitPerMinute: 1_000_000, auditsPerMinute: 60_000 });
  let source: FileServer;
  beforeEach(async () => {
    source = await startFileServer();
  });
  afterEach(async () => {
    await source.close();
  });

  const take = async (server: TestServer, node: { name: string; token: string; id: number }) => {
    await server.api.post(`/api/nodes/${node.id}/heartbeat`, { free_bytes: 10 * GIB }, node.token);
    const answer = await server.api.post('/allocate', { free_space_gb: 10, node_id: node.name, max_assets: 100 }, node.token);
    return answer;
  };

  it("counts a fresh node's copies only once it passed its vetting audits, and holds it to a few allocations meanwhile", async () => {
    const server = await suite.start({ verifySpotChecks: 1, vettingAudits: 2, vettingMaxAssets: 2 });
    const files = ['v1', 'v2', 'v3'].map((name) => file(name));
    await server.api.post(
      '/assets',
      files.map((copy) => ({
        id: copy.name,
        name: copy.name,
        url: `${source.url}/files/${copy.name}?size=${copy.data.length}`,
        priority: 5,
        size_bytes: copy.data.length,
        replicas_target: 1,
      })),
      server.adminToken,
    );
    const node = await registerNode(server, 'fresh');
    const first = await take(server, node);
    expect(first.body.map((asset: { id: string }) => asset.id)).toEqual(['v1', 'v2']);
    const full = await take(server, node);
    expect(full.status).toBe(403);
    expect(full.body).toMatchObject({ code: 'NODE_VETTING', detail: expect.stringContaining('VETTING_MAX_ASSETS') });

    const byName = new Map(files.map((copy) => [copy.name, copy]));
    for (const id of ['v1', 'v2']) {
      const copy = byName.get(id)!;
      await server.api.post(
        '/complete',
        { asset_id: id, node_id: node.name, sha256: copy.sha256, bytes: copy.data.length, merkle_root: copy.merkleRoot },
        node.token,
      );
    }
    await runProofs(server.ctx.db, server.ctx.dialect, proofDepsOf(server.ctx), 10_000, server.clock.now());
    const audits = (await server.api.post(`/api/nodes/${node.id}/heartbeat`, { free_bytes: 10 * GIB }, node.token)).body.audits as {
      url: string;
      asset_id: string;
      nonce: string;
      ranges: { offset: number; length: number }[];
    }[];
    expect(audits).toHaveLength(2);
    const answer = (item: (typeof audits)[number]) => answerFor({ kind: 'ranges', block: null, ...item }, byName.get(item.asset_id)!);
    expect((await server.api.post(audits[0]!.url, answer(audits[0]!), node.token)).body.verdict).toBe('passed');
    // Proven, but not counted: the node is new.
    const waiting = (await server.api.get(`/assets/${audits[0]!.asset_id}`, server.adminToken)).body;
    expect(waiting).toMatchObject({ copies: 0, state: 'pending' });
    expect(waiting.copies_detail[0]).toMatchObject({ proof: 'vetting', verified: false });

    expect((await server.api.post(audits[1]!.url, answer(audits[1]!), node.token)).body.verdict).toBe('passed');
    expect((await server.api.get('/events?kind=node.vetted', server.adminToken)).body.items).toHaveLength(1);
    for (const id of ['v1', 'v2']) expect((await server.api.get(`/assets/${id}`, server.adminToken)).body).toMatchObject({ copies: 1, state: 'rescued' });
    // Vetted: no cap any more.
    expect((await take(server, node)).body.map((asset: { id: string }) => asset.id)).toEqual(['v3']);
  });

  it('refuses a completion faster than MAX_PLAUSIBLE_RATE_MB_S with a strike, and takes one at a plausible pace', async () => {
    const server = await suite.start({ maxPlausibleRateBps: 10 * MB });
    await server.api.post(
      '/assets',
      ['fast', 'slow'].map((id) => ({ id, name: id, url: `https://data.example.org/${id}`, priority: 5, size_bytes: 100 * MB, replicas_target: 1 })),
      server.adminToken,
    );
    const node = await registerNode(server, 'speedy');
    expect((await take(server, node)).body).toHaveLength(2);
    server.clock.advance(2_000);
    const fast = await server.api.post('/complete', { asset_id: 'fast', node_id: node.name, sha256: 'a'.repeat(64), bytes: 100 * MB }, node.token);
    expect(fast.status).toBe(409);
    expect(fast.body).toMatchObject({ code: 'IMPLAUSIBLE_RATE', detail: expect.stringContaining('50 MB/s') });
    const nodes = (await server.api.get('/api/nodes', server.adminToken)).body as { node_id: number; strikes: number }[];
    expect(nodes.find((entry) => entry.node_id === node.id)?.strikes).toBe(1);
    expect((await server.api.get('/assets/fast', server.adminToken)).body).toMatchObject({ copies: 0, state: 'pending' });
    server.clock.advance(18_000);
    const slow = await server.api.post('/complete', { asset_id: 'slow', node_id: node.name, sha256: 'b'.repeat(64), bytes: 100 * MB }, node.token);
    expect(slow.body).toMatchObject({ status: 'success', copies: 1 });
  });
});
