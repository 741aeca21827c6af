import { spawn, type ChildProcess } from 'node:child_process';
import { root } from './cli-runner.js';
import { ADMIN_PASSWORD, createClient, makeAssets, type ApiClient } from './server.js';

/** Shared by every instance of one test, so a token one instance issued is accepted by the others. */
export const JWT_SECRET = 'jwt-secret-shared-by-the-instances-of-a-fault-test';
export const METRICS_TOKEN = 'metrics-token-for-the-fault-tests-0123456789';

export interface ServerProcess {
  name: string;
  url: string;
  api: ApiClient;
  child: ChildProcess;
  /** Everything the process wrote, stdout and stderr interleaved. */
  output(): string;
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
}

/** The environment every fault-test server gets: loopback, no rate limits in the way of the load, fixed secrets. */
export function serverEnv(extra: Record<string, string | undefined>): Record<string, string | undefined> {
  return {
    PATH: process.env.PATH,
    HOME: process.env.HOME,
    DISPATCHER_HOST: '127.0.0.1',
    PORT: '0',
    LOG_LEVEL: 'info',
    DISPATCHER_ADMIN_PASSWORD: ADMIN_PASSWORD,
    JWT_SECRET,
    METRICS_TOKEN,
    LOGIN_RATE_LIMIT_PER_MINUTE: '1000000',
    NODE_RATE_LIMIT_PER_MINUTE: '10000000',
    // The load's assets all lie on one host and its nodes never finish: no per-host cap.
    SOURCE_HOST_MAX_ACTIVE: '0',
    // Fake copies count on their reported checksum: spot checks have tests of their own.
    VERIFY_SPOT_CHECKS: '0',
    // The load's nodes share the admin's enrollment tokens and stand for distinct volunteers.
    DISTINCT_OPERATORS: 'false',
    VETTING_AUDITS: '0',
    MAX_PLAUSIBLE_RATE_MB_S: '0',
    ...extra,
  };
}

/**
 * `dispatcher serve` as a child process (from source, as the other end-to-end tests run it), resolved
 * once it logs its URL; rejected with its output if it exits first or is not serving by the deadline.
 */
export function spawnServer(name: string, env: Record<string, string | undefined>, timeoutMs = 30_000): Promise<ServerProcess> {
  const child = spawn(process.execPath, ['--import', 'tsx', `${root}/src/cli.ts`, 'serve'], { cwd: root, env, stdio: ['ignore', 'pipe', 'pipe'] });
  let output = '';
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) =>
    child.on('exit', (code, signal) => resolve({ code, signal })),
  );
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error(`${name} was not serving after ${timeoutMs} ms:\n${output}`));
    }, timeoutMs);
    const onOutput = (chunk: Buffer) => {
      output += chunk;
      const match = /"url":"(http:\/\/[^"]+)".*"msg":"dispatcher is serving"/.exec(output);
      if (!match) return;
      clearTimeout(timer);
      child.stdout?.off('data', onOutput);
      child.stdout?.on('data', (more: Buffer) => (output += more));
      const url = match[1] as string;
      resolve({ name, url, api: createClient(url), child, output: () => output, exited });
    };
    child.stdout?.on('data', onOutput);
    child.stderr?.on('data', (chunk: Buffer) => (output += chunk));
    void exited.then(({ code, signal }) => {
      clearTimeout(timer);
      reject(new Error(`${name} exited (code ${code}, signal ${signal}) before serving:\n${output}`));
    });
  });
}

/** Runs `dispatcher serve` to its end, for a server that must refuse to start. */
export async function runServerToExit(env: Record<string, string | undefined>, timeoutMs = 30_000): Promise<{ code: number | null; output: string }> {
  const child = spawn(process.execPath, ['--import', 'tsx', `${root}/src/cli.ts`, 'serve'], { cwd: root, env, stdio: ['ignore', 'pipe', 'pipe'] });
  let output = '';
  child.stdout.on('data', (chunk: Buffer) => (output += chunk));
  child.stderr.on('data', (chunk: Buffer) => (output += chunk));
  const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
  const code = await new Promise<number | null>((resolve) => child.on('exit', resolve));
  clearTimeout(timer);
  return { code, output };
}

/** SIGKILL, and the process is gone once this resolves. */
export async function killHard(server: ServerProcess): Promise<void> {
  if (server.child.exitCode !== null || server.child.signalCode !== null) return;
  server.child.kill('SIGKILL');
  await server.exited;
}

/** SIGTERM and the exit code of the graceful shutdown. */
export async function stopGracefully(server: ServerProcess): Promise<number | null> {
  if (server.child.exitCode !== null || server.child.signalCode !== null) return server.child.exitCode;
  server.child.kill('SIGTERM');
  return (await server.exited).code;
}

/** Waits for a condition the system under test must reach; fails with `what` (and `context`) after `timeoutMs`. */
export async function waitFor<T>(
  what: string,
  check: () => Promise<T | undefined | false> | T | undefined | false,
  timeoutMs = 20_000,
  context: () => string = () => '',
): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await check();
    if (value) return value;
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}\n${context()}`);
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}

/** Logs in as the admin on one instance. */
export async function adminToken(api: ApiClient): Promise<string> {
  const login = await api.post('/auth/login', { username: 'admin', password: ADMIN_PASSWORD });
  if (login.status !== 200) throw new Error(`admin login failed: ${login.status} ${JSON.stringify(login.body)}`);
  return login.body.token as string;
}

/** Registers nodes through the API, as agents do: an enrollment token, then one registration each. */
export async function registerNodes(api: ApiClient, token: string, names: string[]): Promise<{ name: string; token: string }[]> {
  const enrollment = await api.post('/api/enrollment-tokens', {}, token);
  if (enrollment.status !== 200) throw new Error(`enrollment token: ${enrollment.status} ${JSON.stringify(enrollment.body)}`);
  const nodes = [];
  for (const name of names) {
    const response = await api.post('/api/workers/register', { hostname: name, node_id: name }, enrollment.body.token);
    if (response.status !== 200) throw new Error(`registration of ${name}: ${response.status} ${JSON.stringify(response.body)}`);
    nodes.push({ name: response.body.name as string, token: response.body.node_token as string });
  }
  return nodes;
}

/** `assets` assets (2 replicas each) and `nodes` registered nodes, through one instance's API. */
export async function seedAssetsAndNodes(server: ServerProcess, assets: number, nodes: number): Promise<{ name: string; token: string }[]> {
  const token = await adminToken(server.api);
  const created = await server.api.post('/assets', makeAssets(assets, { replicas_target: 2 }), token);
  if (created.status !== 200) throw new Error(`asset import: ${created.status} ${JSON.stringify(created.body)}`);
  return registerNodes(
    server.api,
    token,
    Array.from({ length: nodes }, (_, index) => `node-${index + 1}`),
  );
}

/** This instance's count of passes of each loop it ran itself, from its /metrics. */
export async function loopPassesRun(server: ServerProcess): Promise<Record<string, number>> {
  const response = await fetch(`${server.url}/metrics`, { headers: { authorization: `Bearer ${METRICS_TOKEN}` } });
  const text = await response.text();
  const passes: Record<string, number> = {};
  for (const match of text.matchAll(/^dispatcher_loop_pass_duration_seconds_count\{loop="([^"]+)"\} (\d+)$/gm)) {
    passes[match[1] as string] = Number(match[2]);
  }
  return passes;
}
