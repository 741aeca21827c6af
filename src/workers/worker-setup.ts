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
 * The authorized_keys line for the control plane's key: restricted (no shell, no forwarding, no
 * pty) to the forced worker command. Throws on anything that is not a plain OpenSSH public key.
 */
export function provisioningKeyLine(publicKey: string, command: string): string {
  return `restrict,command="${command}" ${plainPublicKey(publicKey)} ${MARK}`;
}

/** "type base64", without the comment; throws on anything that is not shaped like an OpenSSH public key. */
export function plainPublicKey(publicKey: string): string {
  const [type, blob] = publicKey.trim().split(/\s+/);
  if (!type || !blob || !/^[A-Za-z0-9+/=]+$/.test(blob) || !/^[a-z0-9-]+$/.test(type)) throw new Error('the control plane sent a malformed public key');
  return `${type} ${blob}`;
}

/** The file's lines with the managed line (the one ending in the mark) left out. */
export function unmanagedLines(existing: string): string[] {
  return existing.split('\n').filter((entry) => entry.trim() !== '' && !entry.trimEnd().endsWith(` ${MARK}`));
}

/**
 * Authorizes the control plane's key in the provisioning account's authorized_keys, restricted to
 * the forced worker command; other lines are kept. A file the agent may not write (the root-owned
 * one `dispatcher worker-setup --provisioning-key` writes, read by an agent running as its own
 * account) is fine when it already authorizes the key; otherwise the error says what to run.
 */
export async function authorizeProvisioningKey(file: string, publicKey: string, command: string): Promise<void> {
  const line = provisioningKeyLine(publicKey, command);
  const key = plainPublicKey(publicKey);
  const existing = await fs.readFile(file, 'utf8').catch((error: NodeJS.ErrnoException) => {
    if (error.code === 'ENOENT') return '';
    if (error.code === 'EACCES') throw new Error(`cannot read ${file} (EACCES): the agent's account must be able to read it and enter its directories`);
    throw error;
  });
  const lines = existing.split('\n').map((entry) => entry.trimEnd());
  if (lines.includes(line)) return;
  try {
    await fs.mkdir(path.dirname(file), { recursive: true, mode: 0o700 });
    const temporary = `${file}.${process.pid}.tmp`;
    await fs.writeFile(temporary, `${[...unmanagedLines(existing), line].join('\n')}\n`, { mode: 0o600 });
    await fs.rename(temporary, file);
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    if (code !== 'EACCES' && code !== 'EPERM') throw error;
    // Root's file may force its own path to the same program; what matters is that the key is there.
    if (lines.some((entry) => entry.startsWith('restrict,command="') && entry.endsWith(` ${key} ${MARK}`))) return;
    throw new Error(
      `cannot write ${file} (${code}), and the control plane's provisioning key is not in it yet. As root, run: ` +
        `dispatcher worker-setup --provisioning-key '${key}'`,
      { cause: error },
    );
  }
}
