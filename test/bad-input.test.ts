import { sql } from 'kysely';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createTestDatabase, dialects, type TestDatabase } from './databases.js';
import { makeAssets, registerNode, startTestServer, type TestServer } from './server.js';

type Who = 'none' | 'admin' | 'node' | 'other-node';

interface BadRequest {
  method: 'GET' | 'POST';
  path: string;
  who: Who;
  /** A JSON value, or a raw string sent as is. */
  body?: unknown;
  raw?: string;
  contentType?: string;
  status: number;
}

const TWO_MB = 'x'.repeat(2 * 1024 * 1024);
const sha = 'a'.repeat(64);

/** Bad requests every POST route must refuse the same way. */
function malformed(path: string, who: Who): BadRequest[] {
  return [
    { method: 'POST', path, who, raw: '{"free_space_gb": 1,', status: 400 },
    { method: 'POST', path, who, raw: 'null', status: 422 },
    { method: 'POST', path, who, raw: JSON.stringify({ padding: TWO_MB }), status: 413 },
    { method: 'POST', path, who, raw: 'free_space_gb=1', contentType: 'application/x-www-form-urlencoded', status: 415 },
  ];
}

const cases: BadRequest[] = [
  ...malformed('/auth/signup', 'none'),
  { method: 'POST', path: '/auth/signup', who: 'none', body: { username: 123, password: 'password1' }, status: 422 },
  { method: 'POST', path: '/auth/signup', who: 'none', body: { username: 'valid' }, status: 422 },
  { method: 'POST', path: '/auth/signup', who: 'none', body: { username: 'v'.repeat(1000), password: 'password1' }, status: 422 },
  ...malformed('/auth/login', 'none'),
  { method: 'POST', path: '/auth/login', who: 'none', body: { username: ['admin'], password: 'x' }, status: 422 },
  ...malformed('/api/enrollment-tokens', 'admin'),
  { method: 'POST', path: '/api/enrollment-tokens', who: 'admin', body: { expires_in_hours: -1 }, status: 422 },
  { method: 'POST', path: '/api/enrollment-tokens', who: 'admin', body: { expires_in_hours: 'soon' }, status: 422 },
  { method: 'POST', path: '/api/enrollment-tokens', who: 'admin', body: { expires_in_hours: 1e300 }, status: 422 },
  ...malformed('/api/workers/register', 'admin'),
  { method: 'POST', path: '/api/workers/register', who: 'admin', body: { ip: '10.0.0.1' }, status: 422 },
  { method: 'POST', path: '/api/workers/register', who: 'admin', body: { hostname: 'h', ssh_port: 0 }, status: 422 },
  { method: 'POST', path: '/api/workers/register', who: 'admin', body: { hostname: 'h', ssh_port: 70000 }, status: 422 },
  { method: 'POST', path: '/api/workers/register', who: 'admin', body: { hostname: 'h', ssh_port: '22' }, status: 422 },
  { method: 'POST', path: '/api/workers/register', who: 'admin', body: { hostname: 'h', ip: 'not-an-ip' }, status: 422 },
  { method: 'POST', path: '/api/workers/register', who: 'admin', body: { hostname: 'h; rm -rf /' }, status: 422 },
  { method: 'POST', path: '/api/workers/register', who: 'admin', body: { hostname: 'h', node_id: '' }, status: 422 },
  { method: 'POST', path: '/api/workers/register', who: 'admin', body: { hostname: 'h', node_id: 99999 }, status: 404 },
  ...malformed('/assets', 'admin'),
  { method: 'POST', path: '/assets', who: 'admin', body: { id: 'a', url: 'http://x', name: 'n', priority: 5 }, status: 422 },
  ...[
    { priority: 0 },
    { priority: 11 },
    { priority: 'high' },
    { size_mb: -1 },
    { size_mb: 'big' },
    { size_mb: 1e300 },
    { size_bytes: 1.5 },
    { url: 'ftp://example.org/file' },
    { url: undefined },
    { sha256: 'not-a-checksum' },
    { replicas_target: 0 },
  ].map((override): BadRequest => ({
    method: 'POST',
    path: '/assets',
    who: 'admin',
    body: [...makeAssets(1, {}, 'fine'), { ...makeAssets(1, {}, 'bad')[0], ...override }],
    status: 422,
  })),
  ...malformed('/allocate', 'node'),
  { method: 'POST', path: '/allocate', who: 'node', body: { free_space_gb: -1, node_id: 'bad-input-node' }, status: 422 },
  { method: 'POST', path: '/allocate', who: 'node', body: { free_space_gb: '10', node_id: 'bad-input-node' }, status: 422 },
  { method: 'POST', path: '/allocate', who: 'node', body: { free_space_gb: 'lots', node_id: 'bad-input-node' }, status: 422 },
  { method: 'POST', path: '/allocate', who: 'node', body: { free_space_gb: 1e300, node_id: 'bad-input-node' }, status: 422 },
  { method: 'POST', path: '/allocate', who: 'node', body: { free_space_gb: 10 }, status: 422 },
  { method: 'POST', path: '/allocate', who: 'node', body: { free_space_gb: 10, node_id: 'bad-input-node', max_assets: 0 }, status: 422 },
  { method: 'POST', path: '/allocate', who: 'node', body: { free_space_gb: 10, node_id: 'bad-input-node', max_assets: 5000 }, status: 422 },
  { method: 'POST', path: '/allocate', who: 'node', body: { free_space_gb: 10, node_id: 'bad-input-node', min_priority: 11 }, status: 422 },
  { method: 'POST', path: '/allocate', who: 'other-node', body: { free_space_gb: 10, node_id: 'bad-input-node' }, status: 403 },
  { method: 'POST', path: '/allocate', who: 'none', body: { free_space_gb: 10, node_id: 'bad-input-node' }, status: 401 },
  ...malformed('/release', 'node'),
  { method: 'POST', path: '/release', who: 'node', body: { node_id: 'bad-input-node' }, status: 422 },
  { method: 'POST', path: '/release', who: 'node', body: { asset_id: 'held-1', node_id: 42.5 }, status: 422 },
  { method: 'POST', path: '/release', who: 'node', body: { asset_id: 'unknown-asset', node_id: 'bad-input-node' }, status: 404 },
  { method: 'POST', path: '/release', who: 'other-node', body: { asset_id: 'held-1', node_id: 'bad-input-node' }, status: 403 },
  { method: 'POST', path: '/release', who: 'admin', body: { asset_id: 'held-1', node_id: 'no-such-node' }, status: 404 },
  ...malformed('/complete', 'node'),
  { method: 'POST', path: '/complete', who: 'node', body: { asset_id: 'held-1', node_id: 'bad-input-node', sha256: 'xyz', bytes: 1 }, status: 422 },
  { method: 'POST', path: '/complete', who: 'node', body: { asset_id: 'held-1', node_id: 'bad-input-node', sha256: sha, bytes: -1 }, status: 422 },
  { method: 'POST', path: '/complete', who: 'node', body: { asset_id: 'held-1', node_id: 'bad-input-node', sha256: sha, bytes: 'many' }, status: 422 },
  { method: 'POST', path: '/complete', who: 'node', body: { asset_id: 'held-1', node_id: 'bad-input-node', sha256: sha }, status: 422 },
  { method: 'POST', path: '/complete', who: 'node', body: { asset_id: 'unknown-asset', node_id: 'bad-input-node', sha256: sha, bytes: 1 }, status: 404 },
  { method: 'POST', path: '/complete', who: 'other-node', body: { asset_id: 'held-1', node_id: 'bad-input-node', sha256: sha, bytes: 1 }, status: 403 },
  ...malformed('/update-ckan', 'admin'),
  { method: 'POST', path: '/update-ckan', who: 'admin', body: { updates: [] }, status: 422 },
  { method: 'POST', path: '/update-ckan', who: 'admin', body: { updates: 'all' }, status: 422 },
  { method: 'POST', path: '/update-ckan', who: 'admin', body: { updates: [{ asset_id: 'held-1', new_priority: 0 }] }, status: 422 },
  { method: 'POST', path: '/update-ckan', who: 'admin', body: { updates: [{ asset_id: 'held-1', new_priority: 11 }] }, status: 422 },
  {
    method: 'POST',
    path: '/update-ckan',
    who: 'admin',
    body: {
      updates: [
        { asset_id: 'held-1', new_priority: 3 },
        { asset_id: 'ghost', new_priority: 3 },
      ],
    },
    status: 404,
  },
  { method: 'GET', path: '/assets?limit=0', who: 'admin', status: 422 },
  { method: 'GET', path: '/assets?limit=100000', who: 'admin', status: 422 },
  { method: 'GET', path: '/assets?limit=abc', who: 'admin', status: 422 },
  { method: 'GET', path: '/assets?min_priority=11', who: 'admin', status: 422 },
  { method: 'GET', path: '/assets?state=lost', who: 'admin', status: 422 },
  { method: 'GET', path: '/assets', who: 'none', status: 401 },
  { method: 'GET', path: '/assets/ghost', who: 'admin', status: 404 },
  { method: 'GET', path: '/allocations?cursor=abc', who: 'admin', status: 422 },
  { method: 'GET', path: '/assets?cursor=garbage', who: 'admin', status: 422 },
  { method: 'GET', path: '/assets?cursor=YXNzZXQ6', who: 'admin', status: 422 },
  { method: 'GET', path: '/allocations?state=bogus', who: 'admin', status: 422 },
  { method: 'GET', path: '/allocations?node=ghost-node', who: 'admin', status: 404 },
  { method: 'GET', path: '/allocations?node=bad-input-node', who: 'other-node', status: 403 },
  { method: 'GET', path: '/events?limit=-1', who: 'admin', status: 422 },
  { method: 'GET', path: '/events', who: 'node', status: 403 },
  { method: 'GET', path: '/no/such/route', who: 'none', status: 404 },
  { method: 'POST', path: '/status', who: 'none', body: {}, status: 404 },
];

