import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { root } from './cli-runner.js';
import { createTestDatabase, type TestDatabase } from './databases.js';
import { startTestServer, type TestServer } from './server.js';

const hook = path.join(root, 'test/no-native-sqlite.mjs');

interface Run {
  child: ChildProcess;
  output: () => string;
  exited: Promise<number | null>;
}

/** `node --import tsx --import test/no-native-sqlite.mjs …`: importing better-sqlite3, pg, kysely or fastify throws. */
function runWithoutServerModules(args: string[], env: Record<string, string> = {}): Run {
  const child = spawn(process.execPath, ['--import', 'tsx', '--import', hook, ...args], {
    cwd: root,
    env: { PATH: process.env.PATH, HOME: process.env.HOME, ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let output = '';
  child.stdout!.on('data', (chunk) => (output += chunk));
  child.stderr!.on('data', (chunk) => (output += chunk));
  const exited = new Promise<number | null>((resolve) => child.on('exit', resolve));
  return { child, output: () => output, exited };
}

async function waitFor(what: string, check: () => Promise<boolean> | boolean, run: Run, timeoutMs = 30_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}\n${run.output().slice(-3000)}`);
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
}

describe("the agent without the server's modules (no native SQLite driver, so no C++ toolchain)", () => {
  it('the hook makes importing the native driver fail', async () => {
    const run = runWithoutServerModules(['-e', "await import('better-sqlite3')", '--input-type=module']);
    expect(await run.exited).not.toBe(0);
    expect(run.output()).toContain('no-native-sqlite: this process must not load better-sqlite3');
  });

  it('prints `agent --help`', async () => {
    const run = runWithoutServerModules([path.join(root, 'src/cli.ts'), 'agent', '--help']);
    expect(await run.exited, run.output()).toBe(0);
    expect(run.output()).toContain('Usage: dispatcher agent');
    expect(run.output()).toContain('--api-endpoint');
  });

  describe('against a control plane on SQLite', () => {
    let database: TestDatabase;
    let server: TestServer;
    let scratch: string;
    let agent: Run | undefined;

    beforeEach(async () => {
      database = await createTestDatabase('sqlite');
      server = await startTestServer(database);
      scratch = fs.mkdtempSync(path.join(os.tmpdir(), 'dispatcher-packaging-'));
    });
    afterEach(async () => {
      agent?.child.kill('SIGKILL');
      await server.stop();
      await database.drop();
      fs.rmSync(scratch, { recursive: true, force: true });
    });

    // Registration runs after the whole static module graph has loaded, so it proves the agent needs
    // none of those modules; the work itself is tested in agents.e2e.test.ts.
    it('registers, beats and stops with exit 0', async () => {
      const enrollment = (await server.api.post('/api/enrollment-tokens', {}, server.adminToken)).body.token;
      const dataDirectory = path.join(scratch, 'node-light');
      const run = (agent = runWithoutServerModules([path.join(root, 'src/cli.ts'), 'agent'], {
        API_ENDPOINT: server.url,
        NODE_ENROLLMENT_TOKEN: enrollment,
        DATA_DIRECTORY: dataDirectory,
        NODE_NAME: 'node-light',
        AGENT_HEARTBEAT_SECONDS: '1',
        AGENT_POLL_SECONDS: '0.5',
        AGENT_RESERVE_GB: '0',
        // Tests run on loopback, which the agent refuses to download from by default.
        AGENT_ALLOW_PRIVATE_NETWORKS: 'true',
      }));
      await waitFor('the agent to register', () => run.output().includes('registered as node'), run);
      await waitFor(
        'a heartbeat',
        async () => {
          const node = await database.handle.db.selectFrom('nodes').select('last_heartbeat_at').where('name', '=', 'node-light').executeTakeFirst();
          return (node?.last_heartbeat_at ?? null) !== null;
        },
        run,
      );
      run.child.kill('SIGTERM');
      expect(await run.exited, run.output()).toBe(0);
      expect(run.output()).not.toContain('no-native-sqlite');
    });
  });
});
