import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { root } from './cli-runner.js';
import { ADMIN_PASSWORD } from './server.js';

/** Live processes whose parent is `pid`, and theirs: read from /proc (Linux). A zombie has exited. */
function descendantsOf(pid: number): number[] {
  const parents = new Map<number, number[]>();
  for (const entry of fs.readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    let stat: string;
    try {
      stat = fs.readFileSync(`/proc/${entry}/stat`, 'utf8');
    } catch {
      continue; // gone meanwhile
    }
    // pid (comm) state ppid …: comm may hold spaces and parentheses, so read after the last ')'.
    const [state, ppid] = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    if (state === 'Z') continue;
    parents.set(Number(ppid), [...(parents.get(Number(ppid)) ?? []), Number(entry)]);
  }
  const found: number[] = [];
  for (let queue = [pid]; queue.length > 0;) {
    const children = parents.get(queue.shift() as number) ?? [];
    found.push(...children);
    queue.push(...children);
  }
  return found;
}

const alive = (pid: number) => {
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2)[0] !== 'Z';
  } catch {
    return false;
  }
};

/** Whether something accepts connections on the port. */
const listening = (port: number) =>
  new Promise<boolean>((resolve) => {
    const socket = net.connect({ host: '127.0.0.1', port });
    socket.once('connect', () => (socket.destroy(), resolve(true)));
    socket.once('error', () => resolve(false));
  });

let npm: ChildProcess | undefined;
let started: number[] = [];
let scratch: string | undefined;

afterEach(() => {
  // Whatever a failed run left behind: only the processes this test started.
  for (const pid of [npm?.pid, ...started]) if (pid !== undefined && alive(pid)) process.kill(pid, 'SIGKILL');
  npm = undefined;
  started = [];
  if (scratch) fs.rmSync(scratch, { recursive: true, force: true });
});

describe('npm start', () => {
  it('passes SIGTERM to the server: it shuts down, frees its port and leaves no process behind', async () => {
    expect(fs.existsSync(path.join(root, 'dist/cli.js')), 'npm start runs the build: npm run build first').toBe(true);
    scratch = fs.mkdtempSync(path.join(os.tmpdir(), 'dispatcher-npm-start-'));
    const child = spawn('npm', ['start'], {
      cwd: root,
      env: {
        PATH: process.env.PATH,
        HOME: process.env.HOME,
        npm_config_update_notifier: 'false',
        PORT: '0',
        DISPATCHER_HOST: '127.0.0.1',
        DATA_DIRECTORY: scratch,
        DISPATCHER_ADMIN_PASSWORD: ADMIN_PASSWORD,
        LOG_LEVEL: 'info',
      },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    npm = child;
    let output = '';
    const exited = new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)));
    const url = await new Promise<string>((resolve, reject) => {
      const onOutput = (chunk: Buffer) => {
        output += chunk;
        const match = /"url":"(http:\/\/[^"]+)".*"msg":"dispatcher is serving"/.exec(output);
        if (match) resolve(match[1] as string);
      };
      child.stdout.on('data', onOutput);
      child.stderr.on('data', onOutput);
      void exited.then(() => reject(new Error(`npm start exited before serving:\n${output}`)));
    });
    const port = Number(new URL(url).port);
    started = descendantsOf(child.pid as number);
    expect(started.length, 'the server runs under npm').toBeGreaterThan(0);
    expect(await listening(port)).toBe(true);

    child.kill('SIGTERM');
    const code = await exited;
    expect(started.filter(alive), 'processes left running after npm exited').toEqual([]);
    expect(await listening(port), 'the port is still taken').toBe(false);
    expect(output).toMatch(/"signal":"SIGTERM".*"msg":"shutting down"/);
    expect(code, output).toBe(0);
  });
});
