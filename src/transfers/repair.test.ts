import crypto from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { dialects } from '../../test/databases.js';
import { registerNode, useTestServer } from '../../test/server.js';
import { serveOneTransfer } from '../../test/transfer-holder.js';

const GIB = 1024 ** 3;
const content = crypto.randomBytes(200_000);
const sha256 = crypto.createHash('sha256').update(content).digest('hex');

describe.each(dialects)('repair from copies on %s', (dialect) => {
  const suite = useTestServer(dialect, { nodeRateLimitPerMinute: 100_000, sourceGoneConfirmations: 2 });

  it('hands a failing source out as a restore of the copies left once two nodes found it failing, and counts the new copy', async () => {
    const server = await suite.start();
    const body = { id: 'r', url: 'http://127.0.0.1:9/r.bin', name: 'r.bin', priority: 5, size_bytes: content.length, sha256, replicas_target: 2 };
    await server.api.post('/assets', [body], server.adminToken);
    const [holder, first, second, third] = [
      await registerNode(server, 'holder'),
      await registerNode(server, 'first'),
      await registerNode(server, 'second'),
      await registerNode(server, 'third'),
    ];
    const allocate = (node: typeof holder) => server.api.post('/allocate', { free_space_gb: 10, node_id: node.name }, node.token);
    for (const node of [holder, first, second, third]) await server.api.post(`/api/nodes/${node.id}/heartbeat`, { free_bytes: 10 * GIB }, node.token);
    expect((await allocate(holder)).body[0]).toMatchObject({ id: 'r', restore_url: null });
    await server.api.post('/complete', { asset_id: 'r', node_id: holder.name, sha256, bytes: content.length }, holder.token);

    for (const node of [first, second]) {
      const [granted] = (await allocate(node)).body;
      expect(granted).toMatchObject({ id: 'r', url: body.url, restore_url: null });
      const release = await server.api.post(
        '/release',
        { asset_id: 'r', node_id: node.name, cause: 'source_unreachable', reason: 'connection refused' },
        node.token,
      );
      expect(release.status).toBe(200);
    }
    const events = (await server.api.get('/events?kind=asset.source_gone', server.adminToken)).body.items;
    expect(events[0]?.data).toMatchObject({ repair: 'from_copies', copies: 1, nodes: 2 });

    const [repair] = (await allocate(third)).body;
    expect(repair).toMatchObject({ id: 'r', restore_url: '/assets/r/content?prefer_source=false', sha256 });
    // Another node may not restore what it was not given.
    const refused = await fetch(`${server.url}${repair.restore_url}`, { headers: { authorization: `Bearer ${first.token}` } });
    expect(refused.status).toBe(403);
    const restore = fetch(`${server.url}${repair.restore_url}`, { headers: { authorization: `Bearer ${third.token}` } });
    await serveOneTransfer(server, holder, content);
    const bytes = Buffer.from(await (await restore).arrayBuffer());
    expect(bytes.equals(content)).toBe(true);
    const completed = await server.api.post('/complete', { asset_id: 'r', node_id: third.name, sha256, bytes: bytes.length }, third.token);
    expect(completed.status).toBe(200);
    expect((await server.api.get('/assets/r', server.adminToken)).body).toMatchObject({ copies: 2, state: 'rescued' });
  });
});
