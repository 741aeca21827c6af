import { createFakeClock, type FakeClock } from '../src/clock.js';
import { buildConfig, type Config } from '../src/config.js';
import type { PasswordCost } from '../src/lib/secrets.js';
import { startServer, type RunningServer } from '../src/main.js';
import { afterEach, beforeEach } from 'vitest';
import { createTestDatabase, type DialectName, type TestDatabase } from './databases.js';

export const ADMIN_PASSWORD = 'admin-password-for-tests';

/**
 * scrypt at 2^4 instead of 2^15: a hash takes microseconds, not tens of milliseconds, and every
 * server-backed test makes two (the admin's, its login). Only this harness passes it; verification
 * reads the cost from the stored hash either way (src/lib/secrets.test.ts).
 */
export const TEST_PASSWORD_COST: PasswordCost = { N: 2 ** 4, r: 8, p: 1 };

export interface ApiResponse<T = any> {
  status: number;
  body: T;
  headers: Headers;
}

export interface RequestOptions {
  body?: unknown;
  /** A raw body sent as is (malformed JSON, huge payloads). */
  rawBody?: string;
  token?: string;
  headers?: Record<string, string>;
}

export interface ApiClient {
  request<T = any>(method: string, path: string, options?: RequestOptions): Promise<ApiResponse<T>>;
  get<T = any>(path: string, token?: string): Promise<ApiResponse<T>>;
  post<T = any>(path: string, body: unknown, token?: string): Promise<ApiResponse<T>>;
}

/** A client over real HTTP (fetch) against a listening server. */
export function createClient(baseUrl: string): ApiClient {
  const request = async (method: string, path: string, options: RequestOptions = {}) => {
    const headers: Record<string, string> = { ...options.headers };
    if (options.token) headers.authorization = `Bearer ${options.token}`;
    let body: string | undefined = options.rawBody;
    if (options.body !== undefined) body = JSON.stringify(options.body);
    if (body !== undefined) headers['content-type'] ??= 'application/json';
    const response = await fetch(baseUrl + path, { method, headers, body });
    const text = await response.text();
    let parsed: unknown = text;
    try {
      parsed = JSON.parse(text);
    } catch {
      // Not JSON: keep the text (the test will say so).
    }
    return { status: response.status, body: parsed as any, headers: response.headers };
  };
  return {
    request,
    get: (path, token) => request('GET', path, { token }),
    post: (path, body, token) => request('POST', path, { body, token }),
  };
}

export interface TestServer extends RunningServer {
  clock: FakeClock;
  api: ApiClient;
  config: Config;
  adminToken: string;
}

export function testConfig(database: TestDatabase, overrides: Partial<Config> = {}): Config {
  return buildConfig({
    host: '127.0.0.1',
    port: 0,
    logLevel: 'silent',
    adminPassword: ADMIN_PASSWORD,
    // Most fixtures put every asset on one host; the per-host cap has tests of its own.
    sourceHostMaxActive: 0,
    // Suites send hundreds of schedule and rental calls in seconds; the per-user limit has tests of its own.
    userRateLimitPerMinute: 1_000_000,
    // Copies count on their reported checksum, as most suites assume; spot checks have tests of their own.
    verifySpotChecks: 0,
    // Suites register their nodes with the admin's tokens as distinct volunteers, new nodes trusted
    // at once, and complete copies as soon as they are given; operators, vetting and the rate limit
    // have tests of their own.
    distinctOperators: false,
    vettingAudits: 0,
    maxPlausibleRateBps: 0,
    ...database.options,
    ...overrides,
  });
}

/** The real server on a free port, on the given database, with a fake clock and loops not started. */
export async function startTestServer(database: TestDatabase, overrides: Partial<Config> = {}, clock = createFakeClock()): Promise<TestServer> {
  const config = testConfig(database, overrides);
  const server = await startServer(config, { clock, loops: false, passwordCost: TEST_PASSWORD_COST });
  const api = createClient(server.url);
  const login = await api.post('/auth/login', { username: config.adminUser, password: config.adminPassword ?? ADMIN_PASSWORD });
  if (login.status !== 200) throw new Error(`admin login failed: ${JSON.stringify(login.body)}`);
  return { ...server, clock, api, config, adminToken: login.body.token };
}

export interface TestServerSuite {
  /** This test's database (a fresh one for each test). */
  readonly database: TestDatabase;
  /** The server `start()` started for this test. */
  readonly server: TestServer;
  /** Starts this test's server on its database, with the suite's settings and then `overrides`. */
  start(overrides?: Partial<Config>, clock?: FakeClock): Promise<TestServer>;
}

/**
 * What a suite of server tests shares, in one line: before each test a fresh database on
 * `dialect`, after it the server stopped and the database dropped. Hooks a suite adds afterwards
 * run before these after each test (vitest runs after-hooks last registered first), so what a
 * test started beside the server (SSH workers, agents) stops first.
 */
export function useTestServer(dialect: DialectName, settings: Partial<Config> = {}): TestServerSuite {
  let database: TestDatabase | undefined;
  let server: TestServer | undefined;
  beforeEach(async () => {
    database = await createTestDatabase(dialect);
  });
  afterEach(async () => {
    await server?.stop();
    server = undefined;
    await database?.drop();
    database = undefined;
  });
  return {
    get database() {
      if (!database) throw new Error('the database exists only while a test runs');
      return database;
    },
    get server() {
      if (!server) throw new Error('start() the server first');
      return server;
    },
    async start(overrides = {}, clock) {
      if (!database) throw new Error('start() runs inside a test');
      server = await startTestServer(database, { ...settings, ...overrides }, clock);
      return server;
    },
  };
}

/** Registers a node through the API and returns its id, name and token. */
export async function registerNode(
  server: TestServer,
  name: string,
  extra: Record<string, unknown> = {},
): Promise<{ id: number; name: string; token: string }> {
  const enrollment = await server.api.post('/api/enrollment-tokens', {}, server.adminToken);
  const response = await server.api.post('/api/workers/register', { hostname: name, node_id: name, ...extra }, enrollment.body.token);
  if (response.status !== 200) throw new Error(`registration failed: ${JSON.stringify(response.body)}`);
  return { id: response.body.node_id, name: response.body.name, token: response.body.node_token };
}

/** Seed-format assets `prefix-1…prefix-n`, priority 5 and 100 MiB unless overridden. */
export function makeAssets(count: number, overrides: Record<string, unknown> = {}, prefix = 'asset'): Record<string, unknown>[] {
  return Array.from({ length: count }, (_, index) => ({
    id: `${prefix}-${index + 1}`,
    url: `https://data.example.org/${prefix}/${index + 1}.csv`,
    name: `${prefix} ${index + 1}`,
    size_mb: 100,
    priority: 5,
    ...overrides,
  }));
}
