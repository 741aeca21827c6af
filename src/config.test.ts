import fs from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { ConfigError, describeVariables, loadConfig } from './config.js';

describe('configuration', () => {
  it('has sane defaults', () => {
    const config = loadConfig({});
    expect(config).toMatchObject({
      port: 8000,
      host: '0.0.0.0',
      databaseUrl: undefined,
      autoUpdateIntervalMs: 2 * 60_000,
      allocationExpiryMs: 24 * 3_600_000,
      priorityPolicy: 'aging',
      signup: 'open',
      adminUser: 'admin',
      adminPassword: undefined,
      jwtSecret: undefined,
      logLevel: 'info',
    });
    expect(config.dataDirectory).toMatch(/data$/);
  });

  it("understands the seeds' variable names", () => {
    expect(loadConfig({ PRIORIZER_PORT: '8002', PRIORIZER_HOST: '127.0.0.1' })).toMatchObject({ port: 8002, host: '127.0.0.1' });
    expect(loadConfig({ DISPATCHER_PORT: '8001', DISPATCHER_HOST: '::1' })).toMatchObject({ port: 8001, host: '::1' });
    expect(loadConfig({ PORT: '9000', DISPATCHER_PORT: '8001' }).port).toBe(9000);
    expect(loadConfig({ LOG_LEVEL: 'INFO', AUTO_UPDATE_INTERVAL_MINUTES: '0.5', ALLOCATION_EXPIRY_HOURS: '48' })).toMatchObject({
      logLevel: 'info',
      autoUpdateIntervalMs: 30_000,
      allocationExpiryMs: 48 * 3_600_000,
    });
    expect(loadConfig({ DATABASE_URL: 'postgres://u@db/x' }).databaseUrl).toBe('postgres://u@db/x');
  });

  it('trusts no proxy, every hop, or only the proxies listed (TRUST_PROXY)', () => {
    expect(loadConfig({}).trustProxy).toBe(false);
    expect(loadConfig({ TRUST_PROXY: 'true' }).trustProxy).toBe(true);
    expect(loadConfig({ TRUST_PROXY: '0' }).trustProxy).toBe(false);
    expect(loadConfig({ TRUST_PROXY: ' 127.0.0.1, 10.0.0.0/8 ,::1 ' }).trustProxy).toBe('127.0.0.1,10.0.0.0/8,::1');
    expect(() => loadConfig({ TRUST_PROXY: '127.0.0.1,proxy.example,10.0.0.0/33' })).toThrow(/TRUST_PROXY.*not an address: proxy\.example, 10\.0\.0\.0\/33/s);
  });

  it('lists every invalid variable at once', () => {
    let caught: unknown;
    try {
      loadConfig({
        PORT: 'eighty',
        ALLOCATION_EXPIRY_HOURS: '-1',
        LOG_LEVEL: 'loud',
        DATABASE_URL: 'mysql://x',
        JWT_SECRET: 'short',
        SIGNUP: 'maybe',
        DISPATCHER_ADMIN_PASSWORD: 'pw',
        PRIORITY_POLICY: 'random',
      });
    } catch (error) {
      caught = error;
    }
    expect(caught).toBeInstanceOf(ConfigError);
    const problems = (caught as ConfigError).problems.join('\n');
    for (const name of [
      'PORT',
      'ALLOCATION_EXPIRY_HOURS',
      'LOG_LEVEL',
      'DATABASE_URL',
      'JWT_SECRET',
      'SIGNUP',
      'DISPATCHER_ADMIN_PASSWORD',
      'PRIORITY_POLICY',
    ]) {
      expect(problems).toContain(name);
    }
    expect((caught as ConfigError).problems).toHaveLength(8);
  });

  it('is documented: the README names every variable', () => {
    const readme = fs.readFileSync(path.resolve(import.meta.dirname, '../README.md'), 'utf8');
    for (const variable of describeVariables()) {
      for (const name of variable.names) expect(readme, name).toContain(`\`${name}\``);
    }
  });
});
