import { describe, expect, it } from 'vitest';
import { dialects } from '../../test/databases.js';
import { registerNode, startTestServer, useTestServer } from '../../test/server.js';
import { proofDepsOf } from './audits.routes.js';
import { runProofs } from './proof.service.js';

const HOUR = 3_600_000;
const GIB = 1024 ** 3;

describe.each(dialects)('audit load on %s', (dialect) => {
  const suite = useTestServer(dialect, { auditIntervalMs: HOUR, auditsPerMinute: 60_000, nodeRateLimitPerMinute: 1_000_000 });

  it("never floods a node with audits, and starts each copy's audit once when two instances run the pass at the same moment", async () => {
    const server = await suite.start();
    // Another instance on the same database (on SQLite, a second handle of the same file).
    const other = await startTestServer(suite.database, server.config, server.clock);
    try {
      await server.api.post(
        '/assets',
        Array.from({ length: 30 }, (_, index) => ({
          id: `a${index}`,
          url: `https://data.example.org/${index}`,
          name: `a${index}`,
          size_bytes: 1000,
          priority: 5,
        })),
        server.adminToken,
      );
      const [big, small] = [await registerNode(server, 'big'), await registerNode(server, 'small')];
      for (const [node, count] of [
        [big, 25],
        [small, 5],
      ] as const) {
        await server.api.post(`/api/nodes/${node.id}/heartbeat`, { free_bytes: 10 * GIB }, node.token);
        const granted = (await server.api.post('/allocate', { free_space_gb: 10, node_id: node.name, max_assets: count }, node.token)).body as { id: string }[];
        for (const asset of granted)
          await server.api.post('/complete', { asset_id: asset.id, node_id: node.name, sha256: 'a'.repeat(64), bytes: 1000 }, node.token);
      }
      const pass = (instance: typeof server) => runProofs(instance.ctx.db, instance.ctx.dialect, proofDepsOf(instance.ctx), 10_000, server.clock.now());
      await pass(server); // gives every copy its audit time
      server.clock.advance(HOUR + 1);
      await Promise.all([pass(server), pass(other)]);
      const unfinished = await server.ctx.db
        .selectFrom('audits')
        .select(['node_id', 'allocation_id'])
        .where('state', 'in', ['queued', 'preparing', 'open'])
        .execute();
      const perCopy = new Map<number, number>();
      for (const row of unfinished) perCopy.set(Number(row.allocation_id), (perCopy.get(Number(row.allocation_id)) ?? 0) + 1);
      expect(Math.max(...perCopy.values())).toBe(1);
      const perNode = (id: number) => unfinished.filter((row) => Number(row.node_id) === id).length;
      expect(perNode(big.id)).toBe(8);
      expect(perNode(small.id)).toBe(5);
    } finally {
      await other.stop();
    }
  });

  it('waits for an offline holder, and takes its copy out of the count a whole interval past its audit time', async () => {
    const server = await suite.start();
    await server.api.post('/assets', [{ id: 'away', url: 'https://data.example.org/away', name: 'away', size_bytes: 1000, priority: 5 }], server.adminToken);
    const node = await registerNode(server, 'traveller');
    await server.api.post(`/api/nodes/${node.id}/heartbeat`, { free_bytes: 10 * GIB }, node.token);
    await server.api.post('/allocate', { free_space_gb: 10, node_id: node.name }, node.token);
    await server.api.post('/complete', { asset_id: 'away', node_id: node.name, sha256: 'a'.repeat(64), bytes: 1000 }, node.token);
    const pass = () => runProofs(server.ctx.db, server.ctx.dialect, proofDepsOf(server.ctx), 10_000, server.clock.now());
    await pass();
    expect((await server.api.post(`/api/nodes/${node.id}/offline`, {}, node.token)).status).toBe(200);
    server.clock.advance(HOUR + 1);
    expect(await pass()).toMatchObject({ started: 0, overdue: 0 });
    expect((await server.api.get('/assets/away', server.adminToken)).body).toMatchObject({ copies: 1 });
    server.clock.advance(HOUR);
    expect(await pass()).toMatchObject({ started: 0, overdue: 1 });
    expect((await server.api.get('/assets/away', server.adminToken)).body).toMatchObject({ copies: 0, state: 'pending' });
    const lost = (await server.api.get('/events?kind=allocation.lost', server.adminToken)).body.items;
    expect(lost[0]?.data).toMatchObject({ reason: 'unaudited' });
  });
});
