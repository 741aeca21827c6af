import fs from 'node:fs/promises';
import net from 'node:net';
import ssh2, { type ServerHostKeyAlgorithm } from 'ssh2';
import type { Db } from '../db/database.js';
import { readOrCreateSetting } from '../db/settings.js';
import { formatWorkerCommand, type WorkerCommand } from './worker-commands.js';

// ssh2 is CommonJS: Node's ESM loader sees only its default export.
const { Client, utils } = ssh2;

/** The control plane's own SSH identity, the one key workers authorize for provisioning. */
export interface ProvisioningKey {
  privateKey: string;
  /** OpenSSH public key line, as it goes into a worker's authorized_keys. */
  publicKey: string;
}

/**
 * PROVISIONING_KEY_FILE when set (an OpenSSH private key); otherwise an Ed25519 key generated on
 * first start and kept in the database, so every instance and every restart uses the same one.
 */
export async function loadProvisioningKey(db: Db, keyFile: string | undefined): Promise<ProvisioningKey> {
  const privateKey = keyFile
    ? await fs.readFile(keyFile, 'utf8')
    : await readOrCreateSetting(db, 'provisioning_private_key', () => generateKeyPair('dispatcher-provisioning').private);
  const parsed = utils.parseKey(privateKey);
  if (parsed instanceof Error) throw new Error(`The provisioning key${keyFile ? ` in ${keyFile}` : ''} cannot be read: ${parsed.message}`);
  const key = Array.isArray(parsed) ? parsed[0] : parsed;
  if (!key?.isPrivateKey())
    throw new Error(`The provisioning key${keyFile ? ` in ${keyFile}` : ''} is not a private key (it may need a passphrase, which is not supported).`);
  return { privateKey, publicKey: `${key.type} ${key.getPublicSSH().toString('base64')} dispatcher-provisioning` };
}

/**
 * A new Ed25519 key pair in OpenSSH format. ssh2 cannot read back a small share of the keys it
 * generates ("Malformed OpenSSH private key"), so each is read back before it is used.
 */
export function generateKeyPair(comment: string): { private: string; public: string } {
  for (let attempt = 0; attempt < 20; attempt += 1) {
    const pair = utils.generateKeyPairSync('ed25519', { comment });
    if (!(utils.parseKey(pair.private) instanceof Error)) return pair;
  }
  throw new Error('could not generate a readable SSH key pair');
}

/**
 * Checks an OpenSSH public key line ("ssh-ed25519 AAAA… [comment]") and returns its canonical form
 * (type and key, no comment), or undefined when it is not a public key.
 */
export function canonicalHostKey(line: string): string | undefined {
  const parsed = utils.parseKey(line.trim());
  if (parsed instanceof Error) return undefined;
  const key = Array.isArray(parsed) ? parsed[0] : parsed;
  if (!key || key.isPrivateKey()) return undefined;
  return `${key.type} ${key.getPublicSSH().toString('base64')}`;
}

export interface WorkerTarget {
  host: string;
  port: number;
  username: string;
  /** The pinned host key, canonical form. */
  hostKey: string;
}

/**
 * The host key algorithms to offer when the pinned key is `hostKey`: only its own, so a server
 * holding several host keys (sshd has RSA, ECDSA and Ed25519 ones) presents the pinned one.
 */
export function hostKeyAlgorithms(hostKey: string): ServerHostKeyAlgorithm[] {
  const type = (hostKey.split(' ')[0] ?? '') as ServerHostKeyAlgorithm;
  return type === 'ssh-rsa' ? ['rsa-sha2-512', 'rsa-sha2-256', 'ssh-rsa'] : [type];
}

export type HostKeyProof = { ok: true } | { ok: false; detail: string };

/** One SSH session to a worker whose host key is pinned, as the two uses below drive it. */
interface PinnedSession<T> {
  client: InstanceType<typeof Client>;
  /** The pinned key's bytes, and the key the server presented (once it did). */
  pinned: Buffer;
  presented(): Buffer | undefined;
  /** Ends the session with `outcome`; only the first call counts. */
  finish(outcome: T): void;
}

/**
 * Connects to a worker offering only the pinned key's algorithm and accepting only that key,
 * byte for byte; `drive` attaches what the session does, and `finish` ends it once (on the
 * timeout with `late`). The one place that connects to workers.
 */
function pinnedSession<T>(
  target: Pick<WorkerTarget, 'host' | 'port' | 'hostKey'>,
  login: { username: string; privateKey?: string },
  timeoutMs: number,
  late: T,
  drive: (session: PinnedSession<T>) => void,
): Promise<T> {
  const pinned = Buffer.from(target.hostKey.split(' ')[1] ?? '', 'base64');
  return new Promise((resolve) => {
    const client = new Client();
    let presented: Buffer | undefined;
    let settled = false;
    const finish = (outcome: T) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      client.end();
      resolve(outcome);
    };
    const timer = setTimeout(() => finish(late), timeoutMs);
    drive({ client, pinned, presented: () => presented, finish });
    client.connect({
      host: target.host,
      port: target.port,
      ...login,
      readyTimeout: timeoutMs,
      algorithms: { serverHostKey: hostKeyAlgorithms(target.hostKey) },
      hostVerifier: (presentedKey: Buffer) => {
        presented = presentedKey;
        return presentedKey.equals(pinned);
      },
    });
  });
}

