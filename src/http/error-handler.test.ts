import path from 'node:path';
import SqliteDatabase from 'better-sqlite3';
import { beforeEach, describe, expect, it } from 'vitest';
import { makeAssets, registerNode, useTestServer, type TestServer } from '../../test/server.js';
import { SQLITE_FILE_NAME } from '../db/database.js';

describe('a busy SQLite database', () => {
  const suite = useTestServer('sqlite');
  let server: TestServer;

  beforeEach(async () => {
    server = await suite.start();
  });

  it('answers 503 with Retry-After while another process holds the write lock, then recovers', async () => {
    await server.api.post('/assets', makeAssets(1), server.adminToken);
    const node = await registerNode(server, 'patient');
    // A second connection, as a long `dispatcher import` in another process would hold it.
    const other = new SqliteDatabase(path.join(suite.database.options.dataDirectory, SQLITE_FILE_NAME));
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
