import crypto from 'node:crypto';
import os from 'node:os';
import { authorizeProvisioningKey, readHostKey, workerExecCommand } from '../workers/worker-setup.js';
import type { AgentConfig } from './agent.config.js';
import { ApiError, createClient, withBackoff } from './client.js';
import { readIdentity, writeIdentity, type Identity } from './identity.js';
import type { Progress } from './progress.js';

/** Retry while the control plane is unreachable or busy; a refusal (4xx other than 429) is final. */
export function retryOptions(progress: Progress, signal: AbortSignal) {
  return {
    signal,
    retryable: (error: unknown) => !(error instanceof ApiError) || error.status >= 500 || error.status === 429,
    onRetry: (error: unknown, delay: number) =>
      progress.log(`control plane not reachable (${(error as Error).message}); retrying in ${Math.round(delay / 1000)} s`),
  };
}

/** A refusal a volunteer can act on, said in the agent's own terms (its variables and flags). */
export class RegistrationRefused extends Error {}

/**
 * The node's identity: the one kept in DATA_DIRECTORY (a restart registers nothing new), else a new
 * registration with the enrollment token. Null when stopped before the control plane answered.
 * Without NODE_NAME, the name is the host name plus a random suffix, so that two volunteers whose
 * machines share a host name (`ubuntu`) do not collide; it is kept with the identity.
 */
export async function obtainIdentity(config: AgentConfig, progress: Progress, signal: AbortSignal): Promise<Identity | null> {
  const kept = await readIdentity(config.dataDirectory);
  const token = kept?.api_endpoint === config.apiEndpoint ? kept.node_token : config.nodeToken;
  const client = createClient(config.apiEndpoint, () => token ?? '');
  const worker = config.worker ? { ssh_host_key: await readHostKey(config.worker.hostKeyFile), ssh_user: config.worker.user } : {};
  const hostname = hostnameOf();
  // A kept identity keeps its name; a first registration takes NODE_NAME, or makes one up.
  const name = (token && kept ? kept.name : undefined) ?? config.nodeName ?? kept?.name ?? defaultName(hostname);
  const body = { hostname, node_id: name, ...(config.sshPort ? { ssh_port: config.sshPort } : {}), tags: config.tags, ...worker };
  const retry = retryOptions(progress, signal);
  if (signal.aborted) return null;
  if (!token && !config.enrollmentToken) throw new RegistrationRefused('No credential: set NODE_ENROLLMENT_TOKEN (first start) or NODE_TOKEN.');
  let registration;
  try {
    registration = token
      ? await withBackoff(() => client.refresh(body), retry)
      : await withBackoff(() => client.register(config.enrollmentToken as string, body), retry);
  } catch (error) {
    if (signal.aborted) return null;
    throw explainRefusal(error, name, config.nodeName !== undefined);
  }
  const nodeToken = token ?? registration.node_token;
  if (nodeToken === undefined) {
    throw new RegistrationRefused(
      `This machine is already registered as node "${registration.name}", and its token is not in ${config.dataDirectory}: copy node-identity.json from its earlier DATA_DIRECTORY, give the token as NODE_TOKEN, or ask an admin to register it again (which issues a new token).`,
    );
  }
  const identity = { api_endpoint: config.apiEndpoint, node_id: registration.node_id, name: registration.name, node_token: nodeToken };
  await writeIdentity(config.dataDirectory, identity);
  if (config.worker) {
    // A worker lets the control plane in for provisioning only: its key, restricted to worker-exec.
    const provisioning = await withBackoff(() => createClient(config.apiEndpoint, () => identity.node_token).provisioningKey(), retry);
    await authorizeProvisioningKey(config.worker.authorizedKeysFile, provisioning.public_key, workerExecCommand());
    progress.log(`worker: provisioning key authorized in ${config.worker.authorizedKeysFile}`);
  }
  return identity;
}

function explainRefusal(error: unknown, name: string, named: boolean): Error {
  if (!(error instanceof ApiError)) return error as Error;
  if (error.code === 'NODE_NAME_TAKEN') {
    return new RegistrationRefused(
      `The name "${name}" is already registered by another node. ${named ? 'Choose another NODE_NAME (or --node-name),' : 'Set NODE_NAME (or --node-name) to a name of your own,'} or give that node's token as NODE_TOKEN if this machine is that node.`,
    );
  }
  if (error.status === 401)
    return new RegistrationRefused(
      `The control plane refused the credential: ${error.message}. Ask the campaign's admin for a new enrollment token (NODE_ENROLLMENT_TOKEN).`,
    );
  return error;
}

function hostnameOf(): string {
  const cleaned = os
    .hostname()
    .replace(/[^A-Za-z0-9_.-]/g, '-')
    .replace(/^[^A-Za-z0-9]+/, '');
  return cleaned.slice(0, 253) || 'node';
}

/** The host name (cut to fit a node name) and four random hex digits. */
function defaultName(hostname: string): string {
  return `${hostname.slice(0, 58).replace(/[^A-Za-z0-9_.:-]/g, '-')}-${crypto.randomBytes(2).toString('hex')}`;
}