describe.each(dialects)('bad input on %s', (dialect) => {
  let database: TestDatabase;
  let server: TestServer;
  const tokens: Record<Who, string | undefined> = { none: undefined, admin: undefined, node: undefined, 'other-node': undefined };

  /** Every table's row count and a digest of the rows that matter: "changes nothing" means equal. */
  async function snapshot(): Promise<string> {
    const db = database.handle.db;
    const tables = ['users', 'nodes', 'enrollment_tokens', 'assets', 'allocations', 'events'] as const;
    const counts = await Promise.all(
      tables.map((table) =>
        db
          .selectFrom(table)
          .select(sql<number>`count(*)`.as('n'))
          .executeTakeFirstOrThrow(),
      ),
    );
    const assets = await db.selectFrom('assets').select(['id', 'priority', 'holders', 'copies', 'state', 'size_bytes']).orderBy('id').execute();
    const allocations = await db.selectFrom('allocations').select(['id', 'state', 'reserved_bytes']).orderBy('id').execute();
    const nodes = await db.selectFrom('nodes').select(['id', 'name', 'free_bytes', 'token_hash', 'ssh_port']).orderBy('id').execute();
    return JSON.stringify({ counts: counts.map((row) => Number(row.n)), assets, allocations, nodes });
  }

  beforeAll(async () => {
    database = await createTestDatabase(dialect);
    server = await startTestServer(database);
    tokens.admin = server.adminToken;
    tokens.node = (await registerNode(server, 'bad-input-node')).token;
    tokens['other-node'] = (await registerNode(server, 'other-node')).token;
    await server.api.post('/assets', makeAssets(2, { size_bytes: 10, size_mb: undefined }, 'held'), server.adminToken);
    await server.api.post('/allocate', { free_space_gb: 1, node_id: 'bad-input-node' }, tokens.node);
  });
  afterAll(async () => {
    await server.stop();
    await database.drop();
  });

  it.each(
    cases.map(
      (testCase) =>
        [
          `${testCase.method} ${testCase.path} as ${testCase.who}: ${testCase.raw === undefined ? JSON.stringify(testCase.body)?.slice(0, 90) : testCase.raw.slice(0, 40)}`,
          testCase,
        ] as const,
    ),
  )('%s', async (_name, testCase) => {
    const before = await snapshot();
    const response = await server.api.request(testCase.method, testCase.path, {
      token: tokens[testCase.who],
      ...(testCase.raw !== undefined ? { rawBody: testCase.raw } : testCase.body !== undefined ? { body: testCase.body } : {}),
      headers: testCase.contentType ? { 'content-type': testCase.contentType } : {},
    });
    expect(response.status).toBe(testCase.status);
    expect(typeof response.body.detail).toBe('string');
    expect(response.body.detail.length).toBeGreaterThan(5);
    expect(typeof response.body.code).toBe('string');
    expect(JSON.stringify(response.body)).not.toMatch(/at .*\.(ts|js):\d+/);
    expect(await snapshot()).toBe(before);
    expect((await server.api.get('/health')).status).toBe(200);
  });

  it('reports every failing field in one 422', async () => {
    const response = await server.api.post('/allocate', { free_space_gb: 'ten', max_assets: -3 }, tokens.node);
    expect(response.status).toBe(422);
    expect(response.body.fields.map((field: { field: string }) => field.field).sort()).toEqual(['body/free_space_gb', 'body/max_assets', 'body/node_id']);
  });
});
