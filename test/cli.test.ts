import { spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { verifyPassword } from '../src/lib/secrets.js';
import { databaseEnv, root, runCli } from './cli-runner.js';
import { createTestDatabase, dialects, type TestDatabase } from './databases.js';

describe('dispatcher CLI', () => {
  it('documents every command with --help', async () => {
    const top = await runCli(['--help'], {});
    expect(top.code).toBe(0);
    for (const command of ['serve', 'migrate', 'user', 'token', 'import']) expect(top.stdout).toContain(command);
    for (const args of [['serve'], ['migrate'], ['user', 'add'], ['token', 'create'], ['import', 'json']]) {
      const help = await runCli([...args, '--help'], {});
      expect(help.code, args.join(' ')).toBe(0);
      expect(help.stdout).toContain('Usage: dispatcher');
    }
    const serve = await runCli(['serve', '--help'], {});
    for (const variable of ['DATABASE_URL', 'ALLOCATION_EXPIRY_HOURS', 'PRIORIZER_PORT', 'JWT_SECRET']) expect(serve.stdout).toContain(variable);
  });

  it('lists every invalid variable and exits non-zero', async () => {
    const run = await runCli(['migrate'], { PORT: 'eighty', LOG_LEVEL: 'loud', SIGNUP: 'maybe' });
    expect(run.code).not.toBe(0);
    for (const name of ['PORT', 'LOG_LEVEL', 'SIGNUP']) expect(run.stderr).toContain(name);
  });
});

describe.each(dialects)('dispatcher CLI on %s', (dialect) => {
  let database: TestDatabase;
  let scratch: string;

  beforeEach(async () => {
    database = await createTestDatabase(dialect);
    scratch = fs.mkdtempSync(path.join(os.tmpdir(), 'dispatcher-cli-'));
  });
  afterEach(async () => {
    await database.drop();
    fs.rmSync(scratch, { recursive: true, force: true });
  });

  it("imports the seeds' ckan_data.json and refuses invalid files", async () => {
    const file = path.join(scratch, 'ckan_data.json');
    fs.writeFileSync(
      file,
      JSON.stringify([
        { id: 'asset-1', url: 'https://data.gov/file1.zip', size_mb: 500, priority: 8, name: 'climate_data_2024.zip' },
        { id: 'asset-2', url: 'https://data.gov/file2.zip', size_mb: null, priority: 3, name: 'unknown size' },
      ]),
    );
    const run = await runCli(['import', 'json', file], databaseEnv(database));
    expect(run.stderr).toBe('');
    expect(run.code).toBe(0);
    expect(run.stdout).toMatch(/Imported 2 assets/);
    const rows = await database.handle.db.selectFrom('assets').select(['id', 'size_bytes', 'priority']).orderBy('id').execute();
    expect(rows).toEqual([
      { id: 'asset-1', size_bytes: 500 * 1024 * 1024, priority: 8 },
      { id: 'asset-2', size_bytes: null, priority: 3 },
    ]);

    const bad = path.join(scratch, 'bad.json');
    fs.writeFileSync(bad, JSON.stringify([{ id: 'asset-3', url: 'https://x', name: 'x', priority: 11 }]));
    const refused = await runCli(['import', 'json', bad], databaseEnv(database));
    expect(refused.code).not.toBe(0);
    expect(refused.stderr).toContain('priority');
    // The same rules as POST /assets: a URL that does not parse, a NUL in a name.
    fs.writeFileSync(bad, JSON.stringify([{ id: 'asset-4', url: 'http://}l&]', name: 'x', priority: 5 }]));
    expect((await runCli(['import', 'json', bad], databaseEnv(database))).stderr).toMatch(/url/);
    fs.writeFileSync(bad, JSON.stringify([{ id: 'asset-5', url: 'https://data.gov/5', name: 'nul\u0000name', priority: 5 }]));
    expect((await runCli(['import', 'json', bad], databaseEnv(database))).stderr).toMatch(/NUL/);
    fs.writeFileSync(bad, '{not json');
    expect((await runCli(['import', 'json', bad], databaseEnv(database))).stderr).toContain('not valid JSON');
    expect(await database.handle.db.selectFrom('assets').select('id').execute()).toHaveLength(2);
  });

  it('adds an admin with the password from stdin, and creates enrollment tokens', async () => {
    const added = await runCli(['user', 'add', 'operator', '--admin'], databaseEnv(database), 'a strong password\n');
    expect(added.code).toBe(0);
    const user = await database.handle.db.selectFrom('users').selectAll().where('username', '=', 'operator').executeTakeFirstOrThrow();
    expect(user.role).toBe('admin');
    expect(await verifyPassword('a strong password', user.password_hash)).toBe(true);
    // The CLI hashes at the full cost: no variable or flag lowers it.
    expect(user.password_hash).toMatch(/^scrypt\$32768\$8\$1\$/);
    const weak = await runCli(['user', 'add', 'weakling'], databaseEnv(database), 'short\n');
    expect(weak.code).not.toBe(0);
    expect(weak.stderr).toContain('at least 8');

    const token = await runCli(['token', 'create', '--expires-in-hours', '2', '--note', 'campaign'], databaseEnv(database));
    expect(token.code).toBe(0);
    expect(token.stdout.trim()).toMatch(/^de_[A-Za-z0-9_-]{20,}$/);
    expect(await database.handle.db.selectFrom('enrollment_tokens').selectAll().execute()).toHaveLength(1);
  });

  it('serves until SIGTERM, then exits 0', async () => {
    const child = spawn(process.execPath, ['--import', 'tsx', path.join(root, 'src/cli.ts'), 'serve', '--port', '0', '--host', '127.0.0.1'], {
      cwd: root,
      env: { PATH: process.env.PATH, ...databaseEnv(database), LOG_LEVEL: 'info', DISPATCHER_ADMIN_PASSWORD: 'an admin password' },
    });
    let output = '';
    const url = await new Promise<string>((resolve, reject) => {
      child.stdout.on('data', (chunk) => {
        output += chunk;
        const match = /"url":"(http:\/\/[^"]+)","docs"/.exec(output);
        if (match) resolve(match[1]!);
      });
      child.on('exit', () => reject(new Error(`serve exited early: ${output}`)));
    });
    const health = await fetch(`${url}/health`);
    expect(await health.json()).toEqual({ status: 'healthy' });
    // `dispatcher serve` hashes the admin's password at the full cost: no variable or flag lowers it.
    const admin = await database.handle.db.selectFrom('users').select('password_hash').where('username', '=', 'admin').executeTakeFirstOrThrow();
    expect(admin.password_hash).toMatch(/^scrypt\$32768\$8\$1\$/);
    const exited = new Promise<number | null>((resolve) => child.on('exit', resolve));
    child.kill('SIGTERM');
    expect(await exited).toBe(0);
  });
});