/**
 * The control plane's own SSH key exchange with host:port, stopped before authentication: proves
 * that whoever answers there holds the private half of `hostKey`. Presenting the public key is not
 * enough (anyone can copy it): the server must sign the exchange with it. ssh2 asks `hostVerifier`
 * about the presented key before it checks that signature, so a matching key lets the exchange go
 * on, and only its completion (the `handshake` event, after the signature was verified) proves it.
 */
export function proveHostKey(target: Pick<WorkerTarget, 'host' | 'port' | 'hostKey'>, timeoutMs: number): Promise<HostKeyProof> {
  const where = `${target.host}:${target.port}`;
  const late: HostKeyProof = { ok: false, detail: `no SSH key exchange with ${where} within ${timeoutMs} ms` };
  return pinnedSession<HostKeyProof>(target, { username: 'dispatcher-host-key-check' }, timeoutMs, late, ({ client, pinned, presented, finish }) => {
    client.on('handshake', () =>
      finish(presented()?.equals(pinned) ? { ok: true } : { ok: false, detail: `${where} did not present the registered host key` }),
    );
    client.on('error', (error) => {
      const key = presented();
      if (key === undefined) return finish({ ok: false, detail: `SSH to ${where} failed: ${error.message}` });
      if (!key.equals(pinned)) return finish({ ok: false, detail: `${where} presented another host key than the registered one` });
      finish({ ok: false, detail: `${where} presented the registered host key but did not prove it holds its private half: ${error.message}` });
    });
  });
}

export class HostKeyMismatchError extends Error {
  constructor(readonly presented: string) {
    super('the worker presented a host key that differs from the pinned one');
  }
}

/**
 * Runs one worker command over SSH as the provisioning account. The host key must be the pinned
 * one, byte for byte; the command line is built from validated parts only (worker-commands.ts).
 */
export async function runWorkerCommand(target: WorkerTarget, key: ProvisioningKey, command: WorkerCommand, timeoutMs: number): Promise<void> {
  const line = formatWorkerCommand(command);
  const late = new Error(`no answer from ${target.host}:${target.port} within ${timeoutMs} ms`);
  const login = { username: target.username, privateKey: key.privateKey };
  const failure = await pinnedSession<Error | undefined>(target, login, timeoutMs, late, ({ client, pinned, presented, finish }) => {
    client.on('error', (error) => {
      const shown = presented();
      if (shown && !shown.equals(pinned)) finish(new HostKeyMismatchError(`${target.hostKey.split(' ')[0]} ${shown.toString('base64')}`));
      else finish(new Error(`SSH to ${target.host}:${target.port} failed: ${error.message}`));
    });
    client.on('ready', () => {
      client.exec(line, (error, stream) => {
        if (error) return finish(new Error(`the worker refused the command: ${error.message}`));
        let output = '';
        const keep = (chunk: Buffer) => {
          if (output.length < 4096) output += chunk.toString('utf8');
        };
        stream.on('data', keep);
        stream.stderr.on('data', keep);
        stream.on('close', (code: number | null) =>
          finish(code === 0 ? undefined : new Error(`the worker answered exit code ${code ?? 'none'}: ${output.trim().slice(0, 500) || 'no output'}`)),
        );
      });
    });
  });
  if (failure) throw failure;
}

/** The active health probe: a TCP connection that must answer with an SSH banner in time. */
export function probeSshBanner(host: string, port: number, timeoutMs: number): Promise<{ ok: boolean; detail: string }> {
  return new Promise((resolve) => {
    const socket = net.connect({ host, port });
    let received = '';
    const done = (ok: boolean, detail: string) => {
      clearTimeout(timer);
      socket.destroy();
      resolve({ ok, detail });
    };
    const timer = setTimeout(() => done(false, `no SSH banner within ${timeoutMs} ms`), timeoutMs);
    socket.on('data', (chunk) => {
      received += chunk.toString('latin1');
      const newline = received.indexOf('\n');
      if (newline >= 0 || received.length > 255) {
        const banner = received.slice(0, newline >= 0 ? newline : 255).trim();
        done(banner.startsWith('SSH-2.0-') || banner.startsWith('SSH-1.99-'), banner.slice(0, 100));
      }
    });
    socket.on('error', (error) => done(false, error.message));
    socket.on('end', () => done(false, 'connection closed before the SSH banner'));
  });
}
