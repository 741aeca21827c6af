import { SignJWT } from 'jose';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { createTestDatabase, dialects, type TestDatabase } from '../../test/databases.js';
import { ADMIN_PASSWORD, registerNode, startTestServer, type TestServer } from '../../test/server.js';

describe.each(dialects)('accounts and credentials on %s', (dialect) => {
  let database: TestDatabase;
  let server: TestServer;

  beforeEach(async () => {
    database = await createTestDatabase(dialect);
    server = await startTestServer(database);
  });
  afterEach(async () => {
    await server.stop();
    await database.drop();
  });

  it('signs up and logs in with the seed shapes', async () => {
    const signup = await server.api.post('/auth/signup', { username: 'alice', password: 'correct horse' });
    expect(signup.status).toBe(200);
    expect(signup.body).toEqual({ message: 'Compte créé' });
    const login = await server.api.post('/auth/login', { username: 'alice', password: 'correct horse' });
    expect(login.status).toBe(200);
    expect(Object.keys(login.body)).toEqual(['token']);
    expect(login.body.token.split('.')).toHaveLength(3);
    const stored = await database.handle.db.selectFrom('users').select(['password_hash', 'role']).where('username', '=', 'alice').executeTakeFirstOrThrow();
    expect(stored.role).toBe('user');
    expect(stored.password_hash).toMatch(/^scrypt\$/);
    expect(stored.password_hash).not.toContain('correct horse');
  });

  it('refuses a taken username with 409 and bad usernames or passwords with 422', async () => {
    await server.api.post('/auth/signup', { username: 'bob', password: 'password1' });
    const taken = await server.api.post('/auth/signup', { username: 'bob', password: 'password2' });
    expect(taken.status).toBe(409);
    expect(taken.body).toMatchObject({ code: 'USERNAME_TAKEN', detail: expect.stringContaining('bob') });
    for (const body of [
      { username: 'ab', password: 'password1' },
      { username: 'x'.repeat(33), password: 'password1' },
      { username: 'Root!', password: 'password1' },
      { username: 'root; rm -rf /', password: 'password1' },
      { username: 'carol', password: 'short' },
    ]) {
      const response = await server.api.post('/auth/signup', body);
      expect(response.status, JSON.stringify(body)).toBe(422);
      expect(response.body.code).toBe('VALIDATION_ERROR');
    }
    const users = await database.handle.db.selectFrom('users').select('username').execute();
    expect(users.map((user) => user.username).sort()).toEqual(['admin', 'bob']);
  });

  it('refuses a wrong password or unknown user with the same 401', async () => {
    const wrong = await server.api.post('/auth/login', { username: 'admin', password: 'not the password' });
    const unknown = await server.api.post('/auth/login', { username: 'nobody', password: 'whatever1' });
    expect(wrong.status).toBe(401);
    expect(unknown.status).toBe(401);
    expect(wrong.body).toEqual(unknown.body);
  });

  it('answers 401 for missing, malformed, forged and expired tokens', async () => {
    const body = { updates: [{ asset_id: 'x', new_priority: 5 }] };
    const missing = await server.api.post('/update-ckan', body);
    expect(missing.status).toBe(401);
    expect(missing.body.detail).toMatch(/Authorization/);
    const malformed = await server.api.request('POST', '/update-ckan', { body, headers: { authorization: 'Token abc' } });
    expect(malformed.status).toBe(401);
    const garbage = await server.api.post('/update-ckan', body, 'not.a.jwt');
    expect(garbage.status).toBe(401);
    const forged = await new SignJWT({ username: 'admin', role: 'admin' })
      .setProtectedHeader({ alg: 'HS256' })
      .setSubject('1')
      .setIssuer('dispatcher')
      .setExpirationTime('1h')
      .sign(new TextEncoder().encode('a guessed secret that is long enough'));
    expect((await server.api.post('/update-ckan', body, forged)).status).toBe(401);
    server.clock.advance(server.config.tokenTtlMs + 1000);
    const expired = await server.api.post('/update-ckan', body, server.adminToken);
    expect(expired.status).toBe(401);
    expect(expired.body.code).toBe('TOKEN_EXPIRED');
    const unknownNode = await server.api.post('/allocate', { free_space_gb: 1, node_id: 'x' }, 'dn_unknown');
    expect(unknownNode.status).toBe(401);
  });

  it('answers 403 when the role is wrong', async () => {
    await server.api.post('/auth/signup', { username: 'dave', password: 'password1' });
    const { body } = await server.api.post('/auth/login', { username: 'dave', password: 'password1' });
    expect((await server.api.post('/update-ckan', { updates: [{ asset_id: 'x', new_priority: 5 }] }, body.token)).status).toBe(403);
    expect((await server.api.post('/assets', [], body.token)).status).toBe(403);
    expect((await server.api.post('/api/enrollment-tokens', {}, body.token)).status).toBe(403);
    expect((await server.api.get('/events', body.token)).status).toBe(403);
    expect((await server.api.post('/allocate', { free_space_gb: 1, node_id: 'x' }, body.token)).status).toBe(403);
    expect((await server.api.post('/api/workers/register', { hostname: 'h' }, body.token)).status).toBe(403);
  });

  it('keeps a node token to its own node', async () => {
    const mine = await registerNode(server, 'mine');
    await registerNode(server, 'theirs');
    for (const [path, body] of [
      ['/allocate', { free_space_gb: 1, node_id: 'theirs' }],
      ['/release', { asset_id: 'a', node_id: 'theirs' }],
      ['/complete', { asset_id: 'a', node_id: 'theirs', sha256: 'a'.repeat(64), bytes: 1 }],
    ] as const) {
      const response = await server.api.post(path, body, mine.token);
      expect(response.status, path).toBe(403);
      expect(response.body.code).toBe('FORBIDDEN');
    }
    // Orion's integer id works as well as the name.
    expect((await server.api.post('/allocate', { free_space_gb: 1, node_id: mine.id }, mine.token)).status).toBe(404);
    // Node tokens are not user tokens.
    expect((await server.api.post('/update-ckan', { updates: [{ asset_id: 'x', new_priority: 5 }] }, mine.token)).status).toBe(403);
    const hashes = await database.handle.db.selectFrom('nodes').select('token_hash').execute();
    expect(hashes.every((row) => row.token_hash !== mine.token && row.token_hash!.length > 20)).toBe(true);
  });

  it('registers nodes with an enrollment token and keeps the seed messages', async () => {
    const enrollment = await server.api.post('/api/enrollment-tokens', { note: 'campaign', expires_in_hours: 1 }, server.adminToken);
    expect(enrollment.status).toBe(200);
    const first = await server.api.post('/api/workers/register', { hostname: 'worker1', ip: '192.0.2.10', ssh_port: 22221 }, enrollment.body.token);
    expect(first.status).toBe(200);
    expect(first.body).toMatchObject({
      message: 'Worker enregistré avec succès',
      name: 'worker1',
      node_id: expect.any(Number),
      node_token: expect.stringMatching(/^dn_/),
    });
    const again = await server.api.post('/api/workers/register', { hostname: 'worker1', ip: '192.0.2.11', ssh_port: 22222 }, first.body.node_token);
    expect(again.body).toEqual({ message: 'Worker déjà enregistré', node_id: first.body.node_id, name: 'worker1', node_token: first.body.node_token });
    const node = await database.handle.db.selectFrom('nodes').selectAll().where('name', '=', 'worker1').executeTakeFirstOrThrow();
    expect(node).toMatchObject({ ip: '192.0.2.11', ssh_port: 22222 });
    // Someone else with the enrollment token cannot take over the name.
    const takeover = await server.api.post('/api/workers/register', { hostname: 'worker1' }, enrollment.body.token);
    expect(takeover.status).toBe(409);
    expect(takeover.body.code).toBe('NODE_NAME_TAKEN');
    // An admin can, and the node's token is rotated.
    const rotated = await server.api.post('/api/workers/register', { hostname: 'worker1' }, server.adminToken);
    expect(rotated.body.message).toBe('Worker déjà enregistré');
    expect(rotated.body.node_token).not.toBe(first.body.node_token);
    expect((await server.api.post('/allocate', { free_space_gb: 1, node_id: 'worker1' }, first.body.node_token)).status).toBe(401);
    // Tokens expire.
    server.clock.advance(2 * 3_600_000);
    expect((await server.api.post('/api/workers/register', { hostname: 'late' }, enrollment.body.token)).status).toBe(401);
  });

  it('creates an enrollment token from a bare POST with no body, expiring after ENROLLMENT_TOKEN_TTL_HOURS', async () => {
    const response = await server.api.request('POST', '/api/enrollment-tokens', { token: server.adminToken });
    expect(response.status).toBe(200);
    expect(response.body.token).toMatch(/^de_/);
    expect(response.body.expires_at).toBe(new Date(server.clock.now() + server.config.enrollmentTokenTtlMs).toISOString());
    expect(response.body.max_uses).toBeNull();
  });

  it('refuses unauthenticated or badly authenticated registration and changes nothing', async () => {
    expect((await server.api.post('/api/workers/register', { hostname: 'h1' })).status).toBe(401);
    expect((await server.api.post('/api/workers/register', { hostname: 'h1' }, 'de_forged')).status).toBe(401);
    expect((await server.api.post('/api/workers/register', { hostname: 'h1' }, 'x'.repeat(40))).status).toBe(401);
    expect(await database.handle.db.selectFrom('nodes').selectAll().execute()).toEqual([]);
  });

  it('accepts NODE_ENROLLMENT_TOKEN from the environment', async () => {
    await server.stop();
    const token = 'an-enrollment-token-from-the-environment';
    server = await startTestServer(database, { nodeEnrollmentToken: token });
    const response = await server.api.post('/api/workers/register', { hostname: 'envnode' }, token);
    expect(response.status).toBe(200);
    expect(response.body.message).toBe('Worker enregistré avec succès');
    // It has no use count: it registers as many nodes as it is given to.
    expect((await server.api.post('/api/workers/register', { hostname: 'envnode-2' }, token)).status).toBe(200);
  });

  it('keeps tokens valid across a restart (secret kept in the database) and closes sign-up on demand', async () => {
    const token = server.adminToken;
    await server.stop();
    server = await startTestServer(database, { signup: 'closed' }, server.clock);
    expect((await server.api.get('/events', token)).status).toBe(200);
    const closed = await server.api.post('/auth/signup', { username: 'erin', password: 'password1' });
    expect(closed.status).toBe(403);
    expect(closed.body.code).toBe('SIGNUP_CLOSED');
  });

  it('makes or resets the first admin from DISPATCHER_ADMIN_PASSWORD', async () => {
    await server.stop();
    server = await startTestServer(database, { adminUser: 'root-admin', adminPassword: 'another-password' });
    const login = await server.api.post('/auth/login', { username: 'root-admin', password: 'another-password' });
    expect(login.status).toBe(200);
    expect((await server.api.get('/events', login.body.token)).status).toBe(200);
    expect((await server.api.post('/auth/login', { username: 'admin', password: ADMIN_PASSWORD })).status).toBe(200);
  });

  it('records user, node and token events with their actor', async () => {
    await server.api.post('/auth/signup', { username: 'frank', password: 'password1' });
    await registerNode(server, 'evented');
    const events = await server.api.get('/events?limit=1000', server.adminToken);
    const kinds = events.body.items.map((event: { kind: string; actor: string }) => `${event.kind} by ${event.actor}`);
    expect(kinds).toEqual(
      expect.arrayContaining(['user.created by user:frank', 'enrollment_token.issued by user:admin', 'node.created by enrollment', 'user.created by system']),
    );
  });

  it('limits login attempts per client address', async () => {
    await server.stop();
    server = await startTestServer(database, { loginRateLimitPerMinute: 3 });
    // startTestServer logged in once already.
    const attempts = [];
    for (let attempt = 0; attempt < 3; attempt += 1) attempts.push(await server.api.post('/auth/login', { username: 'admin', password: 'wrong-password' }));
    expect(attempts.map((response) => response.status)).toEqual([401, 401, 429]);
    expect(attempts[2]!.body).toMatchObject({ code: 'RATE_LIMITED', detail: expect.stringContaining('retry') });
  });
});
