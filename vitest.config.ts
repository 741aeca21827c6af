import { availableParallelism } from 'node:os';
import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['src/**/*.test.ts', 'test/**/*.test.ts'],
    globalSetup: ['test/global-setup.ts'],
    pool: 'forks',
    // Most test time is spent waiting on sockets, child processes and the databases, not on the
    // CPU: a worker per core plus one keeps both cores busy (vitest's default is one fewer than the cores).
    maxWorkers: Math.max(2, availableParallelism() + 1),
    minWorkers: 1,
    testTimeout: 60_000,
    hookTimeout: 60_000,
    reporters: ['default'],
  },
});
