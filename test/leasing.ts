import { expect } from 'vitest';
import { WORKER_CHECK_LOOP } from '../src/loops.js';
import { registerNode, type TestServer } from './server.js';
import { startSshWorker, type SshWorker } from './ssh-worker.js';

export interface TestWorker {
  worker: SshWorker;
  id: number;
  name: string;
  token: string;
}

/**
 * Starts `count` SSH workers, registers them as their agents would (host key, SSH port) and
 * probes them alive (one pass of the worker check, the clock moved past its interval).
 * Every worker started is also pushed to `started`, for the suite to stop.
 */
export async function addWorkers(server: TestServer, started: SshWorker[], count: number): Promise<TestWorker[]> {
  const added: TestWorker[] = [];
  for (let index = 0; index < count; index += 1) {
    const worker = await startSshWorker(server.ctx.provisioningKey.publicKey);
    started.push(worker);
    const node = await registerNode(server, `worker-${started.length}`, { ssh_port: worker.port, ssh_host_key: worker.hostKey, ip: '127.0.0.1' });
    added.push({ worker, ...node });
  }
  server.clock.advance(server.config.workerProbeIntervalMs);
  expect(await server.loops.find((loop) => loop.name === WORKER_CHECK_LOOP)!.runOnce()).toBe(true);
  return added;
}

/** Signs a user up and logs in; returns the token. */
export async function userToken(server: TestServer, username: string): Promise<string> {
  await server.api.post('/auth/signup', { username, password: `${username}-password-1` });
  const login = await server.api.post('/auth/login', { username, password: `${username}-password-1` });
  expect(login.status).toBe(200);
  return login.body.token as string;
}
