import { execFile, execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { createTestDatabase, dialects, type TestDatabase } from './databases.js';
import { loadConfig } from '../src/config.js';
import { ADMIN_PASSWORD, startTestServer, type TestServer } from './server.js';

const README = fs.readFileSync(path.resolve(import.meta.dirname, '../README.md'), 'utf8');
/** The tutorial's address and password, as a reader pastes them next to the quick start's server. */
const README_ADDRESS = 'localhost:8000';
const README_PASSWORD = 'choose-a-long-password';

/** Whether `command` is on the PATH. */
function installed(command: string): boolean {
  try {
    execFileSync('sh', ['-c', `command -v ${command}`], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
}

// CI sets DISPATCHER_TEST_TUTORIAL=required: a missing tool then fails the run instead of skipping.
const tools = ['bash', 'curl', 'jq'];
const missing = tools.filter((tool) => !installed(tool));
if (missing.length > 0) {
  if (process.env.DISPATCHER_TEST_TUTORIAL === 'required')
    throw new Error(`The README tutorial's test needs ${missing.join(', ')} (DISPATCHER_TEST_TUTORIAL=required).`);
  console.warn(`\n*** ${missing.join(', ')} missing: the README tutorial's test is SKIPPED (apt-get install ${missing.join(' ')}). ***\n`);
}

/** The shell blocks of one README section: from its heading to the next heading outside a code block. */
export function shellBlocksOf(markdown: string, heading: string): string[] {
  const lines = markdown.split('\n');
  const start = lines.indexOf(heading);
  if (start < 0) throw new Error(`README.md has no section "${heading}"`);
  const blocks: string[] = [];
  let block: string[] | undefined;
  let fenced = false;
  for (const line of lines.slice(start + 1)) {
    if (line.startsWith('```')) {
      fenced = !fenced;
      if (fenced && /^```(sh|bash|shell)$/.test(line)) block = [];
      else if (!fenced && block) {
        blocks.push(`${block.join('\n')}\n`);
        block = undefined;
      }
    } else if (fenced) block?.push(line);
    else if (/^#{1,6} /.test(line)) break;
  }
  return blocks;
}

/** The curl commands of a script: each invocation, line continuations joined, comments left out. */
function curlCommands(script: string): string[] {
  const lines = script
    .replace(/\\\n/g, ' ')
    .split('\n')
    .filter((line) => !line.trimStart().startsWith('#'));
  return lines.flatMap((line) => line.match(/\bcurl\b/g) ?? []);
}

/** The last whole JSON document of an output where documents follow each other, without newlines between them. */
function lastJsonDocument(output: string): unknown {
  for (let start = output.lastIndexOf('{'); start >= 0; start = output.lastIndexOf('{', start - 1)) {
    try {
      return JSON.parse(output.slice(start));
    } catch {
      // Not a whole document yet: start from an earlier brace.
    }
  }
  throw new Error(`no JSON document in: ${output}`);
}

// Every curl of the tutorial fails on an HTTP error (its answer is still printed), and reports its
// status on stderr; `set -euo pipefail` stops at the first command that fails, inside $(…) too.
const PRELUDE = `set -euo pipefail
curl() { command curl --fail-with-body --show-error --write-out '%{stderr}HTTP %{http_code} %{url_effective}\\n' "$@"; }
`;

const runTutorial = promisify(execFile);

describe.skipIf(missing.length > 0).each(dialects)('the README tutorial "A first rescue, with curl" on %s', (dialect) => {
  let database: TestDatabase;
  let server: TestServer;
  let directory: string;

  beforeEach(async () => {
    database = await createTestDatabase(dialect);
    // As the quick start's server runs: copies count only once proven.
    server = await startTestServer(database, { verifySpotChecks: loadConfig({}).verifySpotChecks });
    directory = fs.mkdtempSync(path.join(os.tmpdir(), 'dispatcher-tutorial-'));
  });
  afterEach(async () => {
    await server?.stop();
    await database.drop();
    fs.rmSync(directory, { recursive: true, force: true });
  });

  it("uses the quick start's address and admin password", () => {
    const [quickStart] = shellBlocksOf(README, '## Quick start');
    expect(quickStart).toContain(`DISPATCHER_ADMIN_PASSWORD='${README_PASSWORD}'`);
    expect(README).toMatch(new RegExp(`serves on\\s+\`http://${README_ADDRESS}\``));
  });

  it('runs as pasted: every command succeeds and /status then shows the copy waiting for its spot check', async () => {
    const blocks = shellBlocksOf(README, '### A first rescue, with curl');
    expect(blocks).toHaveLength(1);
    const tutorial = (blocks[0] as string).replaceAll(README_ADDRESS, server.url.replace(/^http:\/\//, '')).replaceAll(README_PASSWORD, ADMIN_PASSWORD);
    expect(tutorial).not.toContain(README_ADDRESS);

    const { stdout, stderr } = await runTutorial('bash', ['-c', PRELUDE + tutorial], {
      cwd: directory,
      timeout: 30_000,
      env: { PATH: process.env.PATH, HOME: directory },
    });
    const statuses = stderr.split('\n').filter((line) => line.startsWith('HTTP '));
    expect(statuses, stderr).toHaveLength(curlCommands(tutorial).length);
    for (const status of statuses) expect(status, stderr).toMatch(/^HTTP 2\d\d /);
    expect(stderr.split('\n').filter((line) => line && !line.startsWith('HTTP '))).toEqual([]);

    // What the last command printed (jq's document), and what the server now says.
    const printed = lastJsonDocument(stdout);
    expect(printed).toEqual({ assets_by_state: { pending: 1 }, bytes_rescued: 0 });
    const asset = await server.api.get('/assets/asset-1', server.adminToken);
    expect(asset.body).toMatchObject({ state: 'pending', copies: 0 });
    expect(asset.body.copies_detail).toMatchObject([{ node_name: 'node-123', verified: false, proof: 'pending', bytes: 500 * 1024 * 1024 }]);
  });
});
