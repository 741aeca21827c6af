import { spawn } from 'node:child_process';
import path from 'node:path';
import type { TestDatabase } from './databases.js';

export const root = path.resolve(import.meta.dirname, '..');

export interface CliRun {
  code: number | null;
  stdout: string;
  stderr: string;
}

/** Runs the CLI from source as a child process, the way `npx dispatcher …` runs it from the build. */
export function runCli(args: string[], env: Record<string, string | undefined>, stdin?: string): Promise<CliRun> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, ['--import', 'tsx', path.join(root, 'src/cli.ts'), ...args], {
      cwd: root,
      env: { PATH: process.env.PATH, HOME: process.env.HOME, ...env },
    });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (chunk) => (stdout += chunk));
    child.stderr.on('data', (chunk) => (stderr += chunk));
    child.on('error', reject);
    child.on('close', (code) => resolve({ code, stdout, stderr }));
    child.stdin.end(stdin ?? '');
  });
}

/** The environment that points the CLI at a test database. */
export function databaseEnv(database: TestDatabase): Record<string, string | undefined> {
  return {
    DATA_DIRECTORY: database.options.dataDirectory,
    DATABASE_URL: database.options.databaseUrl,
    DATABASE_SCHEMA: database.options.databaseSchema,
    LOG_LEVEL: 'warn',
  };
}
