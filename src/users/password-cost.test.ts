import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { createTestDatabase, type TestDatabase } from '../../test/databases.js';
import { ADMIN_PASSWORD, startTestServer, testConfig, TEST_PASSWORD_COST } from '../../test/server.js';
import { createFakeClock } from '../clock.js';
import { PASSWORD_COST } from '../lib/secrets.js';
import { startServer } from '../main.js';

describe('the password cost of a server', () => {
  let database: TestDatabase;
  const storedHash = async (username: string) =>
    (await database.handle.db.selectFrom('users').select('password_hash').where('username', '=', username).executeTakeFirstOrThrow()).password_hash;

  beforeEach(async () => {
    database = await createTestDatabase('sqlite');
  });
  afterEach(async () => {
    await database.drop();
  });

  it('is the full cost when started without one, as `dispatcher serve` starts it', async () => {
    const server = await startServer(testConfig(database), { clock: createFakeClock(), loops: false });
    try {
      expect(server.ctx.passwordCost).toEqual(PASSWORD_COST);
      expect(await storedHash('admin')).toMatch(/^scrypt\$32768\$8\$1\$/);
      const inject = (url: string, payload: object) => server.app.inject({ method: 'POST', url, payload });
      expect((await inject('/auth/signup', { username: 'alice', password: 'correct horse' })).statusCode).toBe(200);
      expect(await storedHash('alice')).toMatch(/^scrypt\$32768\$8\$1\$/);
    } finally {
      await server.stop();
    }
  });

  it('is lowered by the test harness alone, and hashes of either cost log in', async () => {
    const production = await startServer(testConfig(database), { clock: createFakeClock(), loops: false });
    await production.stop();
    const server = await startTestServer(database);
    try {
      expect(server.ctx.passwordCost).toEqual(TEST_PASSWORD_COST);
      // The admin made at the full cost is kept (its password did not change) and logs in.
      expect(await storedHash('admin')).toMatch(/^scrypt\$32768\$8\$1\$/);
      expect((await server.api.post('/auth/login', { username: 'admin', password: ADMIN_PASSWORD })).status).toBe(200);
      expect((await server.api.post('/auth/signup', { username: 'bob', password: 'correct horse' })).status).toBe(200);
      expect(await storedHash('bob')).toMatch(/^scrypt\$16\$8\$1\$/);
      expect((await server.api.post('/auth/login', { username: 'bob', password: 'correct horse' })).status).toBe(200);
      expect((await server.api.post('/auth/login', { username: 'bob', password: 'correct horsE' })).status).toBe(401);
    } finally {
      await server.stop();
    }
  });
});
