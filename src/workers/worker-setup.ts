import fs from 'node:fs/promises';
import path from 'node:path';

/** Marks the authorized_keys line the agent manages, so a new key replaces the old one. */
const MARK = 'dispatcher-provisioning';

/**
 * The command sshd forces for the provisioning key: this very program's `worker-exec`, which
 * reads SSH_ORIGINAL_COMMAND and accepts only Dispatcher's worker commands.
 */
export function workerExecCommand(nodePath = process.execPath, cliPath = path.resolve(process.argv[1] ?? 'dist/cli.js')): string {
  for (const part of [nodePath, cliPath]) {
    if (!/^[A-Za-z0-9_./@+-]+$/.test(part)) throw new Error(`cannot build the forced command: unusual characters in path "${part}"`);
  }
  return `${nodePath} ${cliPath} worker-exec`;
}

/** Reads the host public key the worker reports at registration (e.g. /etc/ssh/ssh_host_ed25519_key.pub). */
export async function readHostKey(file: string): Promise<string> {
  const text = (await fs.readFile(file, 'utf8')).trim();
  if (!/^(ssh-ed25519|ecdsa-sha2-nistp\d+|ssh-rsa) [A-Za-z0-9+/=]+/.test(text)) throw new Error(`${file} does not hold an SSH public key`);
  return text.split(/\s+/).slice(0, 2).join(' ');
}

/**
 * Authorizes the control plane's key in the provisioning account's authorized_keys, restricted
 * (no shell, no forwarding, no pty) to the forced worker command. Other lines are kept.
 */
export async function authorizeProvisioningKey(file: string, publicKey: string, command: string): Promise<void> {
  const [type, blob] = publicKey.trim().split(/\s+/);
  if (!type || !blob || !/^[A-Za-z0-9+/=]+$/.test(blob) || !/^[a-z0-9-]+$/.test(type)) throw new Error('the control plane sent a malformed public key');
  const line = `restrict,command="${command}" ${type} ${blob} ${MARK}`;
  const existing = await fs.readFile(file, 'utf8').catch((error: NodeJS.ErrnoException) => {
    if (error.code === 'ENOENT') return '';
    throw error;
  });
  const kept = existing.split('\n').filter((entry) => entry.trim() !== '' && !entry.trimEnd().endsWith(` ${MARK}`));
  await fs.mkdir(path.dirname(file), { recursive: true, mode: 0o700 });
  const temporary = `${file}.${process.pid}.tmp`;
  await fs.writeFile(temporary, `${[...kept, line].join('\n')}\n`, { mode: 0o600 });
  await fs.rename(temporary, file);
}
