import path from 'node:path';
import SqliteDatabase from 'better-sqlite3';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { createTestDatabase, type TestDatabase } from '../../test/databases.js';
import { makeAssets, registerNode, startTestServer, type TestServer } from '../../test/server.js';
import { SQLITE_FILE_NAME } from '../db/database.js';

describe('a busy SQLite database', () => {
  let database: TestDatabase;
  let server: TestServer;

  beforeEach(async () => {
    database = await createTestDatabase('sqlite');
    server = await startTestServer(database);
  });
  afterEach(async () => {
    await server.stop();
    await database.drop();
  });

  it('answers 503 with Retry-After while another process holds the write lock, then recovers', async () => {
    await server.api.post('/assets', makeAssets(1), server.adminToken);
    const node = await registerNode(server, 'patient');
    // A second connection, as a long `dispatcher import` in another process would hold it.
    const other = new SqliteDatabase(path.join(database.options.dataDirectory, SQLITE_FILE_NAME));
    other.exec('begin immediate');
    try {
      const busy = await server.api.post('/allocate', { free_space_gb: 1, node_id: 'patient' }, node.token);
      expect(busy.status).toBe(503);
      expect(busy.body.code).toBe('DATABASE_BUSY');
      expect(busy.headers.get('retry-after')).toBe('1');
    } finally {
      other.exec('rollback');
      other.close();
    }
    expect((await server.api.post('/allocate', { free_space_gb: 1, node_id: 'patient' }, node.token)).status).toBe(200);
  });
});
