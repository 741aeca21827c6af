import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { createTestDatabase, dialects, type TestDatabase } from '../../test/databases.js';
import { startTestServer, type TestServer } from '../../test/server.js';
import { hashToken } from '../lib/secrets.js';
import { runTokenCreate, runTokenList, runTokenRevoke } from '../users/credentials.cli.js';
import { claimEnrollmentTokenUse, insertEnrollmentToken } from './nodes.repository.js';
import { enrollmentTokenState } from './nodes.service.js';

const HOUR = 3_600_000;

describe.each(dialects)('enrollment tokens on %s', (dialect) => {
  let database: TestDatabase;
  let server: TestServer;
  let user: string;

  beforeAll(async () => {
    database = await createTestDatabase(dialect);
    server = await startTestServer(database, { loginRateLimitPerMinute: 1000 });
    await server.api.post('/auth/signup', { username: 'plain-user', password: 'password1' });
    user = (await server.api.post('/auth/login', { username: 'plain-user', password: 'password1' })).body.token;
  });
  afterAll(async () => {
    await server?.stop();
    await database?.drop();
  });
  beforeEach(async () => {
    await database.handle.db.deleteFrom('nodes').execute();
  });

  const create = async (body: Record<string, unknown> = {}) => {
    const response = await server.api.post('/api/enrollment-tokens', body, server.adminToken);
    expect(response.status, JSON.stringify(response.body)).toBe(200);
    return response.body as { token: string; id: number; expires_at: string | null; max_uses: number | null };
  };
  const register = (hostname: string, token: string, ip = '192.0.2.1') => server.api.post('/api/workers/register', { hostname, ip, ssh_port: 22 }, token);
  const listed = async (id: number) => {
    const response = await server.api.get('/api/enrollment-tokens?limit=1000', server.adminToken);
    expect(response.status).toBe(200);
    return response.body.items.find((item: { id: number }) => item.id === id);
  };

  it('lists tokens newest first with their uses and state, never the token or its hash', async () => {
    const older = await create({ note: 'first campaign' });
    const newer = await create({ note: 'second campaign', max_uses: 3, expires_in_hours: 2 });
    expect(older.expires_at).toBe(new Date(server.clock.now() + server.config.enrollmentTokenTtlMs).toISOString());
    expect(newer).toMatchObject({ max_uses: 3, expires_at: new Date(server.clock.now() + 2 * HOUR).toISOString() });
    const response = await server.api.get('/api/enrollment-tokens', server.adminToken);
    const ids = response.body.items.map((item: { id: number }) => item.id);
    expect(ids.indexOf(newer.id)).toBeLessThan(ids.indexOf(older.id));
    expect(await listed(newer.id)).toEqual({
      id: newer.id,
      note: 'second campaign',
      created_at: new Date(server.clock.now()).toISOString(),
      expires_at: newer.expires_at,
      uses: 0,
      max_uses: 3,
      revoked_at: null,
      state: 'active',
      // Its nodes belong to the admin who made it.
      operator_id: expect.any(Number),
    });
    const text = JSON.stringify(response.body);
    for (const secret of [older.token, newer.token, hashToken(older.token), hashToken(newer.token)]) expect(text).not.toContain(secret);
    const page = await server.api.get(`/api/enrollment-tokens?limit=1&cursor=${newer.id}`, server.adminToken);
    expect(page.body.items.map((item: { id: number }) => item.id)).toEqual([older.id]);
    expect(page.body.next_cursor).toBe(older.id);
  });

  it('registers at most max_uses nodes; then 401 saying it is used up, though its own machines may register again', async () => {
    const { token, id } = await create({ max_uses: 2 });
    expect((await register('capped-a', token)).status).toBe(200);
    expect((await register('capped-b', token)).status).toBe(200);
    const third = await register('capped-c', token);
    expect(third.status).toBe(401);
    expect(third.body).toMatchObject({ code: 'UNAUTHENTICATED', detail: expect.stringMatching(/used up/) });
    // Seed 003's agent registers again at every boot with the same body: it still gets its answer.
    const again = await register('capped-a', token);
    expect(again.status).toBe(200);
    expect(again.body.message).toBe('Worker déjà enregistré');
    expect(await listed(id)).toMatchObject({ uses: 2, max_uses: 2, state: 'used_up' });
    const created = await database.handle.db.selectFrom('events').select('data').where('kind', '=', 'node.created').where('actor', '=', 'enrollment').execute();
    expect(created.map((event) => JSON.parse(event.data as string).enrollment_token_id)).toEqual(expect.arrayContaining([id, id]));
  });

  it('never lets concurrent registrations exceed max_uses', async () => {
    const { token, id } = await create({ max_uses: 1 });
    const responses = await Promise.all(Array.from({ length: 6 }, (_, index) => register(`racer-${index}`, token, `192.0.2.${10 + index}`)));
    expect(responses.map((response) => response.status).sort()).toEqual([200, 401, 401, 401, 401, 401]);
    expect(await database.handle.db.selectFrom('nodes').select('name').where('name', 'like', 'racer-%').execute()).toHaveLength(1);
    expect(await listed(id)).toMatchObject({ uses: 1, state: 'used_up' });
  });

  it('revokes a token at once, idempotently; unknown ids are 404 and only admins list or revoke', async () => {
    const { token, id } = await create({ note: 'leaked' });
    expect((await register('before-revoke', token)).status).toBe(200);
    const revoked = await server.api.request('DELETE', `/api/enrollment-tokens/${id}`, { token: server.adminToken });
    expect(revoked.status).toBe(200);
    expect(revoked.body).toMatchObject({ id, note: 'leaked', uses: 1, state: 'revoked', revoked_at: new Date(server.clock.now()).toISOString() });
    const refused = await register('after-revoke', token);
    expect(refused.status).toBe(401);
    expect(refused.body.detail).toMatch(/revoked/);
    server.clock.advance(1000);
    const again = await server.api.request('DELETE', `/api/enrollment-tokens/${id}`, { token: server.adminToken });
    expect(again.body.revoked_at).toBe(revoked.body.revoked_at);
    const events = await database.handle.db
      .selectFrom('events')
      .select('actor')
      .where('kind', '=', 'enrollment_token.revoked')
      .where('subject_id', '=', String(id))
      .execute();
    expect(events).toEqual([{ actor: 'user:admin' }]);
    // The node it registered keeps its own token.
    expect(
      (await server.api.get('/api/nodes', (await server.api.post('/api/workers/register', { hostname: 'x' }, server.adminToken)).body.node_token)).status,
    ).toBe(200);
    const missing = await server.api.request('DELETE', '/api/enrollment-tokens/999999', { token: server.adminToken });
    expect(missing.status).toBe(404);
    expect(missing.body.code).toBe('ENROLLMENT_TOKEN_NOT_FOUND');
    expect((await server.api.get('/api/enrollment-tokens', user)).status).toBe(403);
    expect((await server.api.request('DELETE', `/api/enrollment-tokens/${id}`, { token: user })).status).toBe(403);
    expect((await server.api.get('/api/enrollment-tokens')).status).toBe(401);
  });

  it('expires after ENROLLMENT_TOKEN_TTL_HOURS when created without expires_in_hours', async () => {
    const { token, id } = await create();
    server.clock.advance(server.config.enrollmentTokenTtlMs - 1000);
    expect((await register('in-time', token)).status).toBe(200);
    server.clock.advance(1000);
    const late = await register('too-late', token);
    expect(late.status).toBe(401);
    expect(late.body.detail).toMatch(/expired/);
    // A week went by: the user tokens expired too.
    server.adminToken = (await server.api.post('/auth/login', { username: 'admin', password: server.config.adminPassword })).body.token;
    user = (await server.api.post('/auth/login', { username: 'plain-user', password: 'password1' })).body.token;
    expect(await listed(id)).toMatchObject({ state: 'expired' });
  });

  it('claims a use in SQL exactly when the state rule says active', async () => {
    const now = server.clock.now();
    const shapes = [
      { expiresAt: null, maxUses: null, uses: 0, revokedAt: null },
      { expiresAt: now + 1, maxUses: 1, uses: 0, revokedAt: null },
      { expiresAt: now, maxUses: null, uses: 0, revokedAt: null },
      { expiresAt: now - 1, maxUses: 5, uses: 1, revokedAt: null },
      { expiresAt: null, maxUses: 2, uses: 2, revokedAt: null },
      { expiresAt: null, maxUses: 2, uses: 3, revokedAt: null },
      { expiresAt: null, maxUses: null, uses: 7, revokedAt: now - 1 },
      { expiresAt: now + HOUR, maxUses: 3, uses: 1, revokedAt: now },
    ];
    for (const [index, shape] of shapes.entries()) {
      const row = await insertEnrollmentToken(database.handle.db, {
        tokenHash: `rule-${index}-${dialect}`,
        note: null,
        createdBy: null,
        now: now - HOUR,
        expiresAt: shape.expiresAt,
        maxUses: shape.maxUses,
      });
      const stored = await database.handle.db
        .updateTable('enrollment_tokens')
        .set({ uses: shape.uses, revoked_at: shape.revokedAt })
        .where('id', '=', row.id)
        .returningAll()
        .executeTakeFirstOrThrow();
      const rule = enrollmentTokenState(stored, now) === 'active';
      const claimed = (await claimEnrollmentTokenUse(database.handle.db, row.id, now)) !== undefined;
      expect({ shape, claimed }).toEqual({ shape, claimed: rule });
    }
  });

  it('creates, lists and revokes from the command line', async () => {
    const before = Date.now();
    const created = await runTokenCreate(server.config, { note: 'from the cli', maxUses: 4 });
    expect(created.token).toMatch(/^de_/);
    expect(created.maxUses).toBe(4);
    expect(created.expiresAt).toBeGreaterThanOrEqual(before + server.config.enrollmentTokenTtlMs);
    expect(created.expiresAt).toBeLessThanOrEqual(Date.now() + server.config.enrollmentTokenTtlMs);
    const id = (
      await database.handle.db.selectFrom('enrollment_tokens').select('id').where('token_hash', '=', hashToken(created.token)).executeTakeFirstOrThrow()
    ).id;
    const table = await runTokenList(server.config);
    expect(table.split('\n')[0]).toMatch(/^id\s+state\s+uses\s+created\s+expires\s+note$/);
    expect(table).toMatch(new RegExp(`^${id}\\s+active\\s+0/4\\s+\\S+\\s+\\S+\\s+from the cli$`, 'm'));
    expect(table).not.toContain(created.token);
    expect(await runTokenRevoke(server.config, id)).toMatch(new RegExp(`token ${id} revoked`));
    expect(await runTokenList(server.config)).toMatch(new RegExp(`^${id}\\s+revoked`, 'm'));
    await expect(runTokenRevoke(server.config, 999_999)).rejects.toMatchObject({ code: 'ENROLLMENT_TOKEN_NOT_FOUND' });
    const short = await runTokenCreate(server.config, { expiresInHours: 1 });
    expect(short.expiresAt).toBeLessThanOrEqual(Date.now() + HOUR);
    // A personal token: the nodes it registers belong to that user.
    await expect(runTokenCreate(server.config, { operator: 'nobody' })).rejects.toMatchObject({ code: 'USER_NOT_FOUND' });
    const personal = await runTokenCreate(server.config, { operator: server.config.adminUser });
    const row = await database.handle.db
      .selectFrom('enrollment_tokens')
      .select('operator_id')
      .where('token_hash', '=', hashToken(personal.token))
      .executeTakeFirstOrThrow();
    expect(row.operator_id).not.toBeNull();
  });
});
