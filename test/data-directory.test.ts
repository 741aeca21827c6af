import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { runCli } from './cli-runner.js';

let scratch: string | undefined;
afterEach(() => {
  if (scratch) fs.rmSync(scratch, { recursive: true, force: true });
  scratch = undefined;
});

describe('an unusable DATA_DIRECTORY', () => {
  // mkdir under /proc answers ENOENT although /proc exists: Node's recursive mkdirSync retried that for ever.
  it.skipIf(!fs.existsSync('/proc/self'))('stops serve at once, naming the directory and why (a path under /proc)', async () => {
    const run = await runCli(['serve', '--port', '0', '--host', '127.0.0.1'], { DATA_DIRECTORY: '/proc/dispatcher-data', LOG_LEVEL: 'warn' });
    expect(run.code).not.toBe(0);
    expect(run.stderr).toMatch(/The data directory \/proc\/dispatcher-data \(DATA_DIRECTORY\) cannot be used: ENOENT: no such file or directory/);
  });

  it('stops serve at once when a file stands where a directory should be', async () => {
    scratch = fs.mkdtempSync(path.join(os.tmpdir(), 'dispatcher-data-'));
    fs.writeFileSync(path.join(scratch, 'file'), '');
    const directory = path.join(scratch, 'file', 'data');
    const run = await runCli(['serve', '--port', '0', '--host', '127.0.0.1'], { DATA_DIRECTORY: directory, LOG_LEVEL: 'warn' });
    expect(run.code).not.toBe(0);
    expect(run.stderr).toContain(`The data directory ${directory} (DATA_DIRECTORY) cannot be used: ENOTDIR`);
  });
});
