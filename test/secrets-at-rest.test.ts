import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { createFakeClock } from '../src/clock.js';
import { startServer } from '../src/main.js';
import { generateKeyPair } from '../src/workers/ssh.js';
import { createTestDatabase, type TestDatabase } from './databases.js';
import { startTestServer, testConfig, type TestServer } from './server.js';

const mode = (file: string) => fs.statSync(file).mode & 0o777;
const asRoot = process.getuid?.() === 0;

/** Secrets at rest are the service's alone: a local user can read neither the database nor a key file. */
describe('secrets at rest on SQLite', () => {
  let database: TestDatabase;
  let server: TestServer | undefined;
  afterEach(async () => {
    await server?.stop();
    server = undefined;
    await database.drop();
  });

  it('keeps the data directory 0700 and the database, its WAL and shared memory 0600, narrowing what an earlier start left open', async () => {
    database = await createTestDatabase('sqlite');
    const directory = database.options.dataDirectory;
    const file = path.join(directory, 'dispatcher.sqlite');
    // What an earlier version left: a world-readable directory and database.
    await database.handle.close();
    fs.chmodSync(directory, 0o755);
    fs.chmodSync(file, 0o644);
    server = await startTestServer(database);
    expect(mode(directory)).toBe(0o700);
    for (const suffix of ['', '-wal', '-shm']) expect(mode(`${file}${suffix}`), suffix).toBe(0o600);
    if (asRoot) {
      // As an ordinary local account: the JWT secret in the database is out of reach.
      expect(() => execFileSync('runuser', ['-u', 'nobody', '--', 'cat', file], { stdio: 'pipe' })).toThrow(/Permission denied/);
    }
  });

  it('creates a new data directory 0700', async () => {
    database = await createTestDatabase('sqlite');
    const fresh = path.join(fs.mkdtempSync(path.join(os.tmpdir(), 'dispatcher-fresh-')), 'data');
    server = await startTestServer({ ...database, options: { ...database.options, dataDirectory: fresh } });
    expect(mode(fresh)).toBe(0o700);
    expect(mode(path.join(fresh, 'dispatcher.sqlite'))).toBe(0o600);
    await server.stop();
    server = undefined;
    fs.rmSync(path.dirname(fresh), { recursive: true, force: true });
  });

  it('refuses a shared directory such as /tmp, and key files others may read', async () => {
    database = await createTestDatabase('sqlite');
    const clock = createFakeClock();
    await expect(startServer(testConfig(database, { dataDirectory: os.tmpdir() }), { clock, loops: false })).rejects.toThrow(/shared directory \(sticky bit/);
    const scratch = fs.mkdtempSync(path.join(os.tmpdir(), 'dispatcher-keys-'));
    try {
      const secretFile = path.join(scratch, 'jwt-secret');
      fs.writeFileSync(secretFile, `${'s'.repeat(40)}\n`, { mode: 0o644 });
      await expect(startServer(testConfig(database, { jwtSecretFile: secretFile }), { clock, loops: false })).rejects.toThrow(
        /JWT_SECRET_FILE .* may be read by other accounts \(mode 0644\).*chmod 600/,
      );
      const keyFile = path.join(scratch, 'provisioning');
      fs.writeFileSync(keyFile, generateKeyPair('test').private, { mode: 0o640 });
      await expect(startServer(testConfig(database, { provisioningKeyFile: keyFile }), { clock, loops: false })).rejects.toThrow(
        /PROVISIONING_KEY_FILE .* \(mode 0640\)/,
      );
      // Readable by the service alone: used, and tokens are signed with it.
      fs.chmodSync(secretFile, 0o600);
      server = await startTestServer(database, { jwtSecretFile: secretFile });
      const otherDatabase = await createTestDatabase('sqlite');
      const other = await startTestServer(otherDatabase, { jwtSecret: 's'.repeat(40) });
      try {
        // Another server with the same secret accepts the first one's admin token: it signed with the file's secret.
        const answer = await other.api.get('/imports', server.adminToken);
        expect(answer.status).not.toBe(401);
      } finally {
        await other.stop();
        await otherDatabase.drop();
      }
    } finally {
      fs.rmSync(scratch, { recursive: true, force: true });
    }
  });
});
