import { SignJWT } from 'jose';
import { afterEach, describe, expect, it } from 'vitest';
import { createTestDatabase, dialects, type TestDatabase } from '../../test/databases.js';
import { ADMIN_PASSWORD, startTestServer, type TestServer } from '../../test/server.js';
import { createAuthFailureBudget } from '../http/auth.js';
import { addUser } from '../main.js';
import { runUserRevokeTokens } from './credentials.cli.js';

const JWT_SECRET = 'a-jwt-secret-for-the-credentials-tests';
// Longer than the user cache of http/auth.ts: what another instance or the CLI changed counts by then.
const PAST_USER_CACHE_MS = 6_000;

describe.each(dialects)('user tokens and failed authentications on %s', (dialect) => {
  let database: TestDatabase;
  let server: TestServer;

  afterEach(async () => {
    await server.stop();
    await database.drop();
  });

  const start = async (overrides: Parameters<typeof startTestServer>[1] = {}) => {
    database = await createTestDatabase(dialect);
    server = await startTestServer(database, { jwtSecret: JWT_SECRET, ...overrides });
  };
  const logIn = async (username: string, password: string): Promise<string> => {
    const response = await server.api.post('/auth/login', { username, password });
    expect(response.status, JSON.stringify(response.body)).toBe(200);
    return response.body.token;
  };
  const userId = async (username: string) =>
    (await database.handle.db.selectFrom('users').select('id').where('username', '=', username).executeTakeFirstOrThrow()).id;
  /** Sends a request from `address`, as a client behind another IP would. */
  const from = (address: string, method: 'GET' | 'POST', url: string, authorization?: string, payload?: unknown) =>
    server.app.inject({
      method,
      url,
      remoteAddress: address,
      headers: authorization === undefined ? {} : { authorization },
      ...(payload === undefined ? {} : { payload: payload as object }),
    });

  it('refuses a token without exp, iat, sub or token version, signed with the right key', async () => {
    await start();
    const seconds = Math.floor(server.clock.now() / 1000);
    const adminId = String(await userId('admin'));
    const sign = async (omit: 'exp' | 'iat' | 'sub' | 'ver' | 'none', sub = adminId) => {
      const jwt = new SignJWT({ username: 'admin', role: 'admin', ...(omit === 'ver' ? {} : { ver: 0 }) })
        .setProtectedHeader({ alg: 'HS256' })
        .setIssuer('dispatcher');
      if (omit !== 'sub') jwt.setSubject(sub);
      if (omit !== 'iat') jwt.setIssuedAt(seconds);
      if (omit !== 'exp') jwt.setExpirationTime(seconds + 3600);
      return jwt.sign(new TextEncoder().encode(JWT_SECRET));
    };
    // The same token with every claim is accepted: what the others lack is the only difference.
    expect((await server.api.get('/events', await sign('none'))).status).toBe(200);
    for (const omit of ['exp', 'iat', 'sub', 'ver'] as const) {
      const response = await server.api.get('/events', await sign(omit));
      expect({ omit, status: response.status, code: response.body.code }).toEqual({ omit, status: 401, code: 'UNAUTHENTICATED' });
    }
    expect((await server.api.get('/events', await sign('exp'))).body.detail).toMatch(/"exp"/);
    expect((await server.api.get('/events', await sign('none', 'admin'))).status).toBe(401);
  });

  it('refuses the token of a deleted user', async () => {
    await start();
    await server.api.post('/auth/signup', { username: 'bob', password: 'password1' });
    const token = await logIn('bob', 'password1');
    await database.handle.db.deleteFrom('users').where('username', '=', 'bob').execute();
    const response = await server.api.get('/schedules', token);
    expect(response.status).toBe(401);
    expect(response.body).toMatchObject({ code: 'UNAUTHENTICATED', detail: expect.stringMatching(/no longer exists/) });
  });

  it("takes the role from the database: a demoted admin's token no longer acts as admin", async () => {
    await start();
    await addUser(server.config, { username: 'carol', password: 'password1', admin: true });
    const token = await logIn('carol', 'password1');
    expect((await server.api.get('/events', token)).status).toBe(200);
    await database.handle.db.updateTable('users').set({ role: 'user' }).where('username', '=', 'carol').execute();
    server.clock.advance(PAST_USER_CACHE_MS);
    const demoted = await server.api.get('/events', token);
    expect(demoted.status).toBe(403);
    expect(demoted.body.code).toBe('FORBIDDEN');
    expect((await server.api.get('/schedules', token)).status).toBe(200);
  });

  it('revokes every token of a user with `dispatcher user revoke-tokens`, and new logins work', async () => {
    await start();
    await server.api.post('/auth/signup', { username: 'dave', password: 'password1' });
    const [first, second] = [await logIn('dave', 'password1'), await logIn('dave', 'password1')];
    expect((await server.api.get('/schedules', first)).status).toBe(200);
    expect(await runUserRevokeTokens(server.config, 'dave')).toMatch(/revoked/);
    server.clock.advance(PAST_USER_CACHE_MS);
    for (const token of [first, second]) {
      const response = await server.api.get('/schedules', token);
      expect(response.status).toBe(401);
      expect(response.body.detail).toMatch(/revoked/);
    }
    expect((await server.api.get('/schedules', await logIn('dave', 'password1'))).status).toBe(200);
    expect((await server.api.get('/schedules', server.adminToken)).status).toBe(200);
    await expect(runUserRevokeTokens(server.config, 'nobody')).rejects.toMatchObject({ code: 'USER_NOT_FOUND' });
    const events = await database.handle.db.selectFrom('events').select(['kind', 'actor']).where('kind', '=', 'user.tokens_revoked').execute();
    expect(events).toEqual([{ kind: 'user.tokens_revoked', actor: 'cli' }]);
  });

  it("revokes an admin's tokens when `dispatcher user add --admin` resets the password, not when it changes nothing", async () => {
    await start();
    expect(await addUser(server.config, { username: 'admin', password: ADMIN_PASSWORD, admin: true })).toBe('unchanged');
    server.clock.advance(PAST_USER_CACHE_MS);
    expect((await server.api.get('/events', server.adminToken)).status).toBe(200);
    expect(await addUser(server.config, { username: 'admin', password: 'a-new-admin-password', admin: true })).toBe('updated');
    server.clock.advance(PAST_USER_CACHE_MS);
    expect((await server.api.get('/events', server.adminToken)).status).toBe(401);
    expect((await server.api.get('/events', await logIn('admin', 'a-new-admin-password'))).status).toBe(200);
  });

  it('answers 429 past AUTH_FAILURES_PER_MINUTE failed authentications from an address, before any lookup, and only to it', async () => {
    await start({ authFailuresPerMinute: 6, loginRateLimitPerMinute: 1000 });
    const attacker = '192.0.2.66';
    const failures = [
      await from(attacker, 'POST', '/allocate', 'Bearer dn_not-a-node-token', { free_space_gb: 1, node_id: 'x' }),
      await from(attacker, 'GET', '/events', 'Bearer not.a.jwt'),
      await from(attacker, 'GET', '/events', 'Token malformed'),
      await from(attacker, 'POST', '/api/workers/register', 'Bearer de_not-an-enrollment-token', { hostname: 'h' }),
      await from(attacker, 'POST', '/auth/login', undefined, { username: 'admin', password: 'wrong-password' }),
      // Not an attempt: no credential at all.
      await from(attacker, 'GET', '/events'),
      await from(attacker, 'POST', '/allocate', 'Bearer dn_another-guess', { free_space_gb: 1, node_id: 'x' }),
    ];
    expect(failures.map((response) => response.statusCode)).toEqual([401, 401, 401, 401, 401, 401, 401]);
    const refused = await from(attacker, 'POST', '/allocate', 'Bearer dn_a-seventh-guess', { free_space_gb: 1, node_id: 'x' });
    expect(refused.statusCode).toBe(429);
    expect(refused.json()).toMatchObject({ code: 'RATE_LIMITED', detail: expect.stringMatching(/retry in 60 s/), retry_after_seconds: 60 });
    // Refused before the token is even looked at: a valid one from that address too, and a right password.
    expect((await from(attacker, 'GET', '/events', `Bearer ${server.adminToken}`)).statusCode).toBe(429);
    expect((await from(attacker, 'POST', '/auth/login', undefined, { username: 'admin', password: ADMIN_PASSWORD })).statusCode).toBe(429);
    // Another address is not concerned.
    expect((await from('192.0.2.7', 'GET', '/events', `Bearer ${server.adminToken}`)).statusCode).toBe(200);
    expect((await from('192.0.2.7', 'POST', '/allocate', 'Bearer dn_an-honest-mistake', { free_space_gb: 1, node_id: 'x' })).statusCode).toBe(401);
    // The next minute, the address starts afresh.
    server.clock.advance(60_000);
    expect((await from(attacker, 'GET', '/events', `Bearer ${server.adminToken}`)).statusCode).toBe(200);
  });

  it('counts wrong passwords at /auth/login against the same budget, over real HTTP', async () => {
    await start({ authFailuresPerMinute: 3, loginRateLimitPerMinute: 1000 });
    const attempts = [];
    for (let attempt = 0; attempt < 4; attempt += 1) attempts.push(await server.api.post('/auth/login', { username: 'admin', password: 'wrong-password' }));
    expect(attempts.map((response) => response.status)).toEqual([401, 401, 401, 429]);
    expect(attempts[3]!.body.detail).toMatch(/failed authentications.*retry in \d+ s/);
    expect((await server.api.get('/events', server.adminToken)).status).toBe(429);
  });
});

describe('the failed-authentication budget', () => {
  it('keeps a fixed window per address and forgets closed windows first when full', () => {
    const budget = createAuthFailureBudget(2);
    const refused = (address: string, now: number) => {
      try {
        budget.refuseWhenSpent(address, now);
        return false;
      } catch {
        return true;
      }
    };
    budget.record('a', 0);
    budget.record('a', 30_000);
    expect(refused('a', 59_999)).toBe(true);
    expect(refused('b', 59_999)).toBe(false);
    expect(refused('a', 60_000)).toBe(false);
    // A flood of addresses in one window evicts the oldest; the map never exceeds its bound.
    budget.record('c', 100_000);
    budget.record('c', 100_000);
    for (let index = 0; index < 100_000; index += 1) budget.record(`flood-${index}`, 100_001);
    expect(refused('c', 100_002)).toBe(false);
    expect(refused('flood-99999', 100_002)).toBe(false);
    budget.record('flood-99999', 100_002);
    expect(refused('flood-99999', 100_002)).toBe(true);
  });
});
