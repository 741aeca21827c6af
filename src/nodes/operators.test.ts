import { describe, expect, it } from 'vitest';
import { dialects } from '../../test/databases.js';
import { useTestServer, type TestServer } from '../../test/server.js';

const GIB = 1024 ** 3;
const SHA = 'a'.repeat(64);

describe.each(dialects)('operators on %s', (dialect) => {
  const suite = useTestServer(dialect, { distinctOperators: true, sourceGoneConfirmations: 2, nodeRateLimitPerMinute: 100_000 });

  const signUp = async (server: TestServer, username: string) => {
    expect((await server.api.post('/auth/signup', { username, password: `${username}-password-1` })).status).toBe(200);
  };
  /** A node registered with a personal token of `operator` (or the admin's own token). */
  const enroll = async (server: TestServer, name: string, operator?: string) => {
    const token = await server.api.post('/api/enrollment-tokens', operator ? { operator } : {}, server.adminToken);
    expect(token.status).toBe(200);
    const registered = await server.api.post('/api/workers/register', { hostname: name, node_id: name }, token.body.token);
    expect(registered.status).toBe(200);
    const node = { id: registered.body.node_id as number, name, token: registered.body.node_token as string };
    await server.api.post(`/api/nodes/${node.id}/heartbeat`, { free_bytes: 10 * GIB }, node.token);
    return node;
  };
  const take = async (server: TestServer, node: { name: string; token: string }) => {
    const answer = await server.api.post('/allocate', { free_space_gb: 10, node_id: node.name }, node.token);
    return answer.status === 404 ? [] : (answer.body as { id: string }[]).map((asset) => asset.id);
  };
  const addAsset = (server: TestServer, id: string) =>
    server.api.post('/assets', [{ id, url: `https://data.example.org/${id}`, name: id, size_bytes: 1000, priority: 5, replicas_target: 2 }], server.adminToken);

  it('hands one operator one copy of an asset, whatever its nodes, and counts copies once per operator', async () => {
    const server = await suite.start();
    await signUp(server, 'alice');
    await signUp(server, 'bob');
    await addAsset(server, 'x');
    const [first, second, other] = [await enroll(server, 'alice-1', 'alice'), await enroll(server, 'alice-2', 'alice'), await enroll(server, 'bob-1', 'bob')];
    expect(await take(server, first)).toEqual(['x']);
    expect(await take(server, second)).toEqual([]);
    expect(await take(server, other)).toEqual(['x']);
    for (const node of [first, other]) await server.api.post('/complete', { asset_id: 'x', node_id: node.name, sha256: SHA, bytes: 1000 }, node.token);
    expect((await server.api.get('/assets/x', server.adminToken)).body).toMatchObject({ copies: 2, state: 'rescued' });

    // Bob's node turns out to be Alice's: her two copies count once, and the asset wants another.
    const attached = await server.api.post(`/api/nodes/${other.id}/operator`, { operator: 'alice' }, server.adminToken);
    expect(attached.body).toMatchObject({ status: 'success', operator: 'alice' });
    expect((await server.api.get('/assets/x', server.adminToken)).body).toMatchObject({ copies: 1, state: 'pending' });
    const carol = await enroll(server, 'admin-1');
    expect(await take(server, carol)).toEqual(['x']);

    const nodes = (await server.api.get('/api/nodes?operator=alice', server.adminToken)).body as { name: string; operator: string }[];
    expect(nodes.map((node) => [node.name, node.operator])).toEqual([
      ['alice-1', 'alice'],
      ['alice-2', 'alice'],
      ['bob-1', 'alice'],
    ]);
    const all = (await server.api.get('/api/nodes', server.adminToken)).body as { name: string; operator: string }[];
    expect(all.find((node) => node.name === 'admin-1')?.operator).toBe('admin');
  });

  it("gives concurrent requests of one operator's nodes one copy between them", async () => {
    const server = await suite.start();
    await signUp(server, 'alice');
    await signUp(server, 'bob');
    await server.api.post(
      '/assets',
      [{ id: 'z', url: 'https://data.example.org/z', name: 'z', size_bytes: 1000, priority: 5, replicas_target: 5 }],
      server.adminToken,
    );
    const nodes = await Promise.all(Array.from({ length: 8 }, (_, index) => enroll(server, `alice-${index}`, 'alice')));
    const granted = (await Promise.all(nodes.map((node) => take(server, node)))).flat();
    expect(granted).toEqual(['z']);
    expect(await take(server, await enroll(server, 'bob-1', 'bob'))).toEqual(['z']);
    expect((await server.api.get('/assets/z', server.adminToken)).body.active_allocations).toBe(2);
  });

  it('needs distinct operators to find a source gone', async () => {
    const server = await suite.start();
    await signUp(server, 'alice');
    await signUp(server, 'bob');
    await addAsset(server, 'y');
    const [first, second, other] = [await enroll(server, 'alice-1', 'alice'), await enroll(server, 'alice-2', 'alice'), await enroll(server, 'bob-1', 'bob')];
    const gone = (node: { name: string; token: string }) =>
      server.api.post('/release', { asset_id: 'y', node_id: node.name, cause: 'source_gone', reason: '404 Not Found' }, node.token);
    for (const node of [first, second]) {
      expect(await take(server, node)).toEqual(['y']);
      expect((await gone(node)).status).toBe(200);
    }
    expect((await server.api.get('/assets/y', server.adminToken)).body.state).toBe('pending');
    expect(await take(server, other)).toEqual(['y']);
    await gone(other);
    expect((await server.api.get('/assets/y', server.adminToken)).body.state).toBe('gone');
  });

  it('refuses a personal token for a user who does not exist, and lists whose nodes a token registers', async () => {
    const server = await suite.start();
    const refused = await server.api.post('/api/enrollment-tokens', { operator: 'nobody' }, server.adminToken);
    expect(refused.status).toBe(404);
    expect(refused.body).toMatchObject({ code: 'USER_NOT_FOUND', detail: expect.stringContaining('nobody') });
    await signUp(server, 'alice');
    await server.api.post('/api/enrollment-tokens', { operator: 'alice' }, server.adminToken);
    const tokens = (await server.api.get('/api/enrollment-tokens', server.adminToken)).body.items as { operator_id: number }[];
    expect(tokens).toHaveLength(1);
    expect(tokens[0]?.operator_id).not.toBeNull();
    const bad = await server.api.post('/api/nodes/999/operator', { operator: 'alice' }, server.adminToken);
    expect(bad.status).toBe(404);
  });
});
