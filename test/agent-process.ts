import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { root } from './cli-runner.js';

/** A real `dispatcher agent` process. */
export interface AgentProcess {
  name: string;
  dataDirectory: string;
  child: ChildProcess;
  output: () => string;
  exited: Promise<number | null>;
}

/**
 * Starts agents as separate processes (the CLI through tsx) with a fast heartbeat and poll, and
 * kills what is left of them between tests. Its `describe()` is every agent's recent output, for
 * the message of a failed wait.
 */
export function createAgentLauncher(scratch: () => string, apiEndpoint: () => string) {
  const agents: AgentProcess[] = [];
  return {
    start(name: string, enrollment: string, extra: Record<string, string | undefined> = {}): AgentProcess {
      const dataDirectory = path.join(scratch(), name);
      let output = '';
      const env: Record<string, string> = {};
      const settings = {
        PATH: process.env.PATH,
        API_ENDPOINT: apiEndpoint(),
        NODE_ENROLLMENT_TOKEN: enrollment,
        DATA_DIRECTORY: dataDirectory,
        NODE_NAME: name,
        AGENT_HEARTBEAT_SECONDS: '1',
        AGENT_POLL_SECONDS: '0.5',
        AGENT_RESERVE_GB: '0',
        // The file servers are on loopback, which the agent refuses by default.
        AGENT_ALLOW_PRIVATE_NETWORKS: 'true',
        ...extra,
      };
      for (const [key, value] of Object.entries(settings)) if (value !== undefined) env[key] = value;
      const child = spawn(process.execPath, ['--import', 'tsx', path.join(root, 'src/cli.ts'), 'agent'], { cwd: root, env });
      child.stdout.on('data', (chunk) => (output += chunk));
      child.stderr.on('data', (chunk) => (output += chunk));
      const exited = new Promise<number | null>((resolve) => child.on('exit', resolve));
      const agent = { name, dataDirectory, child, output: () => output, exited };
      agents.push(agent);
      return agent;
    },
    killAll() {
      for (const agent of agents.splice(0)) agent.child.kill('SIGKILL');
    },
    describe: () => agents.map((agent) => `--- ${agent.name}:\n${agent.output().slice(-3000)}`).join('\n'),
  };
}

/** Waits for a condition the system under test must reach; fails with `what` (and `context()`) after `timeoutMs`. */
export async function waitFor<T>(
  what: string,
  check: () => Promise<T | undefined | false> | T | undefined | false,
  context: () => string = () => '',
  timeoutMs = 60_000,
): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await check();
    if (value) return value;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}\n${context()}`);
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
}

/** Where an agent keeps its copy of an asset, from its manifest (the last line for the asset wins). */
export function keptCopy(dataDirectory: string, assetId: string): string {
  const lines = fs
    .readFileSync(path.join(dataDirectory, 'manifest.jsonl'), 'utf8')
    .split('\n')
    .filter(Boolean)
    .map((line) => JSON.parse(line) as { op: string; asset_id: string; path: string });
  const last = lines.filter((line) => line.asset_id === assetId).at(-1);
  if (!last || last.op !== 'copy') throw new Error(`no copy of ${assetId} in ${dataDirectory}`);
  return path.join(dataDirectory, last.path);
}
